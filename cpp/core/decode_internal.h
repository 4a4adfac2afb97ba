// Private to the decode stage: the per-format decoders behind Decoder::decode, and the pieces of
// them that the tests check on their own. Not part of the core's interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "decode.h"
#include "image.h"

struct libdeflate_decompressor;

namespace openlookout {
namespace detail {

// JPEG through libjpeg-turbo's libjpeg API (decode_jpeg.cpp). Owns the decompressor (created on
// first use and reused) and the arena its memory comes from (jpeg_memory.h), so decoding images
// of a size seen before allocates nothing. Not thread-safe.
struct JpegSession;

class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // `data` must start with the JPEG signature (Decoder::decode checks it).
  void decode(const uint8_t* data, size_t size, const DecodeLimits& limits, RgbImage& out,
              JpegScaling scaling = {});

  // Blocks the decompressor's arena has taken from the system so far (tests: a warm decoder
  // must take none).
  uint64_t arena_blocks_allocated() const;

 private:
  JpegSession& session();

  std::unique_ptr<JpegSession> session_;
};

// PNG. The common layouts (8-bit grey, grey+alpha, RGB, RGBA and palette, not interlaced) take a
// fast path (png_fast.cpp): chunks walked and CRC-checked here, the whole zlib stream inflated at
// once with libdeflate, scanlines unfiltered straight into the output. Everything else, and every
// file the fast path cannot verify from end to end, goes to libspng, which then alone decides
// between an image and an error: the fast path never rejects a file, so which files decode, their
// pixels and the error messages are libspng's (see png_fast.cpp for the one documented exception).
// Owns the scratch the fast path needs (inflated scanlines, joined IDAT data, the libdeflate
// decompressor), so decoding images of one size again allocates nothing. Not thread-safe.
class PngDecoder {
 public:
  PngDecoder() = default;
  ~PngDecoder();
  PngDecoder(const PngDecoder&) = delete;
  PngDecoder& operator=(const PngDecoder&) = delete;

  // `data` must start with the PNG signature (Decoder::decode checks it).
  void decode(const uint8_t* data, size_t size, const DecodeLimits& limits, RgbImage& out);

  // What the fast path did with one file: decoded it into `out`, or declined it, naming why
  // (a static string), leaving `out` in an unspecified state for libspng to overwrite.
  struct FastResult {
    bool decoded = false;
    const char* declined_because = nullptr;
  };
  // The fast path alone (tests and diagnostics). Throws only check_dimensions' error, which
  // libspng's path reports identically for the same header.
  FastResult decode_fast(const uint8_t* data, size_t size, const DecodeLimits& limits,
                         RgbImage& out);

  // Tests: unfilter with the portable scalar kernels instead of the SIMD ones.
  void use_scalar_kernels_for_testing(bool scalar) { scalar_kernels_ = scalar; }

 private:
  // Grows without zero-filling (std::vector::resize would clear every newly used byte on each
  // switch to a larger image).
  class Scratch {
   public:
    uint8_t* reserve(size_t bytes);

   private:
    std::unique_ptr<uint8_t[]> bytes_;
    size_t capacity_ = 0;
  };

  libdeflate_decompressor* inflater();

  libdeflate_decompressor* inflater_ = nullptr;
  Scratch joined_idat_;  // the IDAT payloads end to end, when there are several
  Scratch scanlines_;    // the inflated stream: per row, a filter byte and the filtered samples
  Scratch zero_row_;     // the row "above" the first one
  bool scalar_kernels_ = false;
};

// libspng alone, whatever the layout: the fast path's fallback, and the tests' reference.
void decode_png_with_libspng(const uint8_t* data, size_t size, const DecodeLimits& limits,
                             RgbImage& out);

// Converts packed CMYK as a JPEG stores it to RGB exactly as Pillow does: Pillow always reads a
// 4-component JPEG with Adobe's inverted polarity ("CMYK;I"), then converts CMYK to RGB with
// r = (255 - k) - (c * (255 - k)) / 255, rounded its own way (see the definition).
void inverted_cmyk_to_rgb(const uint8_t* cmyk, size_t pixel_count, uint8_t* rgb);

}  // namespace detail
}  // namespace openlookout
