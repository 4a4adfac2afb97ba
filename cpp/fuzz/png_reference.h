// A plain libspng decode to compare Decoder::decode's PNG path with (differential fuzzing): the
// same strictness and limits the production decoder had when it was a thin libspng wrapper, so
// a faster PNG path must agree with it on every input, both on the pixels and on success or
// failure.
#pragma once

#include <spng.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_common.h"

namespace openlookout_fuzz {

// Returns true and fills `rgb` (width x height x 3) when libspng decodes `data` (to IEND) within
// the limits; false when it refuses it.
inline bool reference_png_decode(const uint8_t* data, size_t size, int max_side,
                                 std::vector<uint8_t>& rgb, uint32_t& width, uint32_t& height) {
  spng_ctx* ctx = spng_ctx_new(0);
  if (ctx == nullptr) fail("reference", "spng_ctx_new failed");
  struct Free {
    spng_ctx* c;
    ~Free() { spng_ctx_free(c); }
  } free_ctx{ctx};
  spng_ihdr ihdr{};
  size_t bytes = 0;
  if (spng_set_image_limits(ctx, max_side, max_side) ||
      spng_set_chunk_limits(ctx, size_t{16} << 20, size_t{64} << 20) ||
      spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR) ||
      spng_set_png_buffer(ctx, data, size) || spng_get_ihdr(ctx, &ihdr) ||
      spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &bytes))
    return false;
  rgb.resize(bytes);
  if (spng_decode_image(ctx, rgb.data(), bytes, SPNG_FMT_RGB8, 0) || spng_decode_chunks(ctx))
    return false;
  width = ihdr.width;
  height = ihdr.height;
  return true;
}

// The decoder under test must agree with the reference: same outcome, same pixels.
inline void compare_with_reference(const uint8_t* data, size_t size, bool decoded,
                                   const openlookout::RgbImage& image,
                                   const openlookout::DecodeLimits& limits) {
  std::vector<uint8_t> rgb;
  uint32_t width = 0, height = 0;
  bool ok = reference_png_decode(data, size, limits.max_side, rgb, width, height);
  // Sizes below min_side are the decoder's refusal, not the reference's.
  if (ok && (width < static_cast<uint32_t>(limits.min_side) ||
             height < static_cast<uint32_t>(limits.min_side)))
    ok = false;
  if (ok != decoded)
    fail("PNG decode disagrees with libspng",
         decoded ? "openlookout decoded an image libspng refuses"
                 : "openlookout refused an image libspng decodes");
  if (!ok) return;
  if (static_cast<uint32_t>(image.width) != width || static_cast<uint32_t>(image.height) != height)
    fail("PNG decode disagrees with libspng", "different dimensions");
  if (image.pixels.size() != rgb.size() ||
      std::memcmp(image.pixels.data(), rgb.data(), rgb.size()) != 0) {
    size_t i = 0;
    while (i < rgb.size() && image.pixels[i] == rgb[i]) ++i;
    const std::string where = "first difference at byte " + std::to_string(i) + " (pixel " +
                              std::to_string(i / 3 % width) + "," + std::to_string(i / 3 / width) +
                              ")";
    fail("PNG decode disagrees with libspng on the pixels", where.c_str());
  }
}

// Rewrites every chunk's CRC to match its contents (in place), so that mutated inputs get past
// the CRC check and reach the parsers behind it. Returns true when something changed.
inline bool fix_png_crcs(std::vector<uint8_t>& png) {
  bool changed = false;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t length = (uint32_t{png[at]} << 24) | (uint32_t{png[at + 1]} << 16) |
                            (uint32_t{png[at + 2]} << 8) | uint32_t{png[at + 3]};
    if (length > png.size() - at - 12) break;
    const uint32_t crc = static_cast<uint32_t>(crc32(0, png.data() + at + 4, length + 4));
    uint8_t* stored = png.data() + at + 8 + length;
    const uint8_t want[4] = {static_cast<uint8_t>(crc >> 24), static_cast<uint8_t>(crc >> 16),
                             static_cast<uint8_t>(crc >> 8), static_cast<uint8_t>(crc)};
    if (std::memcmp(stored, want, 4) != 0) {
      std::memcpy(stored, want, 4);
      changed = true;
    }
    at += 12 + length;
  }
  return changed;
}

}  // namespace openlookout_fuzz
