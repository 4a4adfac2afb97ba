// Stage 5: label map -> AnomalyMask PNG (8-bit RGB, IHDR + IDAT + IEND).
//
// Masks are flat colours on white, so the scanlines are filtered to be almost all zeros before
// deflate sees them: a row whose labels repeat the row above uses filter Up (all zeros), any other
// row uses filter Sub (zeros inside every run of one colour, a colour difference where the label
// changes). The filtered buffer is written as zeros first and then patched at label changes only,
// so the per-pixel work is a label comparison. libdeflate compresses the whole buffer in one call.

#include "mask_png.h"

#include <libdeflate.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "errors.h"

namespace openlookout {
namespace {

// Measured on mask-like data (1024^2 .. 4096^2, a few blobs): libdeflate 1.14 level 1 is the
// slowest on long zero runs (about 2x level 2); levels 2..7 take the same time and differ in
// size by under 1%. Level 2 it is.
constexpr int kCompressionLevel = 2;

constexpr uint8_t kPngSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
constexpr size_t kIhdrDataSize = 13;
constexpr size_t kChunkOverhead = 12;  // length, type, CRC
// PNG caps a chunk's length at 2^31 - 1 bytes.
constexpr size_t kMaxChunkData = 0x7fffffff;
constexpr size_t kRgbBytes = 3;
enum PngFilter : uint8_t { kFilterSub = 1, kFilterUp = 2 };

void put_u32_be(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// Writes one chunk at `p` (length, type, data, CRC-32 over type and data); returns its end.
uint8_t* write_chunk(uint8_t* p, const char (&type)[5], const uint8_t* data, size_t size) {
  put_u32_be(p, static_cast<uint32_t>(size));
  std::memcpy(p + 4, type, 4);
  if (size > 0) std::memcpy(p + 8, data, size);
  const uint32_t crc = libdeflate_crc32(0, p + 4, size + 4);
  put_u32_be(p + 8 + size, crc);
  return p + kChunkOverhead + size;
}

libdeflate_compressor* compressor_of(MaskEncoderScratch& scratch) {
  if (scratch.compressor == nullptr) {
    scratch.compressor = libdeflate_alloc_compressor(kCompressionLevel);
    if (scratch.compressor == nullptr) throw_internal("mask encoder: out of memory (libdeflate)");
  }
  return static_cast<libdeflate_compressor*>(scratch.compressor);
}

// Filtered scanlines: per row one filter byte and 3 * width bytes.
void filter_scanlines(const uint8_t* labels, size_t width, size_t height, const Rgb* palette,
                      size_t palette_size, uint8_t* filtered) {
  const size_t row_bytes = 1 + kRgbBytes * width;
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* row_labels = labels + y * width;
    uint8_t* out = filtered + y * row_bytes;
    if (y > 0 && std::memcmp(row_labels, row_labels - width, width) == 0) {
      out[0] = kFilterUp;
      std::memset(out + 1, 0, row_bytes - 1);
      continue;
    }
    // Only rows that differ from the one above need their labels checked: a repeated row was
    // checked as the row it repeats.
    uint8_t row_max = 0;
    for (size_t x = 0; x < width; ++x) row_max = std::max(row_max, row_labels[x]);
    if (row_max >= palette_size) {
      throw_internal("mask encoder: label " + std::to_string(row_max) + " has no colour (palette of " +
                     std::to_string(palette_size) + ")");
    }
    out[0] = kFilterSub;
    std::memset(out + 1, 0, row_bytes - 1);
    // Sub: each byte minus the byte one pixel to the left (0 left of the first pixel).
    const Rgb& first = palette[row_labels[0]];
    out[1] = first[0];
    out[2] = first[1];
    out[3] = first[2];
    for (size_t x = 1; x < width; ++x) {
      if (row_labels[x] == row_labels[x - 1]) continue;
      const Rgb& colour = palette[row_labels[x]];
      const Rgb& left = palette[row_labels[x - 1]];
      uint8_t* p = out + 1 + kRgbBytes * x;
      p[0] = static_cast<uint8_t>(colour[0] - left[0]);
      p[1] = static_cast<uint8_t>(colour[1] - left[1]);
      p[2] = static_cast<uint8_t>(colour[2] - left[2]);
    }
  }
}

}  // namespace

MaskEncoderScratch::~MaskEncoderScratch() {
  if (compressor != nullptr) libdeflate_free_compressor(static_cast<libdeflate_compressor*>(compressor));
}

void encode_mask_png(const uint8_t* labels, int width, int height, const Rgb* palette,
                     size_t palette_size, MaskEncoderScratch& scratch, std::vector<uint8_t>& out) {
  if (width < 1 || height < 1) throw_internal("mask encoder: empty mask");
  if (labels == nullptr || palette == nullptr || palette_size == 0)
    throw_internal("mask encoder: no labels or no palette");

  const size_t w = static_cast<size_t>(width);
  const size_t h = static_cast<size_t>(height);
  const size_t filtered_size = (1 + kRgbBytes * w) * h;
  scratch.filtered.resize(filtered_size);
  filter_scanlines(labels, w, h, palette, palette_size, scratch.filtered.data());

  // Flat masks deflate to a tiny fraction of their size, so the first attempt gets a modest
  // buffer rather than libdeflate's worst-case bound (which is the size of the 3-byte-per-pixel
  // input: 50 MB at 4096 x 4096); only a mask that does not fit is compressed again into a
  // bound-sized buffer. The buffer only grows, so steady state allocates nothing.
  libdeflate_compressor* compressor = compressor_of(scratch);
  const size_t bound = libdeflate_zlib_compress_bound(compressor, filtered_size);
  const size_t first_attempt = std::min(bound, filtered_size / 8 + 4096);
  if (scratch.deflated.size() < first_attempt) scratch.deflated.resize(first_attempt);
  size_t deflated_size = libdeflate_zlib_compress(compressor, scratch.filtered.data(), filtered_size,
                                                  scratch.deflated.data(), scratch.deflated.size());
  if (deflated_size == 0) {
    scratch.deflated.resize(bound);
    deflated_size = libdeflate_zlib_compress(compressor, scratch.filtered.data(), filtered_size,
                                             scratch.deflated.data(), scratch.deflated.size());
    if (deflated_size == 0) throw_internal("mask encoder: deflate failed");
  }

  const size_t idat_chunks = (deflated_size + kMaxChunkData - 1) / kMaxChunkData;
  const size_t png_size = sizeof kPngSignature + (kChunkOverhead + kIhdrDataSize) +
                          (kChunkOverhead * idat_chunks + deflated_size) + kChunkOverhead;
  out.resize(png_size);
  uint8_t* p = out.data();
  std::memcpy(p, kPngSignature, sizeof kPngSignature);
  p += sizeof kPngSignature;

  uint8_t ihdr[kIhdrDataSize];
  put_u32_be(ihdr, static_cast<uint32_t>(width));
  put_u32_be(ihdr + 4, static_cast<uint32_t>(height));
  ihdr[8] = 8;   // bit depth
  ihdr[9] = 2;   // colour type: truecolour RGB
  ihdr[10] = 0;  // compression: deflate
  ihdr[11] = 0;  // filter method: adaptive (per-row filter byte)
  ihdr[12] = 0;  // no interlace
  p = write_chunk(p, "IHDR", ihdr, sizeof ihdr);

  for (size_t offset = 0; offset < deflated_size; offset += kMaxChunkData) {
    const size_t size = std::min(kMaxChunkData, deflated_size - offset);
    p = write_chunk(p, "IDAT", scratch.deflated.data() + offset, size);
  }
  p = write_chunk(p, "IEND", nullptr, 0);
}

}  // namespace openlookout
