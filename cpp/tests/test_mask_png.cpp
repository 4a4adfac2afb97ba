// Tests of stage 5: the AnomalyMask PNG. Every mask is decoded with libspng (an independent
// decoder that verifies CRCs and the zlib stream) and compared pixel by pixel with the palette;
// the chunk sequence is walked by hand to check that nothing but IHDR, IDAT and IEND is written.

#include <spng.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../core/mask_png.h"
#include "check.h"

using namespace openlookout;

namespace {

uint32_t read_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Walks the chunks; returns their types in order ("" entries never occur; a malformed file
// yields a "malformed" entry and stops).
std::vector<std::string> chunk_types(const std::vector<uint8_t>& png) {
  std::vector<std::string> types;
  static const uint8_t signature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (png.size() < 8 || std::memcmp(png.data(), signature, 8) != 0) return {"malformed"};
  size_t at = 8;
  while (at < png.size()) {
    if (png.size() - at < 12) return {"malformed"};
    const size_t length = read_u32_be(&png[at]);
    if (png.size() - at - 12 < length) return {"malformed"};
    types.emplace_back(reinterpret_cast<const char*>(&png[at + 4]), 4);
    at += 12 + length;
  }
  return types;
}

struct Decoded {
  bool ok = false;
  std::string error;
  spng_ihdr ihdr{};
  std::vector<uint8_t> rgb;
};

Decoded decode(const std::vector<uint8_t>& png) {
  Decoded d;
  spng_ctx* ctx = spng_ctx_new(0);
  auto fail = [&](const char* where, int rc) {
    d.error = std::string(where) + ": " + spng_strerror(rc);
    spng_ctx_free(ctx);
    return d;
  };
  // Critical-chunk and ancillary CRC errors are errors (the defaults, set explicitly).
  int rc = spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR);
  if (rc) return fail("spng_set_crc_action", rc);
  rc = spng_set_png_buffer(ctx, png.data(), png.size());
  if (rc) return fail("spng_set_png_buffer", rc);
  rc = spng_get_ihdr(ctx, &d.ihdr);
  if (rc) return fail("spng_get_ihdr", rc);
  size_t size = 0;
  rc = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size);
  if (rc) return fail("spng_decoded_image_size", rc);
  d.rgb.resize(size);
  rc = spng_decode_image(ctx, d.rgb.data(), size, SPNG_FMT_RGB8, 0);
  if (rc) return fail("spng_decode_image", rc);
  spng_ctx_free(ctx);
  d.ok = true;
  return d;
}

const Rgb kPalette[] = {{255, 255, 255}, {0x23, 0xA4, 0x36}, {0x7E, 0xD3, 0x21},
                        {0x4D, 0xD8, 0xFF}, {0x00, 0x00, 0x00}};
constexpr size_t kPaletteSize = sizeof kPalette / sizeof kPalette[0];

// Encodes, decodes and checks everything a client could see. Returns the PNG.
std::vector<uint8_t> check_mask(const std::vector<uint8_t>& labels, int width, int height,
                                const Rgb* palette, size_t palette_size,
                                MaskEncoderScratch& scratch, const std::string& what) {
  std::vector<uint8_t> png;
  encode_mask_png(labels.data(), width, height, palette, palette_size, scratch, png);

  const std::vector<std::string> types = chunk_types(png);
  bool sequence_ok = types.size() >= 3 && types.front() == "IHDR" && types.back() == "IEND";
  for (size_t i = 1; sequence_ok && i + 1 < types.size(); ++i) sequence_ok = types[i] == "IDAT";
  if (!sequence_ok) ::olt::fail(__FILE__, __LINE__, what + ": chunks are not IHDR IDAT... IEND");

  const Decoded d = decode(png);
  if (!d.ok) {
    ::olt::fail(__FILE__, __LINE__, what + ": libspng: " + d.error);
    return png;
  }
  CHECK_EQ(d.ihdr.width, static_cast<uint32_t>(width));
  CHECK_EQ(d.ihdr.height, static_cast<uint32_t>(height));
  CHECK_EQ(d.ihdr.bit_depth, 8);
  CHECK_EQ(d.ihdr.color_type, SPNG_COLOR_TYPE_TRUECOLOR);
  CHECK_EQ(d.ihdr.compression_method, 0);
  CHECK_EQ(d.ihdr.filter_method, 0);
  CHECK_EQ(d.ihdr.interlace_method, SPNG_INTERLACE_NONE);
  CHECK_EQ(d.rgb.size(), labels.size() * 3);
  size_t wrong = 0;
  for (size_t i = 0; i < labels.size() && i * 3 + 2 < d.rgb.size(); ++i) {
    const Rgb& c = palette[labels[i]];
    if (d.rgb[3 * i] != c[0] || d.rgb[3 * i + 1] != c[1] || d.rgb[3 * i + 2] != c[2]) ++wrong;
  }
  if (wrong != 0) ::olt::fail(__FILE__, __LINE__, what + ": " + std::to_string(wrong) + " pixels differ");
  return png;
}

std::vector<uint8_t> random_labels(size_t n, size_t palette_size, std::mt19937& rng) {
  std::uniform_int_distribution<int> label(0, static_cast<int>(palette_size) - 1);
  std::vector<uint8_t> labels(n);
  for (uint8_t& l : labels) l = static_cast<uint8_t>(label(rng));
  return labels;
}

// A few irregular blobs of labels 1 and 2 on background: what a real mask looks like.
std::vector<uint8_t> blob_labels(int width, int height) {
  std::vector<uint8_t> labels(static_cast<size_t>(width) * height, 0);
  struct Blob {
    double cx, cy, r;
    uint8_t label;
  };
  const Blob blobs[] = {{0.3, 0.3, 0.08, 1}, {0.7, 0.4, 0.05, 2}, {0.5, 0.75, 0.1, 1},
                        {0.2, 0.8, 0.03, 2}, {0.8, 0.8, 0.04, 1}};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (const Blob& b : blobs) {
        const double dx = x / static_cast<double>(width) - b.cx;
        const double dy = y / static_cast<double>(height) - b.cy;
        const double r = b.r * (1 + 0.15 * std::sin(7 * std::atan2(dy, dx)));
        if (dx * dx + dy * dy < r * r) labels[static_cast<size_t>(y) * width + x] = b.label;
      }
    }
  }
  return labels;
}

}  // namespace

TEST(mask_png_tiny_and_thin_sizes) {
  MaskEncoderScratch scratch;
  std::mt19937 rng(11);
  check_mask({0}, 1, 1, kPalette, kPaletteSize, scratch, "1x1 background");
  check_mask({3}, 1, 1, kPalette, kPaletteSize, scratch, "1x1 label");
  for (int n : {2, 3, 17, 1000}) {
    const std::vector<uint8_t> labels = random_labels(static_cast<size_t>(n), kPaletteSize, rng);
    check_mask(labels, 1, n, kPalette, kPaletteSize, scratch, "1x" + std::to_string(n));
    check_mask(labels, n, 1, kPalette, kPaletteSize, scratch, std::to_string(n) + "x1");
  }
}

TEST(mask_png_odd_sizes_random_labels) {
  MaskEncoderScratch scratch;  // shared across sizes, growing and shrinking
  std::mt19937 rng(12);
  const int sizes[][2] = {{17, 13}, {333, 7}, {5, 211}, {101, 77}, {2, 2}, {64, 63}};
  for (const auto& s : sizes) {
    const std::vector<uint8_t> labels =
        random_labels(static_cast<size_t>(s[0]) * s[1], kPaletteSize, rng);
    check_mask(labels, s[0], s[1], kPalette, kPaletteSize, scratch,
               std::to_string(s[0]) + "x" + std::to_string(s[1]) + " random");
  }
}

TEST(mask_png_all_background_and_only_background_palette) {
  MaskEncoderScratch scratch;
  const std::vector<uint8_t> background(64 * 48, 0);
  const std::vector<uint8_t> png =
      check_mask(background, 64, 48, kPalette, kPaletteSize, scratch, "64x48 background");
  CHECK(png.size() < 200);
  const Rgb white[1] = {{255, 255, 255}};
  check_mask(background, 64, 48, white, 1, scratch, "64x48 background, palette of 1");
}

TEST(mask_png_filters_are_up_for_repeated_rows_and_sub_otherwise) {
  // Rows: 0 background, 1 same (Up), 2 a run of label 1 (Sub), 3 same (Up), 4 background (Sub).
  const int width = 9, height = 5;
  std::vector<uint8_t> labels(width * height, 0);
  for (int y = 2; y <= 3; ++y)
    for (int x = 3; x < 6; ++x) labels[y * width + x] = 1;
  MaskEncoderScratch scratch;
  check_mask(labels, width, height, kPalette, kPaletteSize, scratch, "filters");
  const size_t row_bytes = 1 + 3 * width;
  CHECK_EQ(scratch.filtered.size(), row_bytes * height);
  const uint8_t expected_filters[] = {1, 2, 1, 2, 1};
  for (int y = 0; y < height; ++y) CHECK_EQ(scratch.filtered[y * row_bytes], expected_filters[y]);
  // Up rows are all zeros; Sub rows are zero inside runs of one colour.
  for (size_t i = 1; i < row_bytes; ++i) CHECK_EQ(scratch.filtered[row_bytes + i], 0);
  size_t nonzero_in_row2 = 0;
  for (size_t i = 1; i < row_bytes; ++i) nonzero_in_row2 += scratch.filtered[2 * row_bytes + i] != 0;
  CHECK(nonzero_in_row2 <= 9);  // first pixel and the two colour changes
}

TEST(mask_png_blobs_and_size_budget) {
  MaskEncoderScratch scratch;
  for (int s : {300, 1024}) {
    const std::vector<uint8_t> labels = blob_labels(s + 1, s);
    const std::vector<uint8_t> png =
        check_mask(labels, s + 1, s, kPalette, kPaletteSize, scratch, "blobs " + std::to_string(s));
    CHECK(png.size() < 64 * 1024);
  }
  // The largest image L4V takes: far below AnomalyMask's 5,242,880-byte limit.
  const std::vector<uint8_t> labels = blob_labels(4096, 4096);
  const std::vector<uint8_t> png =
      check_mask(labels, 4096, 4096, kPalette, kPaletteSize, scratch, "blobs 4096");
  CHECK(png.size() < 5242880 / 10);
}

TEST(mask_png_incompressible_mask_takes_the_retry_path) {
  // 200 random colours on random labels: deflate cannot reach 1/8 of the filtered size, so the
  // first, small output buffer is too small and the encoder must retry with the full bound.
  std::mt19937 rng(13);
  std::vector<Rgb> palette(200);
  for (Rgb& c : palette)
    for (uint8_t& v : c) v = static_cast<uint8_t>(rng());
  const int width = 257, height = 129;
  const std::vector<uint8_t> labels = random_labels(static_cast<size_t>(width) * height, palette.size(), rng);
  MaskEncoderScratch scratch;
  check_mask(labels, width, height, palette.data(), palette.size(), scratch, "incompressible");
  CHECK(scratch.deflated.size() > scratch.filtered.size() / 8 + 4096);
}

TEST(mask_png_rejects_labels_outside_the_palette) {
  MaskEncoderScratch scratch;
  std::vector<uint8_t> png;
  std::vector<uint8_t> labels(10 * 4, 0);
  labels[5] = 3;  // first row
  CHECK_THROWS_KIND(encode_mask_png(labels.data(), 10, 4, kPalette, 3, scratch, png),
                    ErrorKind::InternalServer);
  labels[5] = 0;
  labels[37] = 255;  // last row
  CHECK_THROWS_KIND(encode_mask_png(labels.data(), 10, 4, kPalette, 3, scratch, png),
                    ErrorKind::InternalServer);
  labels[37] = 2;  // the largest valid label
  encode_mask_png(labels.data(), 10, 4, kPalette, 3, scratch, png);
  CHECK(!png.empty());
  CHECK_THROWS_KIND(encode_mask_png(labels.data(), 0, 4, kPalette, 3, scratch, png),
                    ErrorKind::InternalServer);
  CHECK_THROWS_KIND(encode_mask_png(labels.data(), 10, 4, kPalette, 0, scratch, png),
                    ErrorKind::InternalServer);
}

TEST(mask_png_steady_state_reuses_buffers) {
  const std::vector<uint8_t> labels = blob_labels(640, 480);
  MaskEncoderScratch scratch;
  std::vector<uint8_t> png;
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png);
  const std::vector<uint8_t> first = png;
  const uint8_t* filtered = scratch.filtered.data();
  const uint8_t* deflated = scratch.deflated.data();
  const void* compressor = scratch.compressor;
  const uint8_t* out = png.data();
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png);
  CHECK(scratch.filtered.data() == filtered);
  CHECK(scratch.deflated.data() == deflated);
  CHECK(scratch.compressor == compressor);
  CHECK(png.data() == out);
  CHECK(png == first);  // deterministic; `out` overwritten, not appended to
}
