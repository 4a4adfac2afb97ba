// Tests of stage 5: the AnomalyMask PNG. Every mask is checked three independent ways:
//   * the chunk sequence is walked by hand (IHDR, IDAT..., IEND only) and every chunk's CRC-32 is
//     recomputed with zlib;
//   * the IDAT stream is inflated with zlib's uncompress2 (which verifies the Adler-32) and must
//     equal, byte for byte, the filtered scanlines computed here pixel by pixel (filter Up for a
//     row whose labels repeat the row above, Sub otherwise), so filter choices are checked too;
//   * libspng decodes the file with CRC errors as errors, and every pixel must be palette[label].
// The per-label pixel counts are compared with a plain histogram. Both encoder paths (runs and
// libdeflate) are exercised, by the automatic choice and by forcing each one.

#include <spng.h>
#include <zlib.h>

#include <algorithm>
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

constexpr size_t kL4vMaskLimit = 5242880;  // AnomalyMask's maximum size in bytes

uint32_t read_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

struct Chunks {
  std::vector<std::string> types;  // in order; {"malformed"} when the file cannot be walked
  std::vector<uint8_t> idat;       // all IDAT data, concatenated
  size_t bad_crcs = 0;
};

Chunks walk_chunks(const std::vector<uint8_t>& png) {
  Chunks c;
  static const uint8_t signature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (png.size() < 8 || std::memcmp(png.data(), signature, 8) != 0) return {{"malformed"}, {}, 0};
  size_t at = 8;
  while (at < png.size()) {
    if (png.size() - at < 12) return {{"malformed"}, {}, 0};
    const size_t length = read_u32_be(&png[at]);
    if (png.size() - at - 12 < length) return {{"malformed"}, {}, 0};
    const std::string type(reinterpret_cast<const char*>(&png[at + 4]), 4);
    c.types.push_back(type);
    const uLong crc = crc32(0, &png[at + 4], static_cast<uInt>(length + 4));
    if (crc != read_u32_be(&png[at + 8 + length])) ++c.bad_crcs;
    if (type == "IDAT") c.idat.insert(c.idat.end(), &png[at + 8], &png[at + 8 + length]);
    at += 12 + length;
  }
  return c;
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

// The filtered scanlines the encoder must produce, computed pixel by pixel from the colours.
std::vector<uint8_t> expected_scanlines(const std::vector<uint8_t>& labels, int width, int height,
                                        const Rgb* palette) {
  const size_t w = static_cast<size_t>(width);
  std::vector<uint8_t> lines;
  lines.reserve((1 + 3 * w) * static_cast<size_t>(height));
  for (size_t y = 0; y < static_cast<size_t>(height); ++y) {
    const uint8_t* row = &labels[y * w];
    const bool repeats = y > 0 && std::equal(row, row + w, row - w);
    lines.push_back(repeats ? 2 : 1);
    for (size_t x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        if (repeats) {
          lines.push_back(0);  // Up: colour minus the colour above, the same colour
        } else {
          const uint8_t left = x == 0 ? 0 : palette[row[x - 1]][c];
          lines.push_back(static_cast<uint8_t>(palette[row[x]][c] - left));
        }
      }
    }
  }
  return lines;
}

const Rgb kPalette[] = {{255, 255, 255}, {0x23, 0xA4, 0x36}, {0x7E, 0xD3, 0x21},
                        {0x4D, 0xD8, 0xFF}, {0x00, 0x00, 0x00}};
constexpr size_t kPaletteSize = sizeof kPalette / sizeof kPalette[0];

// Encodes with `encoding`, checks everything a client could see and the counts. Returns the PNG.
std::vector<uint8_t> check_mask(const std::vector<uint8_t>& labels, int width, int height,
                                const Rgb* palette, size_t palette_size,
                                MaskEncoderScratch& scratch, const std::string& what,
                                MaskEncoding encoding = MaskEncoding::Auto) {
  std::vector<uint8_t> png;
  std::vector<uint64_t> counts(palette_size, 12345);  // overwritten, not added to
  scratch.encoding = encoding;
  encode_mask_png(labels.data(), width, height, palette, palette_size, scratch, png, counts.data());
  if (encoding != MaskEncoding::Auto && scratch.used != encoding)
    ::olt::fail(__FILE__, __LINE__, what + ": the forced encoding was not used");

  const Chunks chunks = walk_chunks(png);
  bool sequence_ok =
      chunks.types.size() >= 3 && chunks.types.front() == "IHDR" && chunks.types.back() == "IEND";
  for (size_t i = 1; sequence_ok && i + 1 < chunks.types.size(); ++i)
    sequence_ok = chunks.types[i] == "IDAT";
  if (!sequence_ok) ::olt::fail(__FILE__, __LINE__, what + ": chunks are not IHDR IDAT... IEND");
  if (chunks.bad_crcs != 0) ::olt::fail(__FILE__, __LINE__, what + ": chunk CRC mismatch");

  // zlib: the whole IDAT stream is one zlib stream (Adler-32 checked) of exactly the expected
  // bytes, with nothing after it.
  const std::vector<uint8_t> expected = expected_scanlines(labels, width, height, palette);
  std::vector<uint8_t> inflated(expected.size() + 1);
  uLongf inflated_size = inflated.size();
  uLong consumed = chunks.idat.size();
  const int z = uncompress2(inflated.data(), &inflated_size, chunks.idat.data(), &consumed);
  if (z != Z_OK) {
    ::olt::fail(__FILE__, __LINE__, what + ": zlib uncompress2 returned " + std::to_string(z));
  } else {
    CHECK_EQ(consumed, static_cast<uLong>(chunks.idat.size()));
    CHECK_EQ(inflated_size, static_cast<uLongf>(expected.size()));
    if (inflated_size == expected.size() &&
        !std::equal(expected.begin(), expected.end(), inflated.begin())) {
      const size_t at = static_cast<size_t>(
          std::mismatch(expected.begin(), expected.end(), inflated.begin()).first - expected.begin());
      ::olt::fail(__FILE__, __LINE__, what + ": scanlines differ from byte " + std::to_string(at));
    }
  }

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

  std::vector<uint64_t> histogram(palette_size, 0);
  for (uint8_t l : labels) ++histogram[l];
  if (counts != histogram) ::olt::fail(__FILE__, __LINE__, what + ": label pixel counts differ");
  return png;
}

// Checks the map with the automatic choice and with each path forced.
void check_all_paths(const std::vector<uint8_t>& labels, int width, int height, const Rgb* palette,
                     size_t palette_size, MaskEncoderScratch& scratch, const std::string& what) {
  check_mask(labels, width, height, palette, palette_size, scratch, what + " (auto)");
  check_mask(labels, width, height, palette, palette_size, scratch, what + " (runs)",
             MaskEncoding::Runs);
  check_mask(labels, width, height, palette, palette_size, scratch, what + " (deflate)",
             MaskEncoding::Deflate);
}

std::vector<uint8_t> random_labels(size_t n, size_t palette_size, std::mt19937& rng) {
  std::uniform_int_distribution<int> label(0, static_cast<int>(palette_size) - 1);
  std::vector<uint8_t> labels(n);
  for (uint8_t& l : labels) l = static_cast<uint8_t>(label(rng));
  return labels;
}

// Random colours; some repeated or sharing components with another, so that colour differences
// have zero bytes (they join the zero runs around them) or vanish altogether.
std::vector<Rgb> random_palette(size_t size, std::mt19937& rng) {
  std::vector<Rgb> palette(size);
  palette[0] = {255, 255, 255};
  for (size_t k = 1; k < size; ++k) {
    for (uint8_t& v : palette[k]) v = static_cast<uint8_t>(rng());
    const unsigned twist = rng() % 8;
    const Rgb& other = palette[rng() % k];
    if (twist == 0) palette[k] = other;
    if (twist == 1) palette[k][0] = other[0];
    if (twist == 2) palette[k][0] = other[0], palette[k][1] = other[1];
    if (twist == 3) palette[k][2] = 0;
  }
  return palette;
}

// Rows made of runs of random labels and lengths (1 .. max_run), each row repeating the one
// above with probability `repeat`: mask-like structure at random, hitting every zero-run length.
std::vector<uint8_t> run_labels(int width, int height, size_t palette_size, int max_run,
                                double repeat, std::mt19937& rng) {
  const size_t w = static_cast<size_t>(width);
  std::vector<uint8_t> labels(w * static_cast<size_t>(height));
  std::uniform_int_distribution<int> label(0, static_cast<int>(palette_size) - 1);
  std::uniform_int_distribution<int> length(1, max_run);
  std::bernoulli_distribution repeats(repeat);
  for (size_t y = 0; y < static_cast<size_t>(height); ++y) {
    uint8_t* row = &labels[y * w];
    if (y > 0 && repeats(rng)) {
      std::copy(row - w, row, row);
      continue;
    }
    for (size_t x = 0; x < w;) {
      const size_t end = std::min(w, x + static_cast<size_t>(length(rng)));
      std::fill(row + x, row + end, static_cast<uint8_t>(label(rng)));
      x = end;
    }
  }
  return labels;
}

std::vector<uint8_t> checkerboard(int width, int height) {
  std::vector<uint8_t> labels(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) labels[static_cast<size_t>(y) * width + x] = (x + y) % 2;
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
  check_all_paths({0}, 1, 1, kPalette, kPaletteSize, scratch, "1x1 background");
  check_all_paths({3}, 1, 1, kPalette, kPaletteSize, scratch, "1x1 label");
  check_all_paths({4}, 1, 1, kPalette, kPaletteSize, scratch, "1x1 black (all-zero bytes)");
  for (int n : {2, 3, 17, 1000}) {
    const std::vector<uint8_t> labels = random_labels(static_cast<size_t>(n), kPaletteSize, rng);
    check_all_paths(labels, 1, n, kPalette, kPaletteSize, scratch, "1x" + std::to_string(n));
    check_all_paths(labels, n, 1, kPalette, kPaletteSize, scratch, std::to_string(n) + "x1");
  }
}

TEST(mask_png_odd_sizes_random_labels) {
  MaskEncoderScratch scratch;  // shared across sizes, growing and shrinking
  std::mt19937 rng(12);
  const int sizes[][2] = {{17, 13}, {333, 7}, {5, 211}, {101, 77}, {2, 2}, {64, 63}};
  for (const auto& s : sizes) {
    const std::vector<uint8_t> labels =
        random_labels(static_cast<size_t>(s[0]) * s[1], kPaletteSize, rng);
    check_all_paths(labels, s[0], s[1], kPalette, kPaletteSize, scratch,
                    std::to_string(s[0]) + "x" + std::to_string(s[1]) + " random");
  }
}

TEST(mask_png_widths_around_match_length_multiples) {
  // A zero run of 3 * width bytes fills an Up row and long runs fill Sub rows, so widths whose
  // 3 * width (+ 1) sits on either side of multiples of 258 hit every remainder case of the
  // length-258 matches (0, 1, 2 left over: literals; 3 or more: one shorter match).
  MaskEncoderScratch scratch;
  std::mt19937 rng(21);
  for (int width : {84, 85, 86, 87, 88, 171, 172, 173, 174, 257, 258, 259, 260, 300, 343, 344, 345}) {
    std::vector<uint8_t> background(static_cast<size_t>(width) * 5, 0);
    check_all_paths(background, width, 5, kPalette, kPaletteSize, scratch,
                    "background width " + std::to_string(width));
    for (size_t x = 1; x < static_cast<size_t>(width); ++x) background[2 * width + x] = 1;
    check_all_paths(background, width, 5, kPalette, kPaletteSize, scratch,
                    "one long run, width " + std::to_string(width));
    const std::vector<uint8_t> labels = run_labels(width, 9, kPaletteSize, 200, 0.4, rng);
    check_all_paths(labels, width, 9, kPalette, kPaletteSize, scratch,
                    "long runs, width " + std::to_string(width));
  }
}

TEST(mask_png_zero_runs_longer_than_the_adler_modulus) {
  // Up rows of 21841 to 70000 pixels are zero runs of 65523 to 210000 bytes: past Adler-32's
  // modulus, 65521, where n zeros add (n mod 65521) * s1 to s2.
  MaskEncoderScratch scratch;
  for (int width : {21841, 30000, 70000}) {
    std::vector<uint8_t> labels(static_cast<size_t>(width) * 4, 0);
    for (size_t x = 21841; x < static_cast<size_t>(width); ++x) labels[2 * width + x] = 1;
    check_all_paths(labels, width, 4, kPalette, kPaletteSize, scratch,
                    "width " + std::to_string(width));
  }
}

TEST(mask_png_random_run_maps_all_widths_heights_and_palettes) {
  MaskEncoderScratch scratch;
  std::mt19937 rng(22);
  std::uniform_int_distribution<int> size(1, 300);
  std::uniform_int_distribution<int> palette_size(2, 255);
  for (int i = 0; i < 120; ++i) {
    const int width = i < 60 ? i + 1 : size(rng);  // every width 1..60, then random to 300
    const int height = size(rng);
    const std::vector<Rgb> palette = random_palette(static_cast<size_t>(palette_size(rng)), rng);
    const int max_run = 1 + static_cast<int>(rng() % 400);
    const double repeat = (rng() % 10) / 10.0;
    const std::vector<uint8_t> labels =
        run_labels(width, height, palette.size(), max_run, repeat, rng);
    const std::string what = std::to_string(width) + "x" + std::to_string(height) + " palette " +
                             std::to_string(palette.size()) + " max run " +
                             std::to_string(max_run) + " repeat " + std::to_string(repeat);
    check_mask(labels, width, height, palette.data(), palette.size(), scratch, what + " (auto)");
    check_mask(labels, width, height, palette.data(), palette.size(), scratch, what + " (runs)",
               MaskEncoding::Runs);
    if (i % 10 == 0)
      check_mask(labels, width, height, palette.data(), palette.size(), scratch,
                 what + " (deflate)", MaskEncoding::Deflate);
  }
}

TEST(mask_png_random_pixels_every_palette_size) {
  // A run per pixel (the worst case for runs) with 2..255 labels.
  MaskEncoderScratch scratch;
  std::mt19937 rng(23);
  for (size_t palette_size = 2; palette_size <= 255; palette_size += palette_size < 16 ? 1 : 23) {
    const std::vector<Rgb> palette = random_palette(palette_size, rng);
    const int width = 1 + static_cast<int>(rng() % 120), height = 1 + static_cast<int>(rng() % 120);
    const std::vector<uint8_t> labels =
        random_labels(static_cast<size_t>(width) * height, palette_size, rng);
    check_all_paths(labels, width, height, palette.data(), palette_size, scratch,
                    "random pixels, palette " + std::to_string(palette_size));
  }
  // Every one of the 255 labels present, with long runs.
  const std::vector<Rgb> palette = random_palette(255, rng);
  std::vector<uint8_t> labels(255 * 40);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>((i / 37) % 255);
  check_all_paths(labels, 255, 40, palette.data(), palette.size(), scratch, "255 labels");
}

TEST(mask_png_skewed_symbol_counts_need_length_limited_codes) {
  // A one-pixel-wide map where label k (colour (k, k, k)) starts Fibonacci(k) rows, each followed
  // by a black row so that none repeats the row above: the literal k occurs 3 * Fibonacci(k)
  // times, and a plain Huffman code for Fibonacci frequencies is as deep as there are symbols
  // (about 20 here). DEFLATE allows 15 bits, so the encoder must limit the code lengths.
  std::vector<Rgb> palette(21);
  for (size_t k = 0; k < palette.size(); ++k) {
    const uint8_t v = static_cast<uint8_t>(k);
    palette[k] = {v, v, v};
  }
  std::vector<uint8_t> labels;
  uint64_t fibonacci = 1, next = 1;
  for (uint8_t k = 1; k < palette.size(); ++k) {
    for (uint64_t i = 0; i < fibonacci; ++i) {
      labels.push_back(k);
      labels.push_back(0);
    }
    const uint64_t sum = fibonacci + next;
    fibonacci = next;
    next = sum;
  }
  const int height = static_cast<int>(labels.size());
  MaskEncoderScratch scratch;
  check_all_paths(labels, 1, height, palette.data(), palette.size(), scratch, "fibonacci");
}

TEST(mask_png_long_identical_row_runs) {
  // Upsampled maps: every row repeated 16 times, and one map of a single row repeated.
  MaskEncoderScratch scratch;
  std::mt19937 rng(24);
  const int width = 640, height = 480;
  std::vector<uint8_t> labels = run_labels(width / 16, height / 16, kPaletteSize, 6, 0.3, rng);
  std::vector<uint8_t> upsampled(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      upsampled[static_cast<size_t>(y) * width + x] = labels[static_cast<size_t>(y / 16) * (width / 16) + x / 16];
  check_all_paths(upsampled, width, height, kPalette, kPaletteSize, scratch, "upsampled x16");
  CHECK(scratch.runs.size() < 10000);

  std::vector<uint8_t> one_row(static_cast<size_t>(width) * height, 0);
  for (int y = 0; y < height; ++y) one_row[static_cast<size_t>(y) * width + 100] = 3;
  check_mask(one_row, width, height, kPalette, kPaletteSize, scratch, "one row repeated");
  CHECK(scratch.used == MaskEncoding::Runs);
  CHECK_EQ(scratch.row_groups.size(), size_t{1});
  CHECK_EQ(scratch.runs.size(), size_t{3});
}

TEST(mask_png_all_background_and_only_background_palette) {
  MaskEncoderScratch scratch;
  const std::vector<uint8_t> background(64 * 48, 0);
  const std::vector<uint8_t> png =
      check_mask(background, 64, 48, kPalette, kPaletteSize, scratch, "64x48 background");
  CHECK(png.size() < 200);
  const Rgb white[1] = {{255, 255, 255}};
  check_all_paths(background, 64, 48, white, 1, scratch, "64x48 background, palette of 1");
  const Rgb black[1] = {{0, 0, 0}};  // nothing but zero bytes after the first filter byte
  check_all_paths(background, 64, 48, black, 1, scratch, "64x48 black, palette of 1");
}

TEST(mask_png_filters_are_up_for_repeated_rows_and_sub_otherwise) {
  // Rows: 0 background, 1 same (Up), 2 a run of label 1 (Sub), 3 same (Up), 4 background (Sub);
  // check_mask compares the inflated stream with the scanlines so filtered, byte for byte.
  const int width = 9, height = 5;
  std::vector<uint8_t> labels(width * height, 0);
  for (int y = 2; y <= 3; ++y)
    for (int x = 3; x < 6; ++x) labels[y * width + x] = 1;
  MaskEncoderScratch scratch;
  check_all_paths(labels, width, height, kPalette, kPaletteSize, scratch, "filters");
  const std::vector<uint8_t> lines = expected_scanlines(labels, width, height, kPalette);
  const size_t row_bytes = 1 + 3 * width;
  const uint8_t expected_filters[] = {1, 2, 1, 2, 1};
  for (int y = 0; y < height; ++y) CHECK_EQ(lines[y * row_bytes], expected_filters[y]);
  // The runs path saw three distinct rows: background, the row with the run, background.
  scratch.encoding = MaskEncoding::Auto;
  std::vector<uint8_t> png;
  encode_mask_png(labels.data(), width, height, kPalette, kPaletteSize, scratch, png);
  CHECK(scratch.used == MaskEncoding::Runs);
  CHECK_EQ(scratch.row_groups.size(), size_t{3});
  CHECK_EQ(scratch.runs.size(), size_t{5});
}

TEST(mask_png_run_budget_decides_the_path) {
  // 64 x 64: the budget is 64 + 64 * 64 / 32 = 192 runs. Every row differs from the one above
  // and has 3 runs: 192 runs, the runs path. One more run in the last row: libdeflate.
  const int width = 64, height = 64;
  std::vector<uint8_t> labels(width * height, 0);
  for (int y = 0; y < height; ++y)
    for (int x = 10 + y % 2; x < 20; ++x) labels[y * width + x] = 1;
  MaskEncoderScratch scratch;
  check_mask(labels, width, height, kPalette, kPaletteSize, scratch, "at the budget");
  CHECK(scratch.used == MaskEncoding::Runs);
  CHECK_EQ(scratch.runs.size(), size_t{192});
  labels[(height - 1) * width + 40] = 2;
  check_mask(labels, width, height, kPalette, kPaletteSize, scratch, "over the budget");
  CHECK(scratch.used == MaskEncoding::Deflate);
}

TEST(mask_png_checkerboards) {
  // A run per pixel. Automatic: libdeflate, whose matches find the period. Forced runs: every
  // byte a literal colour difference, still correct and of a reasonable size.
  MaskEncoderScratch scratch;
  const std::vector<uint8_t> small = checkerboard(301, 257);
  check_all_paths(small, 301, 257, kPalette, kPaletteSize, scratch, "checkerboard 301x257");
  const std::vector<uint8_t> forced = check_mask(small, 301, 257, kPalette, kPaletteSize, scratch,
                                                 "checkerboard runs", MaskEncoding::Runs);
  // Three colour differences per pixel, from a handful of byte values: about 3 bits each.
  CHECK(forced.size() < 301 * 257 * 9 / 8 + 1000);

  const std::vector<uint8_t> large = checkerboard(4096, 4096);
  const std::vector<uint8_t> png =
      check_mask(large, 4096, 4096, kPalette, kPaletteSize, scratch, "checkerboard 4096");
  CHECK(scratch.used == MaskEncoding::Deflate);
  CHECK(png.size() < kL4vMaskLimit);
}

TEST(mask_png_blobs_and_size_budget) {
  MaskEncoderScratch scratch;
  for (int s : {300, 1024}) {
    const std::vector<uint8_t> labels = blob_labels(s + 1, s);
    const std::vector<uint8_t> png =
        check_mask(labels, s + 1, s, kPalette, kPaletteSize, scratch, "blobs " + std::to_string(s));
    CHECK(scratch.used == MaskEncoding::Runs);
    CHECK(png.size() < 64 * 1024);
  }
  // The largest image L4V takes: far below AnomalyMask's 5,242,880-byte limit.
  const std::vector<uint8_t> labels = blob_labels(4096, 4096);
  const std::vector<uint8_t> png =
      check_mask(labels, 4096, 4096, kPalette, kPaletteSize, scratch, "blobs 4096");
  CHECK(scratch.used == MaskEncoding::Runs);
  CHECK(png.size() < kL4vMaskLimit / 10);
  const std::vector<uint8_t> background(size_t{4096} * 4096, 0);
  const std::vector<uint8_t> empty =
      check_mask(background, 4096, 4096, kPalette, kPaletteSize, scratch, "background 4096");
  CHECK(scratch.used == MaskEncoding::Runs);
  CHECK(empty.size() < 64 * 1024);  // 2 bits per 258 bytes: ~48 KiB
}

TEST(mask_png_incompressible_mask_takes_the_retry_path) {
  // 200 random colours on random labels: far over the run budget, so libdeflate; it cannot reach
  // 1/8 of the filtered size, so the first, small output buffer is too small and the encoder
  // must retry with the full bound.
  std::mt19937 rng(13);
  std::vector<Rgb> palette(200);
  for (Rgb& c : palette)
    for (uint8_t& v : c) v = static_cast<uint8_t>(rng());
  const int width = 257, height = 129;
  const std::vector<uint8_t> labels = random_labels(static_cast<size_t>(width) * height, palette.size(), rng);
  MaskEncoderScratch scratch;
  check_mask(labels, width, height, palette.data(), palette.size(), scratch, "incompressible");
  CHECK(scratch.used == MaskEncoding::Deflate);
  CHECK(scratch.deflated.size() > scratch.filtered.size() / 8 + 4096);
}

TEST(mask_png_rejects_labels_outside_the_palette) {
  for (MaskEncoding encoding : {MaskEncoding::Auto, MaskEncoding::Runs, MaskEncoding::Deflate}) {
    MaskEncoderScratch scratch;
    scratch.encoding = encoding;
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
}

TEST(mask_png_steady_state_reuses_buffers) {
  const std::vector<uint8_t> labels = blob_labels(640, 480);
  MaskEncoderScratch scratch;
  std::vector<uint8_t> png;
  std::vector<uint64_t> counts(kPaletteSize);
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png, counts.data());
  CHECK(scratch.used == MaskEncoding::Runs);
  const std::vector<uint8_t> first = png;
  const MaskEncoderScratch::Run* runs = scratch.runs.data();
  const MaskEncoderScratch::RowGroup* groups = scratch.row_groups.data();
  const uint8_t* deflated = scratch.deflated.data();
  const uint8_t* out = png.data();
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png, counts.data());
  CHECK(scratch.runs.data() == runs);
  CHECK(scratch.row_groups.data() == groups);
  CHECK(scratch.deflated.data() == deflated);
  CHECK(scratch.filtered.empty());  // the runs path never builds scanlines
  CHECK(scratch.compressor == nullptr);
  CHECK(png.data() == out);
  CHECK(png == first);  // deterministic; `out` overwritten, not appended to

  scratch.encoding = MaskEncoding::Deflate;
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png);
  const uint8_t* filtered = scratch.filtered.data();
  deflated = scratch.deflated.data();
  const void* compressor = scratch.compressor;
  encode_mask_png(labels.data(), 640, 480, kPalette, kPaletteSize, scratch, png);
  CHECK(scratch.filtered.data() == filtered);
  CHECK(scratch.deflated.data() == deflated);
  CHECK(scratch.compressor == compressor);
}
