// Private to the decode stage: the per-format decoders behind Decoder::decode, and the pieces of
// them that the tests check on their own. Not part of the core's interface.
#pragma once

#include <turbojpeg.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "decode.h"
#include "image.h"

namespace openlookout {
namespace detail {

// JPEG through TurboJPEG. Owns the decompressor handle (created on first use) and the scratch
// buffer CMYK/YCCK images are decoded into before they are converted to RGB, so decoding images
// of one size again allocates nothing of ours.
class JpegDecoder {
 public:
  JpegDecoder() = default;
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // `data` must start with the JPEG signature (Decoder::decode checks it).
  void decode(const uint8_t* data, size_t size, const DecodeLimits& limits, RgbImage& out,
              JpegScaling scaling = {});

 private:
  tjhandle handle();
  // Throws a Validation error with TurboJPEG's message and drops the handle (see why there).
  [[noreturn]] void throw_corrupt();

  tjhandle handle_ = nullptr;
  std::vector<uint8_t> cmyk_scratch_;
};

// PNG through libspng; `data` must start with the PNG signature. libspng keeps no state worth
// reusing between images, so this is a plain function.
void decode_png(const uint8_t* data, size_t size, const DecodeLimits& limits, RgbImage& out);

// Converts packed CMYK as a JPEG stores it to RGB exactly as Pillow does: Pillow always reads a
// 4-component JPEG with Adobe's inverted polarity ("CMYK;I"), then converts CMYK to RGB with
// r = (255 - k) - (c * (255 - k)) / 255, rounded its own way (see the definition).
void inverted_cmyk_to_rgb(const uint8_t* cmyk, size_t pixel_count, uint8_t* rgb);

}  // namespace detail
}  // namespace openlookout
