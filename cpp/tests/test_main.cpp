#include <cstdio>
#include <cstring>

#include "check.h"

// Usage: core_tests [substring]   runs the cases whose name contains substring (all by default).
int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : "";
  int run = 0, failed_cases = 0;
  for (const auto& c : olt::registry()) {
    if (std::strstr(c.name, filter) == nullptr) continue;
    int before = olt::failures();
    try {
      c.fn();
    } catch (const std::exception& e) {
      olt::fail(c.name, 0, std::string("uncaught exception: ") + e.what());
    }
    bool ok = olt::failures() == before;
    failed_cases += ok ? 0 : 1;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", c.name);
    ++run;
  }
  std::printf("%d passed, %d failed\n", run - failed_cases, failed_cases);
  return olt::failures() == 0 ? 0 : 1;
}
