// Shared by the libFuzzer targets: what a decode of hostile bytes may do. It may succeed (and
// then the image must be consistent) or throw a Validation error; any other outcome (another
// error kind, a foreign exception, a sanitizer report, a hang) is a bug, and abort() makes
// libFuzzer save the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "decode.h"
#include "errors.h"
#include "image.h"

namespace openlookout_fuzz {

[[noreturn]] inline void fail(const char* what, const char* detail) {
  std::fprintf(stderr, "fuzz: %s: %s\n", what, detail);
  std::abort();
}

// Checks the invariants of a successful decode.
inline void check_image(const openlookout::RgbImage& image, const openlookout::DecodeLimits& limits) {
  if (image.width < 1 || image.height < 1 || image.width > limits.max_side ||
      image.height > limits.max_side)
    fail("decoded image outside the limits", "");
  if (image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3)
    fail("pixel buffer size does not match the dimensions", "");
  if (image.source_width < image.width || image.source_height < image.height)
    fail("source size smaller than the decoded size", "");
  // Read every byte, so an uninitialised or stale buffer shows up under the sanitizers and the
  // optimiser cannot drop the decode.
  unsigned sum = 0;
  for (uint8_t v : image.pixels) sum += v;
  volatile unsigned sink = sum;
  (void)sink;
}

// Runs fn; a Validation error is an accepted answer, anything else aborts.
template <typename Fn>
inline bool expect_ok_or_validation(Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const openlookout::Error& e) {
    if (e.kind() != openlookout::ErrorKind::Validation) fail("non-validation error", e.what());
    return false;
  } catch (const std::exception& e) {
    fail("foreign exception", e.what());
  } catch (...) {
    fail("unknown exception", "");
  }
}

}  // namespace openlookout_fuzz
