// A minimal test harness for the C++ core: TEST(name) registers a case, CHECK/CHECK_EQ/
// CHECK_THROWS_KIND report failures without stopping the run, main() returns non-zero on any
// failure. Kept tiny on purpose: the core is tested without Python, and under sanitizers.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "../core/errors.h"

namespace olt {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& failures() {
  static int n = 0;
  return n;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  ++failures();
}

}  // namespace olt

#define OLT_CAT2(a, b) a##b
#define OLT_CAT(a, b) OLT_CAT2(a, b)
#define TEST(name)                                                      \
  static void name();                                                   \
  static ::olt::Register OLT_CAT(olt_register_, name)(#name, &name);    \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) ::olt::fail(__FILE__, __LINE__, #cond); } while (0)

#define CHECK_EQ(a, b)                                                                        \
  do {                                                                                        \
    auto olt_a = (a);                                                                         \
    auto olt_b = (b);                                                                         \
    if (!(olt_a == olt_b))                                                                    \
      ::olt::fail(__FILE__, __LINE__, std::string(#a " == " #b " (") + std::to_string(olt_a) + \
                                          " vs " + std::to_string(olt_b) + ")");              \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                 \
  do {                                                                                        \
    double olt_a = (a), olt_b = (b);                                                          \
    if (!(std::fabs(olt_a - olt_b) <= (tol)))                                                 \
      ::olt::fail(__FILE__, __LINE__, std::string(#a " ~= " #b " (") + std::to_string(olt_a) + \
                                          " vs " + std::to_string(olt_b) + ")");              \
  } while (0)

// Checks that `expr` throws openlookout::Error of `expected_kind`.
#define CHECK_THROWS_KIND(expr, expected_kind)                                                \
  do {                                                                                        \
    bool olt_thrown = false;                                                                  \
    try {                                                                                     \
      (void)(expr);                                                                           \
    } catch (const ::openlookout::Error& olt_e) {                                             \
      olt_thrown = true;                                                                      \
      if (olt_e.kind() != (expected_kind))                                                    \
        ::olt::fail(__FILE__, __LINE__, std::string(#expr " threw the wrong kind: ") +        \
                                            olt_e.what());                                    \
    } catch (const std::exception& olt_e) {                                                   \
      olt_thrown = true;                                                                      \
      ::olt::fail(__FILE__, __LINE__, std::string(#expr " threw a non-core error: ") +        \
                                          olt_e.what());                                      \
    }                                                                                         \
    if (!olt_thrown) ::olt::fail(__FILE__, __LINE__, #expr " did not throw");                 \
  } while (0)
