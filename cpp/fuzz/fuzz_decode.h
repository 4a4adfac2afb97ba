// The body of fuzz_jpeg and fuzz_png: Decoder::decode of one format, as the pipeline calls it
// (one Decoder reused across inputs, like a worker's), with small images allowed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fuzz_common.h"

namespace openlookout_fuzz {

inline int fuzz_decode(const uint8_t* data, size_t size, openlookout::ImageFormat format) {
  using namespace openlookout;
  static Decoder decoder;  // reused, as a worker reuses its decoder across requests
  static RgbImage image;
  DecodeLimits limits;
  limits.min_side = 1;
  limits.max_side = 4096;
  if (expect_ok_or_validation([&] { decoder.decode(data, size, format, limits, image); })) {
    check_image(image, limits);
    if (format == ImageFormat::Jpeg && image.width >= 16 && image.height >= 16) {
      // The opt-in DCT-scaled decode of the same bytes: a different libjpeg path (and our
      // scaling pick). Both decodes read the same stream, so the second must not fail.
      const JpegScaling scaling{image.width / 4 > 0 ? image.width / 4 : 1,
                                image.height / 4 > 0 ? image.height / 4 : 1};
      const int full_width = image.width, full_height = image.height;
      if (!expect_ok_or_validation(
              [&] { decoder.decode(data, size, format, limits, image, scaling); }))
        fail("scaled decode failed where the full decode succeeded", "");
      check_image(image, limits);
      if (image.source_width != full_width || image.source_height != full_height)
        fail("scaled decode reports a different source size", "");
    }
  } else if (!image.pixels.empty() || image.width != 0 || image.height != 0) {
    fail("a failed decode left an image behind", "");
  }
  return 0;
}

}  // namespace openlookout_fuzz
