// Tests of the decode stage. Every fixture is made here (PNGs with libspng's encoder or by hand,
// JPEGs with TurboJPEG), so the tests need no files. Bit-exactness against Pillow is checked
// outside this suite; here each PNG must decode to exactly the RGB its samples define, and each
// JPEG must round-trip within JPEG's tolerance.
#include <spng.h>
#include <turbojpeg.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../core/decode.h"
#include "../core/decode_internal.h"
#include "check.h"

namespace {

using openlookout::DecodeLimits;
using openlookout::Decoder;
using openlookout::ErrorKind;
using openlookout::ImageFormat;
using openlookout::RgbImage;
using Bytes = std::vector<uint8_t>;

// ---------------------------------------------------------------------------------------------
// Helpers

// Fixtures are smaller than the default min_side of 64 to keep the tests fast.
DecodeLimits small_image_limits() {
  DecodeLimits limits;
  limits.min_side = 1;
  return limits;
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const openlookout::Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// CHECK_EQ for strings (check.h's prints numbers only).
void check_text(const std::string& actual, const std::string& expected, const char* file, int line) {
  if (actual != expected) olt::fail(file, line, "got \"" + actual + "\", expected \"" + expected + "\"");
}
#define CHECK_TEXT(actual, expected) check_text((actual), (expected), __FILE__, __LINE__)

// A small deterministic generator, so failures reproduce.
struct Lcg {
  uint32_t state;
  uint32_t next() {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  }
  uint32_t below(uint32_t n) { return next() % n; }
};

enum class Outcome { Decoded, Validation, OtherError };

// What a decode does with hostile input: anything but a clean result or a Validation error (or
// a crash, which the sanitizers report) is a bug.
Outcome decode_outcome(Decoder& decoder, const Bytes& body, ImageFormat format,
                       const DecodeLimits& limits, RgbImage& out) {
  try {
    decoder.decode(body.data(), body.size(), format, limits, out);
    return Outcome::Decoded;
  } catch (const openlookout::Error& e) {
    return e.kind() == ErrorKind::Validation ? Outcome::Validation : Outcome::OtherError;
  } catch (...) {
    return Outcome::OtherError;
  }
}

uint32_t read_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void append_u32_be(Bytes& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

// ---------------------------------------------------------------------------------------------
// PNG fixtures

uint32_t crc32_of(const uint8_t* data, size_t size) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xffffffffu;
}

void append_chunk(Bytes& png, const char type[4], const Bytes& payload) {
  append_u32_be(png, static_cast<uint32_t>(payload.size()));
  Bytes typed(type, type + 4);
  typed.insert(typed.end(), payload.begin(), payload.end());
  png.insert(png.end(), typed.begin(), typed.end());
  append_u32_be(png, crc32_of(typed.data(), typed.size()));
}

const Bytes kPngSignature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

struct PngChunk {
  std::string type;
  Bytes payload;
};

// Splits a well-formed PNG (one we encoded) into its chunks, to rebuild it altered.
std::vector<PngChunk> split_chunks(const Bytes& png) {
  std::vector<PngChunk> chunks;
  size_t pos = kPngSignature.size();
  while (pos + 12 <= png.size()) {
    const uint32_t length = read_u32_be(&png[pos]);
    PngChunk chunk{std::string(png.begin() + pos + 4, png.begin() + pos + 8),
                   Bytes(png.begin() + pos + 8, png.begin() + pos + 8 + length)};
    chunks.push_back(chunk);
    pos += 12 + length;
  }
  return chunks;
}

Bytes join_chunks(const std::vector<PngChunk>& chunks) {
  Bytes png = kPngSignature;
  for (const auto& chunk : chunks) append_chunk(png, chunk.type.c_str(), chunk.payload);
  return png;
}

// A signature and an IHDR claiming any size; no pixel data follows.
Bytes png_header_only(uint32_t width, uint32_t height) {
  Bytes png = kPngSignature;
  Bytes ihdr;
  append_u32_be(ihdr, width);
  append_u32_be(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, not interlaced
  append_chunk(png, "IHDR", ihdr);
  append_chunk(png, "IEND", {});
  return png;
}

struct PngFixture {
  Bytes png;
  Bytes expected_rgb;
  int width = 0;
  int height = 0;
};

int channels_of(uint8_t color_type) {
  switch (color_type) {
    case SPNG_COLOR_TYPE_TRUECOLOR: return 3;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: return 2;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: return 4;
    default: return 1;  // grey, palette
  }
}

// An n-bit sample as 8 bits, as PNG decoders agree: bit replication up, high byte down.
uint8_t sample_to_8bit(uint32_t sample, int bit_depth) {
  if (bit_depth == 16) return static_cast<uint8_t>(sample >> 8);
  return static_cast<uint8_t>(sample * (255u / ((1u << bit_depth) - 1u)));
}

// Packs one row of samples the way PNG stores them: MSB-first below 8 bits, big-endian at 16.
void pack_row(const std::vector<uint32_t>& samples, int bit_depth, Bytes& out) {
  if (bit_depth >= 8) {
    for (uint32_t s : samples) {
      if (bit_depth == 16) out.push_back(static_cast<uint8_t>(s >> 8));
      out.push_back(static_cast<uint8_t>(s));
    }
    return;
  }
  const size_t per_byte = 8 / bit_depth;
  const size_t first = out.size();
  out.resize(first + (samples.size() + per_byte - 1) / per_byte, 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const int shift = 8 - bit_depth * static_cast<int>(i % per_byte + 1);
    out[first + i / per_byte] |= static_cast<uint8_t>(samples[i] << shift);
  }
}

Bytes encode_png(const spng_ihdr& ihdr, const Bytes& raw, const spng_plte* plte,
                 const spng_trns* trns) {
  spng_ctx* ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr header = ihdr;
  spng_set_ihdr(ctx, &header);
  if (plte != nullptr) {
    spng_plte copy = *plte;
    spng_set_plte(ctx, &copy);
  }
  if (trns != nullptr) {
    spng_trns copy = *trns;
    spng_set_trns(ctx, &copy);
  }
  Bytes png;
  const int rc = spng_encode_image(ctx, raw.data(), raw.size(), SPNG_FMT_RAW, SPNG_ENCODE_FINALIZE);
  if (rc == 0) {
    size_t size = 0;
    int error = 0;
    void* buffer = spng_get_png_buffer(ctx, &size, &error);
    if (buffer != nullptr) {
      const auto* bytes = static_cast<const uint8_t*>(buffer);
      png.assign(bytes, bytes + size);
      std::free(buffer);
    }
  }
  spng_ctx_free(ctx);
  return png;  // empty on failure; the tests check
}

// A random image of the given PNG layout, encoded, with the RGB every decoder must produce.
PngFixture make_png(int width, int height, uint8_t color_type, uint8_t bit_depth, bool interlaced,
                    bool with_trns, uint32_t seed = 1) {
  Lcg random{seed};
  const int channels = channels_of(color_type);
  const uint32_t sample_limit = 1u << bit_depth;

  spng_plte plte{};
  if (color_type == SPNG_COLOR_TYPE_INDEXED) {
    plte.n_entries = sample_limit;
    for (uint32_t i = 0; i < plte.n_entries; ++i) {
      plte.entries[i] = {static_cast<uint8_t>(random.below(256)),
                         static_cast<uint8_t>(random.below(256)),
                         static_cast<uint8_t>(random.below(256)), 255};
    }
  }

  PngFixture fixture;
  fixture.width = width;
  fixture.height = height;
  Bytes raw;
  std::vector<uint32_t> row(static_cast<size_t>(width) * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint32_t* px = &row[static_cast<size_t>(x) * channels];
      for (int c = 0; c < channels; ++c) px[c] = random.below(sample_limit);
      if (color_type == SPNG_COLOR_TYPE_INDEXED) {
        const auto& entry = plte.entries[px[0]];
        fixture.expected_rgb.insert(fixture.expected_rgb.end(), {entry.red, entry.green, entry.blue});
      } else if (channels <= 2) {  // grey, alpha dropped
        const uint8_t grey = sample_to_8bit(px[0], bit_depth);
        fixture.expected_rgb.insert(fixture.expected_rgb.end(), {grey, grey, grey});
      } else {  // RGB, alpha dropped
        for (int c = 0; c < 3; ++c) fixture.expected_rgb.push_back(sample_to_8bit(px[c], bit_depth));
      }
    }
    pack_row(row, bit_depth, raw);
  }

  spng_trns trns{};
  if (with_trns) {
    trns.gray = static_cast<uint16_t>(row[0] % sample_limit);  // a colour that occurs
    trns.red = static_cast<uint16_t>(row[0]);
    trns.green = static_cast<uint16_t>(row[1 % row.size()]);
    trns.blue = static_cast<uint16_t>(row[2 % row.size()]);
    trns.n_type3_entries = plte.n_entries / 2 + 1;
    for (uint32_t i = 0; i < trns.n_type3_entries; ++i) trns.type3_alpha[i] = static_cast<uint8_t>(i * 7);
  }

  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(width);
  ihdr.height = static_cast<uint32_t>(height);
  ihdr.bit_depth = bit_depth;
  ihdr.color_type = color_type;
  ihdr.interlace_method = interlaced ? SPNG_INTERLACE_ADAM7 : SPNG_INTERLACE_NONE;
  fixture.png = encode_png(ihdr, raw, color_type == SPNG_COLOR_TYPE_INDEXED ? &plte : nullptr,
                           with_trns ? &trns : nullptr);
  return fixture;
}

PngFixture make_rgb8_png(int width, int height, uint32_t seed = 1) {
  return make_png(width, height, SPNG_COLOR_TYPE_TRUECOLOR, 8, false, false, seed);
}

// ---------------------------------------------------------------------------------------------
// JPEG fixtures

// A smooth picture with an edge: realistic enough that JPEG errors stay small.
Bytes make_smooth_rgb(int width, int height) {
  Bytes rgb;
  rgb.reserve(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      rgb.push_back(static_cast<uint8_t>(x * 255 / (width - 1)));
      rgb.push_back(static_cast<uint8_t>(y * 255 / (height - 1)));
      rgb.push_back(static_cast<uint8_t>(x < width / 2 ? 60 : 190));
    }
  }
  return rgb;
}

Bytes compress_jpeg(const Bytes& pixels, int width, int height, int pixel_format, int subsampling,
                    int quality, int extra_flags = 0) {
  tjhandle tj = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long jpeg_size = 0;
  Bytes result;
  if (tjCompress2(tj, pixels.data(), width, 0, height, pixel_format, &jpeg, &jpeg_size, subsampling,
                  quality, TJFLAG_ACCURATEDCT | extra_flags) == 0) {
    result.assign(jpeg, jpeg + jpeg_size);
  }
  tjFree(jpeg);
  tjDestroy(tj);
  return result;  // empty on failure; the tests check
}

Bytes make_rgb_jpeg(int width, int height, int subsampling, int extra_flags = 0) {
  return compress_jpeg(make_smooth_rgb(width, height), width, height, TJPF_RGB, subsampling, 95,
                       extra_flags);
}

// Offset of the first marker of `marker_code` before SOS in a JPEG we encoded; 0 if none.
size_t find_marker(const Bytes& jpeg, uint8_t marker_code) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xff) {
    const uint8_t marker = jpeg[pos + 1];
    if (marker == marker_code) return pos;
    if (marker == 0xda) break;
    pos += 2 + ((size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3]);
  }
  return 0;
}

// Mean and largest absolute difference between two equally sized byte arrays.
struct Difference {
  double mean = 0;
  int max = 0;
};
Difference difference(const Bytes& a, const Bytes& b) {
  Difference d;
  if (a.size() != b.size() || a.empty()) return {1e9, 1 << 30};
  for (size_t i = 0; i < a.size(); ++i) {
    const int delta = std::abs(int{a[i]} - int{b[i]});
    d.mean += delta;
    if (delta > d.max) d.max = delta;
  }
  d.mean /= static_cast<double>(a.size());
  return d;
}

// Pillow's CMYK -> RGB of one pixel as Pillow holds it (already un-inverted).
void pillow_cmyk_to_rgb(int c, int m, int y, int k, uint8_t* rgb) {
  auto muldiv255 = [](int a, int b) { int t = a * b + 128; return ((t >> 8) + t) >> 8; };
  const int nk = 255 - k;
  rgb[0] = static_cast<uint8_t>(nk - muldiv255(c, nk));
  rgb[1] = static_cast<uint8_t>(nk - muldiv255(m, nk));
  rgb[2] = static_cast<uint8_t>(nk - muldiv255(y, nk));
}

}  // namespace

// =============================================================================================
// parse_content_type

TEST(content_type_accepts_the_two_types) {
  using openlookout::parse_content_type;
  CHECK(parse_content_type("image/png") == ImageFormat::Png);
  CHECK(parse_content_type("image/jpeg") == ImageFormat::Jpeg);
}

TEST(content_type_ignores_case_and_parameters) {
  using openlookout::parse_content_type;
  CHECK(parse_content_type("IMAGE/PNG") == ImageFormat::Png);
  CHECK(parse_content_type("Image/Jpeg") == ImageFormat::Jpeg);
  CHECK(parse_content_type("image/jpeg; charset=binary") == ImageFormat::Jpeg);
  CHECK(parse_content_type("image/png ;x=1") == ImageFormat::Png);
  CHECK(parse_content_type("image/png\t;") == ImageFormat::Png);
}

TEST(content_type_rejects_everything_else) {
  using openlookout::parse_content_type;
  for (const char* bad : {"image/jpg", "", "image/gif", "image/pngx", "image", " image/png",
                          "image/ png", "application/octet-stream", "image/jp;eg"}) {
    CHECK_THROWS_KIND(parse_content_type(bad), ErrorKind::Validation);
  }
  const std::string message = error_message([] { parse_content_type("image/jpg"); });
  CHECK(contains(message, "'image/jpg'"));
  CHECK(contains(message, "image/png"));
  CHECK(contains(message, "image/jpeg"));
  CHECK(contains(error_message([] { parse_content_type(""); }), "empty"));
  // Control characters do not reach the message.
  const std::string hostile = error_message([] { parse_content_type("a\nb\x01"); });
  CHECK(!contains(hostile, "\n"));
  CHECK(contains(hostile, "'a?b?'"));
}

// =============================================================================================
// check_dimensions

TEST(dimensions_within_limits_pass) {
  DecodeLimits limits;
  openlookout::check_dimensions(64, 64, limits);
  openlookout::check_dimensions(4096, 4096, limits);
  openlookout::check_dimensions(64, 4096, limits);
}

TEST(dimensions_outside_limits_fail_with_a_clear_message) {
  DecodeLimits limits;
  using openlookout::check_dimensions;
  CHECK_THROWS_KIND(check_dimensions(63, 64, limits), ErrorKind::Validation);
  CHECK_THROWS_KIND(check_dimensions(64, 63, limits), ErrorKind::Validation);
  CHECK_THROWS_KIND(check_dimensions(4097, 64, limits), ErrorKind::Validation);
  CHECK_THROWS_KIND(check_dimensions(64, 4097, limits), ErrorKind::Validation);
  CHECK_THROWS_KIND(check_dimensions(0, 0, limits), ErrorKind::Validation);
  CHECK_THROWS_KIND(check_dimensions(-5, 100, limits), ErrorKind::Validation);
  CHECK_TEXT(error_message([&] { check_dimensions(100000, 100000, limits); }),
           std::string("image is 100000x100000 pixels; each side must be between 64 and 4096 "
                       "(max_side)"));
  CHECK(contains(error_message([&] { check_dimensions(10, 100, limits); }), "(min_side)"));
  // Zero is never a size, even when min_side allows it.
  DecodeLimits no_minimum;
  no_minimum.min_side = 0;
  CHECK_THROWS_KIND(check_dimensions(0, 10, no_minimum), ErrorKind::Validation);
}

// =============================================================================================
// Body checks common to both formats

TEST(empty_body_is_rejected) {
  Decoder decoder;
  RgbImage out;
  const uint8_t byte = 0;
  for (ImageFormat format : {ImageFormat::Png, ImageFormat::Jpeg}) {
    CHECK_THROWS_KIND(decoder.decode(nullptr, 0, format, DecodeLimits{}, out), ErrorKind::Validation);
    CHECK_THROWS_KIND(decoder.decode(&byte, 0, format, DecodeLimits{}, out), ErrorKind::Validation);
    CHECK_TEXT(error_message([&] { decoder.decode(&byte, 0, format, DecodeLimits{}, out); }),
             std::string("empty body"));
  }
}

TEST(body_over_the_size_limit_is_rejected) {
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_rgb8_png(20, 20);
  DecodeLimits limits = small_image_limits();
  limits.max_body_bytes = fixture.png.size() - 1;
  CHECK_THROWS_KIND(decoder.decode(fixture.png.data(), fixture.png.size(), ImageFormat::Png, limits, out),
                    ErrorKind::Validation);
  const std::string message = error_message(
      [&] { decoder.decode(fixture.png.data(), fixture.png.size(), ImageFormat::Png, limits, out); });
  CHECK(contains(message, std::to_string(fixture.png.size())));
  CHECK(contains(message, std::to_string(limits.max_body_bytes)));
  limits.max_body_bytes = fixture.png.size();  // the limit itself is allowed
  decoder.decode(fixture.png.data(), fixture.png.size(), ImageFormat::Png, limits, out);
  CHECK(out.pixels == fixture.expected_rgb);
}

TEST(signature_mismatch_names_what_the_body_is) {
  Decoder decoder;
  RgbImage out;
  const Bytes png = make_rgb8_png(8, 8).png;
  const Bytes jpeg = make_rgb_jpeg(8, 8, TJSAMP_444);
  const Bytes text = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'};
  auto message = [&](const Bytes& body, ImageFormat format) {
    return error_message(
        [&] { decoder.decode(body.data(), body.size(), format, small_image_limits(), out); });
  };
  CHECK_TEXT(message(png, ImageFormat::Jpeg),
           std::string("body looks like a PNG image but the content type is image/jpeg"));
  CHECK_TEXT(message(jpeg, ImageFormat::Png),
           std::string("body looks like a JPEG image but the content type is image/png"));
  CHECK_TEXT(message(text, ImageFormat::Png),
           std::string("body is not a PNG image (content type image/png)"));
  CHECK_TEXT(message(text, ImageFormat::Jpeg),
           std::string("body is not a JPEG image (content type image/jpeg)"));
  // Shorter than either signature.
  CHECK_TEXT(message(Bytes{0xff, 0xd8}, ImageFormat::Jpeg),
           std::string("body is not a JPEG image (content type image/jpeg)"));
  CHECK_TEXT(message(Bytes(png.begin(), png.begin() + 7), ImageFormat::Png),
           std::string("body is not a PNG image (content type image/png)"));
}

// =============================================================================================
// PNG

TEST(png_every_colour_type_and_depth_decodes_exactly) {
  struct Layout {
    uint8_t color_type;
    std::vector<uint8_t> depths;
  };
  const std::vector<Layout> layouts = {
      {SPNG_COLOR_TYPE_GRAYSCALE, {1, 2, 4, 8, 16}},
      {SPNG_COLOR_TYPE_TRUECOLOR, {8, 16}},
      {SPNG_COLOR_TYPE_INDEXED, {1, 2, 4, 8}},
      {SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, {8, 16}},
      {SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, {8, 16}},
  };
  Decoder decoder;
  RgbImage out;
  int decoded = 0;
  for (const Layout& layout : layouts) {
    const bool has_alpha = layout.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                           layout.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
    for (uint8_t depth : layout.depths) {
      for (bool interlaced : {false, true}) {
        for (bool with_trns : {false, true}) {
          if (with_trns && has_alpha) continue;  // tRNS is not allowed with an alpha channel
          // Odd sizes: partial bytes at row ends, and Adam7 passes of uneven sizes.
          const PngFixture fixture =
              make_png(13, 11, layout.color_type, depth, interlaced, with_trns, 7u + depth);
          CHECK(!fixture.png.empty());
          const std::string what = "colour type " + std::to_string(layout.color_type) + ", depth " +
                                   std::to_string(depth) + (interlaced ? ", interlaced" : "") +
                                   (with_trns ? ", tRNS" : "");
          try {
            decoder.decode(fixture.png.data(), fixture.png.size(), ImageFormat::Png,
                           small_image_limits(), out);
            if (out.width != 13 || out.height != 11 || out.pixels != fixture.expected_rgb) {
              olt::fail(__FILE__, __LINE__, "wrong pixels for " + what);
            }
            ++decoded;
          } catch (const std::exception& e) {
            olt::fail(__FILE__, __LINE__, what + ": " + e.what());
          }
        }
      }
    }
  }
  // Per interlace setting: grey 5 depths x 2 (tRNS), RGB 2 x 2, palette 4 x 2, GA 2, RGBA 2.
  CHECK_EQ(decoded, 2 * (10 + 4 + 8 + 2 + 2));
}

TEST(png_larger_image_and_trailing_bytes) {
  Decoder decoder;
  RgbImage out;
  PngFixture fixture = make_rgb8_png(257, 130, 3);
  fixture.png.insert(fixture.png.end(), {'j', 'u', 'n', 'k', 0, 1, 2});  // after IEND: ignored
  decoder.decode(fixture.png.data(), fixture.png.size(), ImageFormat::Png, DecodeLimits{}, out);
  CHECK_EQ(out.width, 257);
  CHECK_EQ(out.height, 130);
  CHECK(out.pixels == fixture.expected_rgb);
}

TEST(png_every_truncation_is_an_error) {
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_rgb8_png(23, 17, 11);
  // libspng stops after IEND's type and never reads its CRC (a constant, protecting no data),
  // so only a body that lacks part of those last 4 bytes still decodes, to the complete image.
  const size_t iend_crc_offset = fixture.png.size() - 4;
  for (size_t size = iend_crc_offset; size < fixture.png.size(); ++size) {
    decoder.decode(fixture.png.data(), size, ImageFormat::Png, small_image_limits(), out);
    CHECK(out.pixels == fixture.expected_rgb);
  }
  for (size_t size = 0; size < iend_crc_offset; ++size) {
    const Bytes prefix(fixture.png.begin(), fixture.png.begin() + size);
    if (decode_outcome(decoder, prefix, ImageFormat::Png, small_image_limits(), out) !=
        Outcome::Validation) {
      olt::fail(__FILE__, __LINE__, "prefix of " + std::to_string(size) + " bytes did not fail");
      break;
    }
    CHECK_EQ(out.width, 0);
    CHECK(out.pixels.empty());
  }
}

TEST(png_short_image_data_with_valid_chunks_is_an_error) {
  // The IDAT is cut in half but every chunk is well formed: libspng must not return a partial
  // image.
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_rgb8_png(40, 30, 5);
  std::vector<PngChunk> chunks = split_chunks(fixture.png);
  bool cut = false;
  for (auto& chunk : chunks) {
    if (chunk.type == "IDAT" && !cut) {
      chunk.payload.resize(chunk.payload.size() / 2);
      cut = true;
    }
  }
  CHECK(cut);
  const Bytes png = join_chunks(chunks);
  CHECK_THROWS_KIND(decoder.decode(png.data(), png.size(), ImageFormat::Png, small_image_limits(), out),
                    ErrorKind::Validation);
  CHECK(contains(error_message([&] {
                   decoder.decode(png.data(), png.size(), ImageFormat::Png, small_image_limits(), out);
                 }),
                 "corrupt or truncated PNG: "));
  // Rebuilding the untouched chunks gives the image back: the rebuild itself is sound.
  const Bytes rebuilt = join_chunks(split_chunks(fixture.png));
  decoder.decode(rebuilt.data(), rebuilt.size(), ImageFormat::Png, small_image_limits(), out);
  CHECK(out.pixels == fixture.expected_rgb);
}

TEST(png_missing_iend_is_an_error) {
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_rgb8_png(16, 16);
  std::vector<PngChunk> chunks = split_chunks(fixture.png);
  CHECK(chunks.back().type == "IEND");
  chunks.pop_back();
  const Bytes png = join_chunks(chunks);
  CHECK_THROWS_KIND(decoder.decode(png.data(), png.size(), ImageFormat::Png, small_image_limits(), out),
                    ErrorKind::Validation);
}

TEST(png_bad_checksums_are_errors) {
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_rgb8_png(16, 16);
  // A critical chunk (the IDAT) and an ancillary one (a tEXt before it).
  Bytes bad_idat = fixture.png;
  bad_idat[bad_idat.size() - 13] ^= 0x01;  // last byte of the IDAT's CRC (IEND is 12 bytes)
  CHECK_THROWS_KIND(
      decoder.decode(bad_idat.data(), bad_idat.size(), ImageFormat::Png, small_image_limits(), out),
      ErrorKind::Validation);
  std::vector<PngChunk> chunks = split_chunks(fixture.png);
  chunks.insert(chunks.begin() + 1, PngChunk{"tEXt", {'C', 'o', 'm', 0, 'h', 'i'}});
  Bytes bad_text = join_chunks(chunks);
  decoder.decode(bad_text.data(), bad_text.size(), ImageFormat::Png, small_image_limits(), out);
  CHECK(out.pixels == fixture.expected_rgb);  // a good tEXt is fine
  bad_text[8 + 25 + 8 + 6] ^= 0x01;  // first CRC byte of the tEXt after signature and IHDR
  CHECK_THROWS_KIND(
      decoder.decode(bad_text.data(), bad_text.size(), ImageFormat::Png, small_image_limits(), out),
      ErrorKind::Validation);
}

TEST(png_corrupted_bytes_never_crash) {
  Decoder decoder;
  RgbImage out;
  const PngFixture fixture = make_png(33, 21, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, true, false, 3);
  Lcg random{99};
  int other_errors = 0;
  // Anywhere in the file (mostly caught by CRCs)...
  for (int trial = 0; trial < 300; ++trial) {
    Bytes body = fixture.png;
    for (int flips = 1 + static_cast<int>(random.below(3)); flips > 0; --flips) {
      body[random.below(static_cast<uint32_t>(body.size()))] ^= static_cast<uint8_t>(1 + random.below(255));
    }
    if (decode_outcome(decoder, body, ImageFormat::Png, small_image_limits(), out) == Outcome::OtherError) {
      ++other_errors;
    }
  }
  // ...and inside the IDAT and IHDR with the CRCs fixed, so zlib, the filters and the header
  // checks see the damage.
  const std::vector<PngChunk> chunks = split_chunks(fixture.png);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<PngChunk> damaged = chunks;
    PngChunk& target = damaged[trial % 3 == 0 ? 0 : 1];  // IHDR or the (single) IDAT
    CHECK(target.type == (trial % 3 == 0 ? "IHDR" : "IDAT"));
    target.payload[random.below(static_cast<uint32_t>(target.payload.size()))] ^=
        static_cast<uint8_t>(1 + random.below(255));
    const Bytes body = join_chunks(damaged);
    if (decode_outcome(decoder, body, ImageFormat::Png, small_image_limits(), out) == Outcome::OtherError) {
      ++other_errors;
    }
  }
  CHECK_EQ(other_errors, 0);
}

TEST(png_huge_header_fails_fast_without_allocating) {
  Decoder decoder;
  RgbImage out;
  const Bytes png = png_header_only(100000, 100000);
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_message(
      [&] { decoder.decode(png.data(), png.size(), ImageFormat::Png, DecodeLimits{}, out); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK_TEXT(message, std::string("image is 100000x100000 pixels; each side must be between 64 and "
                                "4096 (max_side)"));
  CHECK_EQ(out.pixels.capacity(), size_t{0});
  CHECK(elapsed < std::chrono::milliseconds(500));
  // Beyond what PNG allows at all (2^31 - 1), and zero.
  for (uint32_t side : {0x80000000u, 0xffffffffu, 0u}) {
    const Bytes odd = png_header_only(side, 100);
    CHECK_THROWS_KIND(decoder.decode(odd.data(), odd.size(), ImageFormat::Png, DecodeLimits{}, out),
                      ErrorKind::Validation);
  }
  CHECK_EQ(out.pixels.capacity(), size_t{0});
}

TEST(png_side_limits_at_the_edges) {
  Decoder decoder;
  RgbImage out;
  const DecodeLimits limits;  // 64 .. 4096
  struct Case {
    int width, height;
    bool ok;
  };
  for (const Case& c : {Case{64, 64, true}, Case{4096, 64, true}, Case{64, 4096, true},
                        Case{63, 64, false}, Case{64, 63, false}, Case{4097, 64, false},
                        Case{64, 4097, false}}) {
    const PngFixture fixture = make_png(c.width, c.height, SPNG_COLOR_TYPE_GRAYSCALE, 1, false, false);
    const Outcome outcome = decode_outcome(decoder, fixture.png, ImageFormat::Png, limits, out);
    CHECK(outcome == (c.ok ? Outcome::Decoded : Outcome::Validation));
    if (c.ok) CHECK(out.pixels == fixture.expected_rgb);
  }
  const PngFixture too_small = make_png(63, 64, SPNG_COLOR_TYPE_GRAYSCALE, 1, false, false);
  CHECK(contains(error_message([&] {
                   decoder.decode(too_small.png.data(), too_small.png.size(), ImageFormat::Png, limits, out);
                 }),
                 "image is 63x64 pixels"));
}

// =============================================================================================
// JPEG

TEST(jpeg_colour_round_trips) {
  Decoder decoder;
  RgbImage out;
  const int width = 96, height = 80;
  const Bytes source = make_smooth_rgb(width, height);
  for (int subsampling : {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_440, TJSAMP_411}) {
    for (int extra_flags : {0, TJFLAG_PROGRESSIVE}) {
      const Bytes jpeg = make_rgb_jpeg(width, height, subsampling, extra_flags);
      CHECK(!jpeg.empty());
      decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out);
      CHECK_EQ(out.width, width);
      CHECK_EQ(out.height, height);
      const Difference d = difference(out.pixels, source);
      if (!(d.mean < 2.0 && d.max <= 40)) {
        olt::fail(__FILE__, __LINE__,
                  "subsampling " + std::to_string(subsampling) + ": mean error " +
                      std::to_string(d.mean) + ", max " + std::to_string(d.max));
      }
    }
  }
}

TEST(jpeg_grayscale_comes_out_replicated) {
  Decoder decoder;
  RgbImage out;
  const int width = 70, height = 66;
  Bytes grey(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) grey[static_cast<size_t>(y) * width + x] = static_cast<uint8_t>((x * 3 + y) & 0xff);
  }
  const Bytes jpeg = compress_jpeg(grey, width, height, TJPF_GRAY, TJSAMP_GRAY, 95);
  CHECK(!jpeg.empty());
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out);
  CHECK_EQ(out.width, width);
  Bytes replicated;
  bool channels_equal = true;
  for (size_t i = 0; i < grey.size(); ++i) {
    const uint8_t* px = &out.pixels[i * 3];
    channels_equal = channels_equal && px[0] == px[1] && px[1] == px[2];
    replicated.insert(replicated.end(), {grey[i], grey[i], grey[i]});
  }
  CHECK(channels_equal);
  const Difference d = difference(out.pixels, replicated);
  CHECK(d.mean < 1.5);
  CHECK(d.max <= 30);
}

TEST(cmyk_conversion_matches_pillow_values) {
  // Stored (Adobe-inverted) bytes -> what Pillow's Image.open(...).convert("RGB") gives; the
  // expected values were read off Pillow 13 (CMYK (100,200,0,55) -> (122,43,200), etc.).
  const uint8_t stored[] = {155, 55, 255, 200,  // Pillow CMYK (100, 200, 0, 55)
                            252, 127, 1, 254,   // Pillow CMYK (3, 128, 254, 1)
                            255, 255, 255, 255, // no ink: white
                            0, 0, 0, 255,       // full C, M, Y, no K
                            17, 200, 90, 0};    // full K: black
  const uint8_t expected[] = {122, 43, 200, 251, 127, 1, 255, 255, 255, 0, 0, 0, 0, 0, 0};
  uint8_t rgb[15] = {};
  openlookout::detail::inverted_cmyk_to_rgb(stored, 5, rgb);
  CHECK(std::memcmp(rgb, expected, sizeof(expected)) == 0);
  // And the formula over every ink/key pair.
  bool all_match = true;
  for (int ink = 0; ink < 256; ++ink) {
    for (int key = 0; key < 256; ++key) {
      const uint8_t pixel[4] = {static_cast<uint8_t>(255 - ink), 255, 0, static_cast<uint8_t>(255 - key)};
      uint8_t ours[3], pillow[3];
      openlookout::detail::inverted_cmyk_to_rgb(pixel, 1, ours);
      pillow_cmyk_to_rgb(ink, 0, 255, key, pillow);
      all_match = all_match && std::memcmp(ours, pillow, 3) == 0;
    }
  }
  CHECK(all_match);
}

TEST(jpeg_cmyk_decodes_like_pillow) {
  // TurboJPEG writes CMYK as YCCK with an Adobe marker, storing the bytes as given; Pillow reads
  // them back inverted ("CMYK;I") and converts. So the expected RGB comes from the source bytes
  // through the same formula, within JPEG's tolerance.
  Decoder decoder;
  RgbImage out;
  const int width = 64, height = 72;
  Bytes cmyk;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      cmyk.insert(cmyk.end(), {static_cast<uint8_t>(x * 4), static_cast<uint8_t>(y * 3),
                               static_cast<uint8_t>(128 + (x > 32 ? 60 : -60)),
                               static_cast<uint8_t>(200 - y)});
    }
  }
  Bytes expected(static_cast<size_t>(width) * height * 3);
  openlookout::detail::inverted_cmyk_to_rgb(cmyk.data(), static_cast<size_t>(width) * height,
                                            expected.data());
  for (int subsampling : {TJSAMP_444, TJSAMP_420}) {
    const Bytes jpeg = compress_jpeg(cmyk, width, height, TJPF_CMYK, subsampling, 98);
    CHECK(!jpeg.empty());
    CHECK(find_marker(jpeg, 0xee) != 0);  // the Adobe APP14 segment
    decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out);
    CHECK_EQ(out.width, width);
    CHECK_EQ(out.height, height);
    const Difference d = difference(out.pixels, expected);
    CHECK(d.mean < 2.0);
    CHECK(d.max <= 40);
  }
}

TEST(jpeg_every_truncation_is_an_error) {
  Decoder decoder;
  RgbImage out;
  for (int extra_flags : {0, TJFLAG_PROGRESSIVE}) {
    const Bytes jpeg = make_rgb_jpeg(24, 16, TJSAMP_420, extra_flags);
    for (size_t size = 0; size < jpeg.size(); ++size) {
      const Bytes prefix(jpeg.begin(), jpeg.begin() + size);
      if (decode_outcome(decoder, prefix, ImageFormat::Jpeg, small_image_limits(), out) !=
          Outcome::Validation) {
        olt::fail(__FILE__, __LINE__, "prefix of " + std::to_string(size) + " bytes did not fail");
        break;
      }
      CHECK_EQ(out.width, 0);
    }
  }
  const Bytes jpeg = make_rgb_jpeg(24, 16, TJSAMP_420);
  const Bytes cut(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  CHECK(contains(error_message([&] {
                   decoder.decode(cut.data(), cut.size(), ImageFormat::Jpeg, small_image_limits(), out);
                 }),
                 "corrupt or truncated JPEG: "));
}

TEST(jpeg_corrupted_bytes_never_crash) {
  Decoder decoder;
  RgbImage out;
  Lcg random{2024};
  int other_errors = 0;
  for (int extra_flags : {0, TJFLAG_PROGRESSIVE}) {
    const Bytes jpeg = make_rgb_jpeg(40, 24, TJSAMP_420, extra_flags);
    for (int trial = 0; trial < 400; ++trial) {
      Bytes body = jpeg;
      for (int flips = 1 + static_cast<int>(random.below(4)); flips > 0; --flips) {
        // Keep the signature so the JPEG decoder, not the sniffing, sees the damage.
        const size_t pos = 3 + random.below(static_cast<uint32_t>(body.size() - 3));
        body[pos] ^= static_cast<uint8_t>(1 + random.below(255));
      }
      if (decode_outcome(decoder, body, ImageFormat::Jpeg, small_image_limits(), out) ==
          Outcome::OtherError) {
        ++other_errors;
      }
    }
  }
  CHECK_EQ(other_errors, 0);
  // The decoder is still sound afterwards.
  const Bytes jpeg = make_rgb_jpeg(40, 24, TJSAMP_444);
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out);
  CHECK_EQ(out.width, 40);
}

TEST(jpeg_decoder_recovers_after_a_header_error) {
  // TurboJPEG 2.x leaves its instance mid-header after a libjpeg error in tjDecompressHeader3;
  // reused, it failed the next good image with "Bogus marker length".
  Decoder decoder;
  RgbImage out;
  const Bytes good = make_rgb_jpeg(40, 24, TJSAMP_420);
  Bytes bad = good;
  const size_t dqt = find_marker(bad, 0xdb);
  CHECK(dqt != 0);
  bad[dqt + 2] = 0;
  bad[dqt + 3] = 1;  // a marker length below 2
  for (int round = 0; round < 3; ++round) {
    CHECK_THROWS_KIND(decoder.decode(bad.data(), bad.size(), ImageFormat::Jpeg, small_image_limits(), out),
                      ErrorKind::Validation);
    decoder.decode(good.data(), good.size(), ImageFormat::Jpeg, small_image_limits(), out);
    CHECK_EQ(out.width, 40);
  }
}

TEST(jpeg_huge_frame_header_fails_fast_without_allocating) {
  Decoder decoder;
  RgbImage out;
  Bytes jpeg = make_rgb_jpeg(64, 64, TJSAMP_420);
  const size_t sof = find_marker(jpeg, 0xc0);
  CHECK(sof != 0);
  // SOF0: FF C0, length (2), precision (1), height (2), width (2).
  jpeg[sof + 5] = 0xfd;  // 65000
  jpeg[sof + 6] = 0xe8;
  jpeg[sof + 7] = 0xfd;
  jpeg[sof + 8] = 0xe8;
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_message(
      [&] { decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK_TEXT(message, std::string("image is 65000x65000 pixels; each side must be between 64 and "
                                "4096 (max_side)"));
  CHECK_EQ(out.pixels.capacity(), size_t{0});
  CHECK(elapsed < std::chrono::milliseconds(500));
  // Height 0 (a DNL-style frame) is refused by libjpeg.
  jpeg[sof + 5] = 0;
  jpeg[sof + 6] = 0;
  CHECK_THROWS_KIND(decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out),
                    ErrorKind::Validation);
}

TEST(jpeg_small_image_below_min_side_is_rejected) {
  Decoder decoder;
  RgbImage out;
  const Bytes jpeg = make_rgb_jpeg(32, 100, TJSAMP_444);
  CHECK(contains(error_message([&] {
                   decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out);
                 }),
                 "image is 32x100 pixels"));
}

TEST(jpeg_tables_only_stream_is_rejected) {
  // An "abbreviated table specification": SOI, DQT, EOI. TurboJPEG accepts its header with no
  // image in it.
  Decoder decoder;
  RgbImage out;
  const Bytes jpeg = make_rgb_jpeg(16, 16, TJSAMP_444);
  const size_t dqt = find_marker(jpeg, 0xdb);
  CHECK(dqt != 0);
  const size_t dqt_size = 2 + ((size_t{jpeg[dqt + 2]} << 8) | jpeg[dqt + 3]);
  Bytes tables = {0xff, 0xd8};
  tables.insert(tables.end(), jpeg.begin() + dqt, jpeg.begin() + dqt + dqt_size);
  tables.insert(tables.end(), {0xff, 0xd9});
  CHECK_THROWS_KIND(decoder.decode(tables.data(), tables.size(), ImageFormat::Jpeg, small_image_limits(), out),
                    ErrorKind::Validation);
}

// =============================================================================================
// Buffer reuse

TEST(output_buffer_is_reused_and_cleared_on_error) {
  Decoder decoder;
  RgbImage out;
  const PngFixture png = make_rgb8_png(80, 70);
  decoder.decode(png.png.data(), png.png.size(), ImageFormat::Png, DecodeLimits{}, out);
  const uint8_t* first_buffer = out.pixels.data();
  const size_t capacity = out.pixels.capacity();
  // The same size again, a smaller JPEG, then the PNG again: one buffer throughout.
  const Bytes jpeg = make_rgb_jpeg(72, 64, TJSAMP_420);
  for (int round = 0; round < 3; ++round) {
    decoder.decode(png.png.data(), png.png.size(), ImageFormat::Png, DecodeLimits{}, out);
    CHECK(out.pixels == png.expected_rgb);
    decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, DecodeLimits{}, out);
    CHECK_EQ(out.width, 72);
  }
  CHECK(out.pixels.data() == first_buffer);
  CHECK_EQ(out.pixels.capacity(), capacity);
  // A failure leaves an empty image, not a partial one, and keeps the buffer.
  const Bytes cut(jpeg.begin(), jpeg.begin() + jpeg.size() - 40);
  CHECK_THROWS_KIND(decoder.decode(cut.data(), cut.size(), ImageFormat::Jpeg, DecodeLimits{}, out),
                    ErrorKind::Validation);
  CHECK_EQ(out.width, 0);
  CHECK_EQ(out.height, 0);
  CHECK(out.pixels.empty());
  CHECK_EQ(out.pixels.capacity(), capacity);
}
