// Stage 1: encoded bytes -> RgbImage. PNG through libspng, JPEG through libjpeg-turbo's libjpeg
// API. Every PNG colour type and bit depth and every JPEG colour space (baseline, progressive,
// grayscale, CMYK/YCCK) comes out as 8-bit RGB; alpha is dropped; EXIF orientation is ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "image.h"

namespace openlookout {

enum class ImageFormat { Png, Jpeg };

// "image/png" -> Png, "image/jpeg" -> Jpeg; anything else throws a Validation error.
ImageFormat parse_content_type(std::string_view content_type);

// What one image may cost, all checked before the work they bound is done. Defaults are
// documented in SECURITY.md; openlookout.load_model takes each one as a keyword.
struct DecodeLimits {
  // The header's dimensions, checked before any pixel buffer is allocated, and the body size.
  int min_side = 64;
  int max_side = 4096;
  size_t max_body_bytes = size_t{8} << 20;
  // PNG: a compressed ancillary chunk (zTXt, iCCP, compressed iTXt) may inflate to at most
  // png_max_chunk_bytes, and all the ancillary data the decoder keeps (text, ICC profile, EXIF,
  // stored or inflated) may take at most png_max_ancillary_bytes. A file over either is refused.
  // libspng's rules: png_max_chunk_bytes <= png_max_ancillary_bytes and < 2^31.
  size_t png_max_chunk_bytes = size_t{16} << 20;
  size_t png_max_ancillary_bytes = size_t{64} << 20;
  // JPEG, counted from the markers before decoding starts: at most jpeg_max_markers marker
  // segments, at most jpeg_max_scans scans, and at most jpeg_max_scan_pixels scans x pixels
  // (libjpeg decodes every progressive scan over the whole image, so a small file with many
  // cheap scans would otherwise cost seconds: the default is 100 full scans of 4096x4096).
  size_t jpeg_max_markers = 2048;
  size_t jpeg_max_scans = 500;
  uint64_t jpeg_max_scan_pixels = uint64_t{100} * 4096 * 4096;
};

// Opt-in speed-up for JPEG: libjpeg-turbo scales in the DCT domain (1/2, 1/4, 1/8), skipping
// most of the IDCT and colour work when the model input is much smaller than the image. The
// decoder picks the smallest scale whose output still covers min_width x min_height, so the
// resize after it still shrinks. Not exact: the pixels differ from a full decode followed by the
// resize (benchmarks/RESULTS.md measures by how much). 0 x 0: exact decode (the default).
struct JpegScaling {
  int min_width = 0;
  int min_height = 0;
};

// Per-worker decoder state (libjpeg decompressor and its arena, PNG scratch), reused across
// images. Not thread-safe: one per worker.
class Decoder {
 public:
  Decoder();
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Decodes `data` (which must be of `format`, checked by signature) into `out`. Throws a
  // Validation error naming what is wrong for empty, oversized, mismatched, corrupt or truncated
  // input and for dimensions outside `limits`.
  // out.source_width/height always hold the file's size.
  void decode(const uint8_t* data, size_t size, ImageFormat format, const DecodeLimits& limits,
              RgbImage& out, JpegScaling scaling = {});

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Checks dimensions against limits (shared by decoders and by raw RGB input).
void check_dimensions(int width, int height, const DecodeLimits& limits);

}  // namespace openlookout
