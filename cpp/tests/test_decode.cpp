// Tests of the decode stage. Every fixture is made here (PNGs with libspng's encoder or by hand,
// JPEGs with TurboJPEG), so the tests need no files. Bit-exactness against Pillow is checked
// outside this suite; here each PNG must decode to exactly the RGB its samples define, and each
// JPEG must round-trip within JPEG's tolerance. The fast PNG path (png_fast.cpp) must take every
// layout it covers and decode it exactly as libspng does, and leave every defective or unusual
// file to libspng, so that Decoder::decode ends as libspng alone would.
#include <libdeflate.h>
#include <spng.h>
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
// From the sanitizer runtime (sanitizer/allocator_interface.h, which gcc does not install).
extern "C" int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void*, size_t), void (*free_hook)(const volatile void*));
#endif

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
// PNGs written byte by byte, for the fast path (png_fast.cpp): each row's filter type, the zlib
// stream, the IDAT split and the other chunks are all chosen here, and any of them can be broken.

// The predictor as the PNG specification defines it, ties going to a, then b.
uint8_t paeth_reference(uint8_t a, uint8_t b, uint8_t c) {
  const int p = int{a} + int{b} - int{c};
  const int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

// What an encoder stores for sample x with left a, above b, above-left c.
uint8_t apply_filter(int type, uint8_t x, uint8_t a, uint8_t b, uint8_t c) {
  switch (type) {
    case 0: return x;
    case 1: return static_cast<uint8_t>(x - a);
    case 2: return static_cast<uint8_t>(x - b);
    case 3: return static_cast<uint8_t>(x - ((a + b) >> 1));
    default: return static_cast<uint8_t>(x - paeth_reference(a, b, c));
  }
}

// Filters unfiltered rows (row_bytes each, bpp bytes per pixel) with the given filter per row.
Bytes filter_rows(const Bytes& rows, size_t row_bytes, size_t bpp, const std::vector<int>& filters) {
  Bytes out;
  const size_t height = filters.size();
  for (size_t y = 0; y < height; ++y) {
    out.push_back(static_cast<uint8_t>(filters[y]));
    for (size_t i = 0; i < row_bytes; ++i) {
      const uint8_t x = rows[y * row_bytes + i];
      const uint8_t a = i >= bpp ? rows[y * row_bytes + i - bpp] : 0;
      const uint8_t b = y > 0 ? rows[(y - 1) * row_bytes + i] : 0;
      const uint8_t c = (y > 0 && i >= bpp) ? rows[(y - 1) * row_bytes + i - bpp] : 0;
      out.push_back(apply_filter(filters[y], x, a, b, c));
    }
  }
  return out;
}

uint32_t adler32_of(const Bytes& data) {
  return libdeflate_adler32(1, data.data(), data.size());
}

// A zlib stream of stored (uncompressed) blocks, written by hand.
Bytes zlib_stored(const Bytes& data, size_t block_bytes = 65535) {
  Bytes z = {0x78, 0x01};
  size_t at = 0;
  do {
    const size_t n = std::min(block_bytes, data.size() - at);
    const bool last = at + n == data.size();
    z.push_back(last ? 1 : 0);  // BFINAL, BTYPE 00
    z.insert(z.end(), {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8),
                       static_cast<uint8_t>(~n), static_cast<uint8_t>(~n >> 8)});
    z.insert(z.end(), data.begin() + at, data.begin() + at + n);
    at += n;
  } while (at < data.size());
  append_u32_be(z, adler32_of(data));
  return z;
}

// A zlib stream from libdeflate at `level` (0..12; small inputs get static Huffman blocks).
Bytes zlib_deflate(const Bytes& data, int level) {
  libdeflate_compressor* compressor = libdeflate_alloc_compressor(level);
  Bytes z(libdeflate_zlib_compress_bound(compressor, data.size()));
  z.resize(libdeflate_zlib_compress(compressor, data.data(), data.size(), z.data(), z.size()));
  libdeflate_free_compressor(compressor);
  return z;  // empty on failure; the tests check
}

struct PngSpec {
  int width = 16;
  int height = 8;
  uint8_t color_type = 2;  // 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA (all 8-bit)
  int filter = -1;         // 0..4 on every row; -1 random per row; -2 the five in turn
  int palette_entries = 256;
  int max_index = 255;     // palette samples are drawn from 0..max_index
  int level = 6;           // libdeflate level; -1: hand-written stored blocks
  size_t idat_bytes = 0;   // payload per IDAT (0: one IDAT)
  bool empty_idats = false;  // zero-length IDATs first, between the others and last
  bool chunks_before = false;  // tEXt, pHYs, gAMA, sRGB, cHRM, a private ancillary chunk
  bool chunks_after = false;   // tEXt, tIME, zTXt after the IDATs
  uint32_t seed = 1;
};

struct BuiltPng {
  Bytes png;
  Bytes expected_rgb;
  Bytes scanlines;  // the filtered rows, each with its filter byte: what the zlib stream holds
};

int spec_channels(uint8_t color_type) {
  switch (color_type) {
    case 2: return 3;
    case 4: return 2;
    case 6: return 4;
    default: return 1;
  }
}

Bytes ihdr_payload(uint32_t width, uint32_t height, uint8_t bit_depth, uint8_t color_type,
                   uint8_t interlace = 0) {
  Bytes ihdr;
  append_u32_be(ihdr, width);
  append_u32_be(ihdr, height);
  ihdr.insert(ihdr.end(), {bit_depth, color_type, 0, 0, interlace});
  return ihdr;
}

Bytes text_payload(const std::string& keyword, const std::string& text) {
  Bytes payload(keyword.begin(), keyword.end());
  payload.push_back(0);
  payload.insert(payload.end(), text.begin(), text.end());
  return payload;
}

// The IDAT chunks carrying `z`, split as the spec says.
std::vector<PngChunk> idat_chunks(const Bytes& z, size_t idat_bytes, bool empty_idats) {
  std::vector<PngChunk> chunks;
  if (empty_idats) chunks.push_back({"IDAT", {}});
  const size_t step = idat_bytes == 0 ? std::max<size_t>(z.size(), 1) : idat_bytes;
  for (size_t at = 0; at < z.size(); at += step) {
    chunks.push_back({"IDAT", Bytes(z.begin() + at, z.begin() + std::min(z.size(), at + step))});
    if (empty_idats) chunks.push_back({"IDAT", {}});
  }
  return chunks;
}

BuiltPng build_png(const PngSpec& spec) {
  Lcg random{spec.seed};
  const size_t channels = spec_channels(spec.color_type);
  const size_t width = static_cast<size_t>(spec.width), height = static_cast<size_t>(spec.height);
  const size_t row_bytes = width * channels;
  BuiltPng built;

  Bytes palette;
  for (int i = 0; i < spec.palette_entries * 3; ++i) palette.push_back(static_cast<uint8_t>(random.below(256)));

  // Rows of three kinds in turn, so that every predictor meets varied neighbours: noise, smooth
  // gradients, and flat runs with the odd step.
  Bytes rows(row_bytes * height);
  for (size_t y = 0; y < height; ++y) {
    const int kind = static_cast<int>(random.below(3));
    for (size_t i = 0; i < row_bytes; ++i) {
      uint32_t v = 0;
      if (kind == 0) v = random.below(256);
      else if (kind == 1) v = static_cast<uint32_t>(i * 7 + y * 13 + (random.below(5)));
      else v = (i / 9) % 2 == 0 ? 200 : 40 + static_cast<uint32_t>(y);
      if (spec.color_type == 3) v %= static_cast<uint32_t>(spec.max_index + 1);
      rows[y * row_bytes + i] = static_cast<uint8_t>(v);
    }
  }
  for (size_t p = 0; p < width * height; ++p) {
    const uint8_t* px = &rows[p * channels];
    if (spec.color_type == 3) {
      const int index = px[0];
      for (int c = 0; c < 3; ++c) {
        built.expected_rgb.push_back(index < spec.palette_entries ? palette[index * 3 + c] : 0);
      }
    } else if (channels <= 2) {
      built.expected_rgb.insert(built.expected_rgb.end(), {px[0], px[0], px[0]});
    } else {
      built.expected_rgb.insert(built.expected_rgb.end(), {px[0], px[1], px[2]});
    }
  }

  std::vector<int> filters(height);
  for (size_t y = 0; y < height; ++y) {
    filters[y] = spec.filter >= 0 ? spec.filter
                 : spec.filter == -1 ? static_cast<int>(random.below(5))
                                     : static_cast<int>(y % 5);
  }
  built.scanlines = filter_rows(rows, row_bytes, channels, filters);
  const Bytes z = spec.level < 0 ? zlib_stored(built.scanlines) : zlib_deflate(built.scanlines, spec.level);

  std::vector<PngChunk> chunks;
  chunks.push_back({"IHDR", ihdr_payload(static_cast<uint32_t>(spec.width),
                                         static_cast<uint32_t>(spec.height), 8, spec.color_type)});
  if (spec.chunks_before) {
    chunks.push_back({"tEXt", text_payload("Software", "openlookout tests")});
    chunks.push_back({"pHYs", {0, 0, 0x0b, 0x13, 0, 0, 0x0b, 0x13, 1}});
    chunks.push_back({"gAMA", {0, 0, 0xb1, 0x8f}});
    chunks.push_back({"sRGB", {0}});
    chunks.push_back({"prVt", {1, 2, 3}});  // private, ancillary: skipped
  }
  if (spec.color_type == 3) chunks.push_back({"PLTE", palette});
  for (auto& idat : idat_chunks(z, spec.idat_bytes, spec.empty_idats)) chunks.push_back(idat);
  if (spec.chunks_after) {
    chunks.push_back({"tEXt", text_payload("Comment", "after the image data")});
    chunks.push_back({"tIME", {0x07, 0xe8, 1, 2, 3, 4, 5}});
    const Bytes text = text_payload("Note", "");
    Bytes ztxt = {'N', 'o', 't', 'e', 0, 0};
    const Bytes compressed = zlib_deflate(Bytes(200, 'z'), 6);
    ztxt.insert(ztxt.end(), compressed.begin(), compressed.end());
    chunks.push_back({"zTXt", ztxt});
  }
  chunks.push_back({"IEND", {}});
  built.png = join_chunks(chunks);
  return built;
}

// The outcome of one decode, comparable across decoders.
struct DecodeResult {
  bool decoded = false;
  std::string error;  // when not decoded
  int width = 0, height = 0;
  Bytes pixels;
  bool operator==(const DecodeResult& other) const {
    return decoded == other.decoded && width == other.width && height == other.height &&
           pixels == other.pixels;
  }
};

DecodeResult result_of(const std::function<void(RgbImage&)>& decode) {
  DecodeResult result;
  RgbImage out;
  try {
    decode(out);
    result.decoded = true;
    result.width = out.width;
    result.height = out.height;
    result.pixels = out.pixels;
  } catch (const openlookout::Error& e) {
    result.error = e.kind() == ErrorKind::Validation ? e.what() : std::string("NOT VALIDATION: ") + e.what();
  }
  return result;
}

// libspng alone: the reference.
DecodeResult libspng_result(const Bytes& png, const DecodeLimits& limits) {
  return result_of([&](RgbImage& out) {
    openlookout::detail::decode_png_with_libspng(png.data(), png.size(), limits, out);
  });
}

// The production path (fast path, libspng where it declines), through Decoder::decode.
DecodeResult decoder_result(const Bytes& png, const DecodeLimits& limits) {
  Decoder decoder;
  return result_of([&](RgbImage& out) {
    decoder.decode(png.data(), png.size(), ImageFormat::Png, limits, out);
  });
}

// Whether the fast path alone decodes `png`, and if so to what.
struct FastOutcome {
  bool decoded = false;
  std::string declined_because;
  Bytes pixels;
};

FastOutcome fast_outcome(const Bytes& png, const DecodeLimits& limits, bool scalar = false) {
  openlookout::detail::PngDecoder decoder;
  decoder.use_scalar_kernels_for_testing(scalar);
  RgbImage out;
  const auto result = decoder.decode_fast(png.data(), png.size(), limits, out);
  FastOutcome outcome;
  outcome.decoded = result.decoded;
  if (result.declined_because != nullptr) outcome.declined_because = result.declined_because;
  if (result.decoded) outcome.pixels = out.pixels;
  return outcome;
}

// Rewrites every chunk's CRC to match its contents, so that damage inside a chunk reaches the
// parsers behind the CRC check. Stops at the first chunk that runs past the end.
void fix_crcs(Bytes& png) {
  size_t at = kPngSignature.size();
  while (at + 12 <= png.size()) {
    const uint32_t length = read_u32_be(&png[at]);
    if (length > png.size() - at - 12) break;
    const uint32_t crc = crc32_of(&png[at + 4], size_t{length} + 4);
    for (int i = 0; i < 4; ++i) png[at + 8 + length + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    at += 12 + length;
  }
}

std::string describe(const PngSpec& s) {
  return "colour type " + std::to_string(s.color_type) + ", " + std::to_string(s.width) + "x" +
         std::to_string(s.height) + ", filter " + std::to_string(s.filter) + ", level " +
         std::to_string(s.level) + ", IDAT bytes " + std::to_string(s.idat_bytes) +
         (s.empty_idats ? ", empty IDATs" : "") + ", seed " + std::to_string(s.seed);
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
// PNG fast path (png_fast.cpp) against libspng

namespace {

// Checks that `png` takes the fast path and decodes to exactly what libspng and the spec give,
// with the SIMD and the scalar kernels alike.
void check_fast_path_matches(const PngSpec& spec, const char* file, int line) {
  const BuiltPng built = build_png(spec);
  const DecodeLimits limits = small_image_limits();
  const DecodeResult reference = libspng_result(built.png, limits);
  if (!reference.decoded || reference.pixels != built.expected_rgb) {
    olt::fail(file, line, "libspng does not decode the fixture as specified: " + describe(spec) +
                              " " + reference.error);
    return;
  }
  for (bool scalar : {false, true}) {
    const FastOutcome fast = fast_outcome(built.png, limits, scalar);
    if (!fast.decoded) {
      olt::fail(file, line, "fast path declined (" + fast.declined_because + "): " + describe(spec));
    } else if (fast.pixels != reference.pixels) {
      olt::fail(file, line, std::string("fast path pixels differ from libspng's") +
                                (scalar ? " (scalar kernels): " : ": ") + describe(spec));
    }
  }
  if (!(decoder_result(built.png, limits) == reference)) {
    olt::fail(file, line, "Decoder::decode differs from libspng: " + describe(spec));
  }
}
#define CHECK_FAST_PATH_MATCHES(spec) check_fast_path_matches((spec), __FILE__, __LINE__)

// Checks that the fast path declines `png` and that Decoder::decode ends as libspng does.
// Returns libspng's result.
DecodeResult check_declined_and_as_libspng(const Bytes& png, const std::string& what,
                                           const char* file, int line,
                                           const DecodeLimits& limits = small_image_limits()) {
  const DecodeResult reference = libspng_result(png, limits);
  const FastOutcome fast = fast_outcome(png, limits);
  if (fast.decoded) olt::fail(file, line, what + ": the fast path decoded it");
  const DecodeResult production = decoder_result(png, limits);
  if (!(production == reference)) {
    olt::fail(file, line, what + ": Decoder::decode (" +
                              (production.decoded ? "decoded" : production.error) +
                              ") differs from libspng (" +
                              (reference.decoded ? "decoded" : reference.error) + ")");
  }
  return reference;
}

// The defect makes libspng (so Decoder::decode) fail with a Validation error, the fast path
// having declined.
void check_rejected(const Bytes& png, const std::string& what, const char* file, int line) {
  const DecodeResult reference = check_declined_and_as_libspng(png, what, file, line);
  if (reference.decoded) {
    olt::fail(file, line, what + ": decoded, expected an error");
  } else if (!contains(reference.error, "corrupt or truncated PNG: ")) {
    olt::fail(file, line, what + ": unexpected error \"" + reference.error + "\"");
  }
}
#define CHECK_REJECTED(png, what) check_rejected((png), (what), __FILE__, __LINE__)

// libspng decodes the file despite the oddity (it stops reading at the last scanline), the fast
// path declines it, and Decoder::decode gives libspng's image.
void check_left_to_libspng_which_decodes(const Bytes& png, const std::string& what,
                                         const Bytes& expected_rgb, const char* file, int line) {
  const DecodeResult reference = check_declined_and_as_libspng(png, what, file, line);
  if (!reference.decoded) {
    olt::fail(file, line, what + ": libspng refuses it: " + reference.error);
  } else if (reference.pixels != expected_rgb) {
    olt::fail(file, line, what + ": unexpected pixels");
  }
}
#define CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(png, what, expected) \
  check_left_to_libspng_which_decodes((png), (what), (expected), __FILE__, __LINE__)

// The chunks of a built PNG, and the index of the first one of `type`.
size_t index_of(const std::vector<PngChunk>& chunks, const std::string& type, size_t nth = 0) {
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].type == type && nth-- == 0) return i;
  }
  return chunks.size();
}

// The file with the chunk at `index` replaced by raw bytes (framing included).
Bytes with_raw_chunk(const std::vector<PngChunk>& chunks, size_t index, const Bytes& raw) {
  Bytes png = kPngSignature;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i == index) {
      png.insert(png.end(), raw.begin(), raw.end());
    } else {
      append_chunk(png, chunks[i].type.c_str(), chunks[i].payload);
    }
  }
  return png;
}

// Offset of the CRC of the chunk at `index` in the joined file.
size_t crc_offset(const std::vector<PngChunk>& chunks, size_t index) {
  size_t at = kPngSignature.size();
  for (size_t i = 0; i < index; ++i) at += 12 + chunks[i].payload.size();
  return at + 8 + chunks[index].payload.size();
}

}  // namespace

TEST(png_fast_path_matches_libspng_on_every_layout_and_filter) {
  // Every covered colour type x every filter type (and mixes), at widths that leave partial
  // SIMD blocks, with stored blocks, static and dynamic Huffman blocks.
  const int levels[] = {-1, 0, 1, 6, 12};
  int case_number = 0;
  for (uint8_t color_type : {0, 2, 3, 4, 6}) {
    for (int filter : {0, 1, 2, 3, 4, -1, -2}) {
      for (int width : {1, 2, 3, 5, 16, 17, 63}) {
        PngSpec spec;
        spec.color_type = color_type;
        spec.filter = filter;
        spec.width = width;
        spec.height = 1 + case_number % 9;
        spec.level = levels[case_number % 5];
        spec.seed = static_cast<uint32_t>(100 + case_number);
        ++case_number;
        CHECK_FAST_PATH_MATCHES(spec);
      }
    }
  }
}

TEST(png_fast_path_matches_libspng_on_random_chunk_arrangements) {
  // Multiple IDATs (down to one byte each), zero-length IDATs, ancillary chunks before and after
  // the image data, palettes shorter than the indices, larger images.
  Lcg random{4242};
  for (int trial = 0; trial < 250; ++trial) {
    PngSpec spec;
    const uint8_t color_types[] = {0, 2, 3, 4, 6};
    spec.color_type = color_types[random.below(5)];
    spec.width = 1 + static_cast<int>(random.below(trial % 10 == 0 ? 700 : 90));
    spec.height = 1 + static_cast<int>(random.below(trial % 10 == 0 ? 60 : 20));
    spec.filter = static_cast<int>(random.below(7)) - 2;
    spec.level = static_cast<int>(random.below(14)) - 1;
    const size_t splits[] = {0, 0, 1, 2, 7, 100, 4096};
    spec.idat_bytes = splits[random.below(7)];
    spec.empty_idats = random.below(4) == 0;
    spec.chunks_before = random.below(2) == 0;
    spec.chunks_after = random.below(2) == 0;
    spec.palette_entries = 1 + static_cast<int>(random.below(256));
    spec.max_index = random.below(3) == 0 ? 255 : spec.palette_entries - 1;
    spec.seed = 1000u + static_cast<uint32_t>(trial);
    CHECK_FAST_PATH_MATCHES(spec);
  }
}

TEST(png_fast_path_large_rows_and_pillow_like_splits) {
  // Rows far longer than a SIMD block, IDATs of 64 KiB as Pillow writes them.
  for (uint8_t color_type : {0, 2, 3, 4, 6}) {
    PngSpec spec;
    spec.color_type = color_type;
    spec.width = 1031;
    spec.height = 67;
    spec.filter = -2;
    spec.level = 6;
    spec.idat_bytes = 65536;
    spec.seed = 77u + color_type;
    CHECK_FAST_PATH_MATCHES(spec);
  }
}

TEST(png_palette_index_past_the_palette_is_black) {
  // libspng looks indices up in a zeroed 256-entry table and Pillow pads the palette with black:
  // both give (0, 0, 0), and so does the fast path. Not an error.
  PngSpec spec;
  spec.color_type = 3;
  spec.width = 40;
  spec.height = 9;
  spec.palette_entries = 5;
  spec.max_index = 255;
  spec.seed = 9;
  const BuiltPng built = build_png(spec);
  int past_the_end = 0;
  for (size_t p = 0; p < built.expected_rgb.size() / 3; ++p) {
    // build_png's expectation puts black there.
    const uint8_t* px = &built.expected_rgb[3 * p];
    past_the_end += (px[0] | px[1] | px[2]) == 0 ? 1 : 0;
  }
  CHECK(past_the_end > 100);
  CHECK_FAST_PATH_MATCHES(spec);
}

TEST(png_common_ancillary_chunks_keep_the_fast_path) {
  // What cameras, Pillow, Photoshop and exiftool write: all skipped after their CRC check.
  PngSpec spec;
  spec.width = 33;
  spec.height = 12;
  spec.seed = 5;
  const BuiltPng built = build_png(spec);
  std::vector<PngChunk> chunks = split_chunks(built.png);
  const Bytes xmp = text_payload("XML:com.adobe.xmp", std::string(20000, 'x'));
  Bytes itxt(xmp.begin(), xmp.begin() + 18);  // keyword and its terminator
  itxt.insert(itxt.end(), {0, 0, 0, 0});      // not compressed, method, empty language, key
  itxt.insert(itxt.end(), xmp.begin() + 18, xmp.end());
  Bytes iccp = {'I', 'C', 'C', 0, 0};
  const Bytes profile = zlib_deflate(Bytes(3144, 7), 9);
  iccp.insert(iccp.end(), profile.begin(), profile.end());
  const std::vector<PngChunk> extras = {
      {"iCCP", iccp},
      {"cHRM", Bytes(32, 1)},
      {"sBIT", {8, 8, 8}},
      {"iTXt", itxt},
      {"eXIf", {'M', 'M', 0, 42, 0, 0, 0, 8}},
      {"bKGD", {0, 1, 0, 2, 0, 3}},
      {"tRNS", {0, 1, 0, 2, 0, 3}},
      {"gAMA", {0, 0, 0, 0}},  // invalid: libspng drops it and reads on
  };
  chunks.insert(chunks.begin() + 1, extras.begin(), extras.end());
  chunks.insert(chunks.end() - 1, PngChunk{"tEXt", text_payload("Comment", "after")});
  const Bytes png = join_chunks(chunks);
  const FastOutcome fast = fast_outcome(png, small_image_limits());
  CHECK(fast.decoded);
  if (!fast.decoded) olt::fail(__FILE__, __LINE__, "declined: " + fast.declined_because);
  CHECK(fast.pixels == built.expected_rgb);
  CHECK(libspng_result(png, small_image_limits()).pixels == built.expected_rgb);
}

TEST(png_stored_chunks_near_libspng_limits_are_left_to_libspng) {
  // libspng fails a whole file whose text, profile or EXIF chunks pass its limits; the fast path
  // declines long before, and the verdict is libspng's.
  PngSpec spec;
  spec.width = 9;
  spec.height = 4;
  const BuiltPng built = build_png(spec);
  const std::vector<PngChunk> chunks = split_chunks(built.png);
  auto with_before_idat = [&](const std::vector<PngChunk>& extra) {
    std::vector<PngChunk> all = chunks;
    all.insert(all.begin() + 1, extra.begin(), extra.end());
    return join_chunks(all);
  };
  // 1001 text chunks: over libspng's chunk count limit, an error.
  const std::vector<PngChunk> many_texts(1001, PngChunk{"tEXt", text_payload("k", "v")});
  CHECK_REJECTED(with_before_idat(many_texts), "1001 tEXt chunks");
  // 600: libspng decodes, the fast path is no longer sure it would.
  const std::vector<PngChunk> some_texts(600, PngChunk{"tEXt", text_payload("k", "v")});
  CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(with_before_idat(some_texts), "600 tEXt chunks",
                                      built.expected_rgb);
  // A zTXt that inflates to 20 MiB: over the 16 MiB chunk limit, an error.
  Bytes bomb = {'b', 0, 0};
  const Bytes zeros = zlib_deflate(Bytes(size_t{20} << 20, 0), 1);
  bomb.insert(bomb.end(), zeros.begin(), zeros.end());
  CHECK_REJECTED(with_before_idat({{"zTXt", bomb}}), "zTXt inflating to 20 MiB");
  // An empty eXIf: libspng takes it for a failed allocation, an error.
  CHECK_REJECTED(with_before_idat({{"eXIf", {}}}), "empty eXIf");
  // A compressed iTXt of a few hundred bytes is fine; one that might inflate past the limit is
  // left to libspng, which decodes it when it does not.
  Bytes itxt = {'k', 0, 1, 0, 0, 0};
  const Bytes small_text = zlib_deflate(Bytes(1000, 'a'), 6);
  itxt.insert(itxt.end(), small_text.begin(), small_text.end());
  CHECK(fast_outcome(with_before_idat({{"iTXt", itxt}}), small_image_limits()).decoded);
  Bytes big_itxt = {'k', 0, 1, 0, 0, 0};
  Lcg random{3};
  Bytes noise(20000);
  for (auto& b : noise) b = static_cast<uint8_t>(random.below(256));
  const Bytes noisy_text = zlib_deflate(noise, 6);
  big_itxt.insert(big_itxt.end(), noisy_text.begin(), noisy_text.end());
  CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(with_before_idat({{"iTXt", big_itxt}}), "20 KB compressed iTXt",
                                      built.expected_rgb);
}

TEST(png_layouts_outside_the_fast_path_go_to_libspng) {
  // Interlaced, 16-bit and low-depth images decode through libspng (the colour-type test above
  // checks their pixels).
  for (const PngFixture& fixture :
       {make_png(13, 11, SPNG_COLOR_TYPE_TRUECOLOR, 8, true, false),
        make_png(13, 11, SPNG_COLOR_TYPE_TRUECOLOR, 16, false, false),
        make_png(13, 11, SPNG_COLOR_TYPE_INDEXED, 4, false, false),
        make_png(13, 11, SPNG_COLOR_TYPE_GRAYSCALE, 1, false, false)}) {
    const FastOutcome fast = fast_outcome(fixture.png, small_image_limits());
    CHECK(!fast.decoded);
    CHECK(decoder_result(fixture.png, small_image_limits()).pixels == fixture.expected_rgb);
  }
  // libspng's own encoder writes 8-bit RGB that the fast path does take.
  const PngFixture rgb = make_rgb8_png(31, 7, 4);
  CHECK(fast_outcome(rgb.png, small_image_limits()).pixels == rgb.expected_rgb);
}

TEST(png_damaged_chunks_are_errors) {
  PngSpec spec;
  spec.color_type = 3;
  spec.width = 21;
  spec.height = 10;
  spec.idat_bytes = 60;  // several IDATs
  spec.chunks_before = true;
  spec.chunks_after = true;
  const BuiltPng built = build_png(spec);
  const std::vector<PngChunk> chunks = split_chunks(built.png);
  CHECK(fast_outcome(built.png, small_image_limits()).decoded);
  const size_t idats = static_cast<size_t>(std::count_if(
      chunks.begin(), chunks.end(), [](const PngChunk& c) { return c.type == "IDAT"; }));
  CHECK(idats >= 3);

  // A wrong CRC on any chunk up to IEND: IHDR, the text and private chunks before the image,
  // PLTE, the first, a middle and the last IDAT, the chunks after, IEND.
  for (size_t i = 0; i < chunks.size(); ++i) {
    Bytes png = built.png;
    png[crc_offset(chunks, i) + (i % 4)] ^= 0x10;
    CHECK_REJECTED(png, "bad CRC on " + chunks[i].type + " (chunk " + std::to_string(i) + ")");
  }

  auto with = [&](std::vector<PngChunk> edited) { return join_chunks(edited); };
  const size_t plte = index_of(chunks, "PLTE");
  const size_t first_idat = index_of(chunks, "IDAT");
  const size_t iend = chunks.size() - 1;
  {
    std::vector<PngChunk> edited = chunks;
    edited.erase(edited.begin() + static_cast<std::ptrdiff_t>(plte));
    CHECK_REJECTED(with(edited), "palette image without PLTE");
  }
  {
    std::vector<PngChunk> edited = chunks;
    edited[plte].payload.resize(3 * 257, 1);
    CHECK_REJECTED(with(edited), "PLTE of 257 entries");
    edited[plte].payload.resize(3 * 5 + 1);
    CHECK_REJECTED(with(edited), "PLTE length not a multiple of 3");
    edited[plte].payload.clear();
    CHECK_REJECTED(with(edited), "empty PLTE");
  }
  {
    std::vector<PngChunk> edited = chunks;
    edited.pop_back();
    CHECK_REJECTED(with(edited), "no IEND");
    edited = chunks;
    edited[iend].payload = {0};
    CHECK_REJECTED(with(edited), "IEND with data");
    edited = chunks;
    edited.insert(edited.begin() + static_cast<std::ptrdiff_t>(first_idat), PngChunk{"IEND", {}});
    CHECK_REJECTED(with(edited), "IEND before the IDATs");
  }
  {
    std::vector<PngChunk> edited = chunks;
    edited.insert(edited.begin() + static_cast<std::ptrdiff_t>(first_idat + 1),
                  PngChunk{"tEXt", text_payload("between", "IDATs")});
    CHECK_REJECTED(with(edited), "a chunk between two IDATs");
    // The whole stream in the first IDAT, an empty one after another chunk: still out of order.
    edited = split_chunks(build_png(PngSpec{}).png);
    edited.insert(edited.end() - 1, PngChunk{"tEXt", text_payload("k", "v")});
    edited.insert(edited.end() - 1, PngChunk{"IDAT", {}});
    CHECK_REJECTED(with(edited), "an empty IDAT after a chunk after the IDATs");
    edited = chunks;
    edited.insert(edited.begin() + 1, PngChunk{"CRIT", {1, 2}});
    CHECK_REJECTED(with(edited), "unknown critical chunk before the image");
    edited = chunks;
    edited.insert(edited.end() - 1, PngChunk{"CRIT", {}});
    CHECK_REJECTED(with(edited), "unknown critical chunk after the image");
    edited = chunks;
    edited.insert(edited.begin() + 1, chunks[0]);
    CHECK_REJECTED(with(edited), "second IHDR");
    edited = chunks;
    edited.insert(edited.begin() + 1, PngChunk{"IDAT", {}});
    edited.insert(edited.begin() + 2, PngChunk{"tEXt", text_payload("k", "v")});
    CHECK_REJECTED(with(edited), "an empty IDAT before PLTE");
  }
  // Chunk lengths past what PNG allows, on an ancillary chunk and on an IDAT.
  for (uint32_t length : {0xffffffffu, 0x80000000u, 0x7fffffffu}) {
    for (size_t index : {size_t{1}, first_idat}) {
      Bytes raw;
      append_u32_be(raw, length);
      raw.insert(raw.end(), chunks[index].type.begin(), chunks[index].type.end());
      raw.insert(raw.end(), chunks[index].payload.begin(), chunks[index].payload.end());
      append_u32_be(raw, 0);
      CHECK_REJECTED(with_raw_chunk(chunks, index, raw),
                     "length " + std::to_string(length) + " on " + chunks[index].type);
    }
  }
}

TEST(png_bad_headers_are_errors) {
  PngSpec spec;
  spec.width = 6;
  spec.height = 5;
  const BuiltPng built = build_png(spec);
  const std::vector<PngChunk> chunks = split_chunks(built.png);
  struct BadHeader {
    uint8_t bit_depth, color_type, compression, filter, interlace;
  };
  for (const BadHeader& bad :
       {BadHeader{4, 2, 0, 0, 0}, BadHeader{16, 3, 0, 0, 0}, BadHeader{8, 5, 0, 0, 0},
        BadHeader{1, 6, 0, 0, 0}, BadHeader{4, 4, 0, 0, 0}, BadHeader{3, 0, 0, 0, 0},
        BadHeader{0, 2, 0, 0, 0}, BadHeader{8, 7, 0, 0, 0}, BadHeader{8, 2, 1, 0, 0},
        BadHeader{8, 2, 0, 1, 0}, BadHeader{8, 2, 0, 0, 2}}) {
    std::vector<PngChunk> edited = chunks;
    Bytes& ihdr = edited[0].payload;
    ihdr[8] = bad.bit_depth;
    ihdr[9] = bad.color_type;
    ihdr[10] = bad.compression;
    ihdr[11] = bad.filter;
    ihdr[12] = bad.interlace;
    CHECK_REJECTED(join_chunks(edited), "IHDR depth " + std::to_string(bad.bit_depth) + " type " +
                                            std::to_string(bad.color_type));
  }
  {
    std::vector<PngChunk> edited = chunks;
    edited[0].payload.pop_back();
    CHECK_REJECTED(join_chunks(edited), "12-byte IHDR");
    edited = chunks;
    edited[0].payload.push_back(0);
    CHECK_REJECTED(join_chunks(edited), "14-byte IHDR");
    edited = chunks;
    std::swap(edited[0], edited[1]);
    CHECK_REJECTED(join_chunks(edited), "IDAT before IHDR");
  }
  for (uint32_t side : {0u, 0x80000000u, 0xffffffffu}) {
    std::vector<PngChunk> edited = chunks;
    edited[0].payload = ihdr_payload(side, 5, 8, 2);
    CHECK_REJECTED(join_chunks(edited), "width " + std::to_string(side));
    edited[0].payload = ihdr_payload(6, side, 8, 2);
    CHECK_REJECTED(join_chunks(edited), "height " + std::to_string(side));
  }
}

TEST(png_huge_dimensions_fail_before_allocating_on_every_layout) {
  for (uint8_t color_type : {0, 2, 3, 4, 6}) {
    PngSpec spec;
    spec.color_type = color_type;
    spec.width = 5;
    spec.height = 5;
    std::vector<PngChunk> chunks = split_chunks(build_png(spec).png);
    chunks[0].payload = ihdr_payload(70000, 5000, 8, color_type);
    const Bytes png = join_chunks(chunks);
    Decoder decoder;
    RgbImage out;
    CHECK_TEXT(error_message([&] {
                 decoder.decode(png.data(), png.size(), ImageFormat::Png, DecodeLimits{}, out);
               }),
               std::string("image is 70000x5000 pixels; each side must be between 64 and 4096 (max_side)"));
    CHECK_EQ(out.pixels.capacity(), size_t{0});
    // The fast path reports it itself, identically.
    openlookout::detail::PngDecoder png_decoder;
    CHECK_THROWS_KIND(png_decoder.decode_fast(png.data(), png.size(), DecodeLimits{}, out),
                      ErrorKind::Validation);
    CHECK_EQ(out.pixels.capacity(), size_t{0});
  }
  // A valid header with too little IDAT data for its size is declined before anything is
  // allocated, then refused by libspng.
  std::vector<PngChunk> chunks = split_chunks(build_png(PngSpec{}).png);
  chunks[0].payload = ihdr_payload(4000, 4000, 8, 6);
  CHECK_REJECTED(join_chunks(chunks), "4000x4000 RGBA from a few hundred bytes");
}

TEST(png_zlib_stream_defects) {
  PngSpec spec;
  spec.color_type = 6;
  spec.width = 19;
  spec.height = 7;
  spec.level = 6;
  const BuiltPng built = build_png(spec);
  const Bytes& scanlines = built.scanlines;
  const size_t row_stride = 1 + 19 * 4;
  auto png_with_stream = [&](const Bytes& z, size_t idat_bytes = 0) {
    std::vector<PngChunk> chunks = {{"IHDR", ihdr_payload(19, 7, 8, 6)}};
    for (auto& idat : idat_chunks(z, idat_bytes, false)) chunks.push_back(idat);
    chunks.push_back({"IEND", {}});
    return join_chunks(chunks);
  };
  const Bytes good = zlib_deflate(scanlines, 6);
  CHECK(fast_outcome(png_with_stream(good), small_image_limits()).decoded);
  CHECK(fast_outcome(png_with_stream(good, 5), small_image_limits()).decoded);

  // Header: another method, a window over 32 KiB, a preset dictionary, a bad check value.
  for (const std::pair<uint8_t, uint8_t>& header :
       {std::pair<uint8_t, uint8_t>{0x79, 0x5c}, {0x88, 0x98}, {0x78, 0xbb}, {0x78, 0x9d}}) {
    Bytes z = good;
    z[0] = header.first;
    z[1] = header.second;
    CHECK_REJECTED(png_with_stream(z), "zlib header " + std::to_string(header.first) + " " +
                                           std::to_string(header.second));
  }
  // Data short of the image: the last row missing, or the stream cut off.
  const Bytes short_rows(scanlines.begin(), scanlines.end() - static_cast<std::ptrdiff_t>(row_stride));
  CHECK_REJECTED(png_with_stream(zlib_deflate(short_rows, 6)), "stream one row short");
  CHECK_REJECTED(png_with_stream(zlib_stored(short_rows)), "stored stream one row short");
  const Bytes stored = zlib_stored(scanlines);
  for (size_t cut : {size_t{10}, stored.size() / 2, size_t{3}}) {
    CHECK_REJECTED(png_with_stream(Bytes(stored.begin(), stored.begin() + static_cast<std::ptrdiff_t>(cut))),
                   "stream cut at " + std::to_string(cut));
  }
  CHECK_REJECTED(png_with_stream(Bytes{}), "IDAT with no data");
  // A wrong Adler-32 that libspng reads (in the IDAT holding the last scanline).
  for (const Bytes& z : {good, stored}) {
    Bytes bad_adler = z;
    bad_adler.back() ^= 0x01;
    CHECK_REJECTED(png_with_stream(bad_adler), "wrong Adler-32");
  }
  // Garbage in the deflate data.
  {
    Bytes z = good;
    for (size_t i = 2; i < z.size() - 4; i += 3) z[i] = static_cast<uint8_t>(z[i] * 7 + 1);
    CHECK_REJECTED(png_with_stream(z), "scrambled deflate data");
  }

  // What libspng lets through, since it stops reading at the last scanline; the fast path
  // leaves them to it. Surplus data after the image (an extra row):
  Bytes long_rows = scanlines;
  long_rows.insert(long_rows.end(), scanlines.begin(),
                   scanlines.begin() + static_cast<std::ptrdiff_t>(row_stride));
  CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(png_with_stream(zlib_deflate(long_rows, 6)),
                                      "one row too many", built.expected_rgb);
  // A stream without its Adler-32, or with a wrong one alone in a last IDAT libspng never reads.
  CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(png_with_stream(Bytes(good.begin(), good.end() - 4)),
                                      "no Adler-32", built.expected_rgb);
  {
    Bytes z = stored;
    z.back() ^= 0x01;
    std::vector<PngChunk> chunks = {{"IHDR", ihdr_payload(19, 7, 8, 6)},
                                    {"IDAT", Bytes(z.begin(), z.end() - 4)},
                                    {"IDAT", Bytes(z.end() - 4, z.end())},
                                    {"IEND", {}}};
    CHECK_LEFT_TO_LIBSPNG_WHICH_DECODES(join_chunks(chunks), "wrong Adler-32 in an unread IDAT",
                                        built.expected_rgb);
  }
  // Bytes after the zlib stream's end, in its IDAT or in more IDATs: ignored by both.
  {
    Bytes z = good;
    z.insert(z.end(), {1, 2, 3, 4, 5});
    for (size_t idat_bytes : {size_t{0}, size_t{7}}) {
      const Bytes png = png_with_stream(z, idat_bytes);
      const FastOutcome fast = fast_outcome(png, small_image_limits());
      CHECK(fast.decoded);
      CHECK(fast.pixels == built.expected_rgb);
      CHECK(libspng_result(png, small_image_limits()).pixels == built.expected_rgb);
    }
  }
}

TEST(png_invalid_filter_types_are_errors) {
  for (uint8_t color_type : {2, 3, 6}) {
    PngSpec spec;
    spec.color_type = color_type;
    spec.width = 11;
    spec.height = 6;
    spec.level = -1;
    const BuiltPng built = build_png(spec);
    const size_t stride = 1 + 11 * static_cast<size_t>(spec_channels(color_type));
    for (size_t row : {size_t{0}, size_t{3}, size_t{5}}) {
      for (uint8_t filter : {5, 128, 255}) {
        Bytes scanlines = built.scanlines;
        scanlines[row * stride] = filter;
        std::vector<PngChunk> chunks = split_chunks(built.png);
        chunks[index_of(chunks, "IDAT")].payload = zlib_stored(scanlines);
        CHECK_REJECTED(join_chunks(chunks), "filter type " + std::to_string(filter) + " on row " +
                                                std::to_string(row) + ", colour type " +
                                                std::to_string(color_type));
      }
    }
  }
}

TEST(png_chunk_order_oddities_end_as_in_libspng) {
  // Arrangements libspng accepts or refuses by its own rules; the fast path declines each and
  // the outcome must be libspng's.
  PngSpec spec;
  spec.color_type = 2;
  spec.width = 7;
  spec.height = 3;
  const BuiltPng rgb = build_png(spec);
  spec.color_type = 3;
  spec.palette_entries = 16;
  spec.max_index = 15;
  const BuiltPng palette = build_png(spec);
  const std::vector<PngChunk> rgb_chunks = split_chunks(rgb.png);
  const std::vector<PngChunk> palette_chunks = split_chunks(palette.png);
  const PngChunk plte = palette_chunks[index_of(palette_chunks, "PLTE")];
  const PngChunk trns_rgb = {"tRNS", {0, 1, 0, 2, 0, 3}};
  const PngChunk bkgd_rgb = {"bKGD", {0, 1, 0, 2, 0, 3}};

  struct Case {
    std::string what;
    std::vector<PngChunk> chunks;
    bool libspng_decodes;
  };
  std::vector<Case> cases;
  {
    std::vector<PngChunk> c = rgb_chunks;  // a suggested palette after a valid tRNS
    c.insert(c.begin() + 1, trns_rgb);
    c.insert(c.begin() + 2, plte);
    cases.push_back({"RGB: PLTE after tRNS", c, false});
    c = rgb_chunks;
    c.insert(c.begin() + 1, bkgd_rgb);
    c.insert(c.begin() + 2, plte);
    cases.push_back({"RGB: PLTE after bKGD", c, false});
    c = palette_chunks;
    c.insert(c.begin() + static_cast<std::ptrdiff_t>(index_of(c, "PLTE")) + 1, plte);
    cases.push_back({"two PLTEs", c, true});
    c = palette_chunks;
    c.insert(c.end() - 1, plte);
    cases.push_back({"PLTE again after the IDATs", c, true});
    c = rgb_chunks;
    c.insert(c.end() - 1, plte);
    cases.push_back({"RGB: PLTE after the IDATs", c, true});
    c = palette_chunks;  // tRNS before PLTE in a palette image: dropped by libspng
    c.insert(c.begin() + 1, PngChunk{"tRNS", {1, 2}});
    cases.push_back({"palette: tRNS before PLTE", c, true});
  }
  for (const Case& c : cases) {
    const DecodeResult reference =
        check_declined_and_as_libspng(join_chunks(c.chunks), c.what, __FILE__, __LINE__);
    if (reference.decoded != c.libspng_decodes) {
      olt::fail(__FILE__, __LINE__,
                c.what + ": libspng " + (reference.decoded ? "decodes" : "refuses") + " it");
    }
  }
  // A tRNS after PLTE, as Pillow writes transparency, keeps the fast path.
  std::vector<PngChunk> c = palette_chunks;
  c.insert(c.begin() + static_cast<std::ptrdiff_t>(index_of(c, "PLTE")) + 1, PngChunk{"tRNS", {0, 128, 255}});
  CHECK(fast_outcome(join_chunks(c), small_image_limits()).pixels == palette.expected_rgb);
}

TEST(png_fast_path_every_truncation_is_an_error) {
  PngSpec spec;
  spec.color_type = 3;
  spec.width = 14;
  spec.height = 9;
  spec.idat_bytes = 40;
  spec.empty_idats = true;
  spec.chunks_before = true;
  spec.chunks_after = true;
  const BuiltPng built = build_png(spec);
  CHECK(fast_outcome(built.png, small_image_limits()).decoded);
  Decoder decoder;
  RgbImage out;
  // As in png_every_truncation_is_an_error: only cuts inside IEND's CRC still decode.
  const size_t iend_crc_offset = built.png.size() - 4;
  for (size_t size = 8; size < built.png.size(); ++size) {
    const Bytes prefix(built.png.begin(), built.png.begin() + static_cast<std::ptrdiff_t>(size));
    const Outcome outcome = decode_outcome(decoder, prefix, ImageFormat::Png, small_image_limits(), out);
    const Outcome expected = size >= iend_crc_offset ? Outcome::Decoded : Outcome::Validation;
    if (outcome != expected) {
      olt::fail(__FILE__, __LINE__, "prefix of " + std::to_string(size) + " bytes");
      break;
    }
    if (outcome == Outcome::Decoded) CHECK(out.pixels == built.expected_rgb);
  }
}

TEST(png_random_damage_ends_as_in_libspng) {
  // A small differential fuzz: bytes flipped anywhere, or inside chunks with the CRCs fixed so
  // that zlib, the filters and the chunk rules see the damage. Whatever libspng makes of each
  // file, Decoder::decode must make the same (success with the same pixels, or an error).
  std::vector<BuiltPng> bases;
  const uint8_t color_types[] = {2, 3, 6, 0, 4};
  for (int i = 0; i < 5; ++i) {
    PngSpec spec;
    spec.color_type = color_types[i];
    spec.width = 12 + 5 * i;
    spec.height = 6 + i;
    spec.level = i == 0 ? -1 : 3 * i;
    spec.idat_bytes = i % 2 == 0 ? 0 : 37;
    spec.chunks_before = i % 2 == 1;
    spec.chunks_after = i >= 3;
    spec.palette_entries = 200;
    spec.max_index = 220;
    spec.seed = 600u + static_cast<uint32_t>(i);
    bases.push_back(build_png(spec));
  }
  Lcg random{31337};
  int compared = 0, decoded = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    Bytes png = bases[static_cast<size_t>(trial) % bases.size()].png;
    const int flips = 1 + static_cast<int>(random.below(3));
    for (int f = 0; f < flips; ++f) {
      const size_t at = 8 + random.below(static_cast<uint32_t>(png.size() - 8));
      if (random.below(2) == 0) {
        png[at] ^= static_cast<uint8_t>(1u << random.below(8));
      } else {
        png[at] = static_cast<uint8_t>(random.below(256));
      }
    }
    if (trial % 3 != 0) fix_crcs(png);
    const DecodeResult reference = libspng_result(png, small_image_limits());
    const DecodeResult production = decoder_result(png, small_image_limits());
    ++compared;
    decoded += reference.decoded ? 1 : 0;
    if (!(production == reference) || contains(production.error, "NOT VALIDATION")) {
      olt::fail(__FILE__, __LINE__, "trial " + std::to_string(trial) + ": libspng " +
                                        (reference.decoded ? "decodes" : reference.error) +
                                        ", Decoder::decode " +
                                        (production.decoded ? "decodes" : production.error));
    }
  }
  CHECK_EQ(compared, 1500);
  CHECK(decoded > 50);  // the damage is not all fatal: decoded images were compared too
}

namespace {

// Writes DEFLATE's bit stream: values LSB first, Huffman codes MSB first.
struct BitWriter {
  Bytes bytes;
  int used = 8;  // bits used in the last byte
  void bit(int b) {
    if (used == 8) {
      bytes.push_back(0);
      used = 0;
    }
    bytes.back() = static_cast<uint8_t>(bytes.back() | (b << used++));
  }
  void value(uint32_t v, int bits) {
    for (int i = 0; i < bits; ++i) bit((v >> i) & 1);
  }
  void code(uint32_t c, int bits) {
    for (int i = bits - 1; i >= 0; --i) bit((c >> i) & 1);
  }
  // A literal/length symbol in the fixed Huffman code.
  void fixed_symbol(int symbol) {
    if (symbol < 144) code(0x30 + static_cast<uint32_t>(symbol), 8);
    else if (symbol < 256) code(0x190 + static_cast<uint32_t>(symbol - 144), 9);
    else if (symbol < 280) code(static_cast<uint32_t>(symbol - 256), 7);
    else code(0xc0 + static_cast<uint32_t>(symbol - 280), 8);
  }
};

}  // namespace

TEST(png_known_difference_libdeflate_accepts_rfc_invalid_length_symbols) {
  // png_fast.cpp's one documented difference from libspng: libdeflate reads the reserved
  // literal/length symbols 286 and 287 as a length of 258, where zlib stops with "invalid
  // literal/length code". No encoder writes them; a stream that uses one in place of 285 still
  // matches its Adler-32, and decodes on the fast path where libspng refuses it. If libdeflate
  // ever rejects these, this test fails: the comment in png_fast.cpp must then go.
  const size_t width = 300;
  Bytes scanline(1 + width, 0);  // filter None, all black
  for (int length_symbol : {285, 286, 287}) {
    BitWriter bits;
    bits.value(1, 1);  // BFINAL
    bits.value(1, 2);  // fixed Huffman
    bits.fixed_symbol(0);              // the filter byte
    bits.fixed_symbol(0);              // the first sample
    bits.fixed_symbol(length_symbol);  // 258 more (285, or a reserved one)
    bits.code(0, 5);                   // distance 1
    bits.fixed_symbol(273);            // 35 + 6 = 41 more: the row's 300
    bits.value(6, 3);
    bits.code(0, 5);
    bits.fixed_symbol(256);            // end of block
    Bytes z = {0x78, 0x01};
    z.insert(z.end(), bits.bytes.begin(), bits.bytes.end());
    append_u32_be(z, adler32_of(scanline));
    const Bytes png = join_chunks({{"IHDR", ihdr_payload(width, 1, 8, 0)}, {"IDAT", z}, {"IEND", {}}});
    const FastOutcome fast = fast_outcome(png, small_image_limits());
    CHECK(fast.decoded);
    if (!fast.decoded) olt::fail(__FILE__, __LINE__, "declined: " + fast.declined_because);
    CHECK(fast.pixels == Bytes(width * 3, 0));
    const DecodeResult reference = libspng_result(png, small_image_limits());
    if (length_symbol == 285) {
      CHECK(reference.decoded);
    } else {
      CHECK(!reference.decoded);
      CHECK(contains(reference.error, "IDAT stream error"));
    }
  }
}

TEST(png_known_difference_libdeflate_accepts_a_match_without_distance_codes) {
  // The same difference, as the mutation fuzzer met it: a dynamic Huffman block whose distance
  // code is empty, yet with a match in it. libdeflate reads the match's distance as 1; zlib stops
  // with "invalid distance code".
  BitWriter bits;
  bits.value(1, 1);   // BFINAL
  bits.value(2, 2);   // dynamic Huffman
  bits.value(1, 5);   // HLIT: 258 literal/length codes (0..257)
  bits.value(0, 5);   // HDIST: 1 distance code
  bits.value(14, 4);  // HCLEN: 18 code length codes, enough to reach symbol 1's slot
  // Code length code lengths in their transmission order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13
  // 2 14 1: symbols 0, 1, 2 and 18 get 2 bits each (codes 00, 01, 10, 11), the rest none.
  const int order_lengths[18] = {0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2};
  for (int length : order_lengths) bits.value(static_cast<uint32_t>(length), 3);
  bits.code(1, 2);                      // literal 0: 1 bit
  bits.code(3, 2);                      // zeros...
  bits.value(127, 7);                   // ...138 of them (symbols 1..138)
  bits.code(3, 2);
  bits.value(106, 7);                   // 117 more (139..255)
  bits.code(2, 2);                      // 256, end of block: 2 bits
  bits.code(2, 2);                      // 257, length 3: 2 bits
  bits.code(0, 2);                      // the only distance code: length 0, an empty code
  bits.code(0, 1);                      // literal 0: the filter byte
  bits.code(3, 2);                      // length 3...
  bits.value(0, 1);                     // ...at a distance from the empty code
  bits.code(2, 2);                      // end of block
  const Bytes scanline(4, 0);           // filter None, three black samples
  Bytes z = {0x78, 0x01};
  z.insert(z.end(), bits.bytes.begin(), bits.bytes.end());
  append_u32_be(z, adler32_of(scanline));
  const Bytes png = join_chunks({{"IHDR", ihdr_payload(3, 1, 8, 0)}, {"IDAT", z}, {"IEND", {}}});
  const FastOutcome fast = fast_outcome(png, small_image_limits());
  CHECK(fast.decoded);
  CHECK(fast.pixels == Bytes(9, 0));
  const DecodeResult reference = libspng_result(png, small_image_limits());
  CHECK(!reference.decoded);
  CHECK(contains(reference.error, "IDAT stream error"));
}

TEST(png_decoder_reuses_its_scratch_across_sizes_and_failures) {
  // One PngDecoder through images of several sizes and layouts, failures in between: each
  // result as from a fresh decoder.
  openlookout::detail::PngDecoder decoder;
  RgbImage out;
  Lcg random{8};
  for (int round = 0; round < 40; ++round) {
    PngSpec spec;
    const uint8_t color_types[] = {0, 2, 3, 4, 6};
    spec.color_type = color_types[random.below(5)];
    spec.width = 1 + static_cast<int>(random.below(300));
    spec.height = 1 + static_cast<int>(random.below(30));
    spec.idat_bytes = random.below(2) == 0 ? 0 : 50;
    spec.seed = static_cast<uint32_t>(round);
    BuiltPng built = build_png(spec);
    if (round % 4 == 3) {
      // A filter byte of 9 in the last row: the fast path inflates, unfilters, then declines.
      Bytes scanlines = built.scanlines;
      scanlines[scanlines.size() - static_cast<size_t>(spec.width * spec_channels(spec.color_type)) - 1] = 9;
      std::vector<PngChunk> chunks = split_chunks(built.png);
      std::vector<PngChunk> rebuilt;
      for (auto& c : chunks) if (c.type != "IDAT") rebuilt.push_back(c);
      rebuilt.insert(rebuilt.end() - 1, PngChunk{"IDAT", zlib_stored(scanlines)});
      const Bytes png = join_chunks(rebuilt);
      CHECK(!decoder.decode_fast(png.data(), png.size(), small_image_limits(), out).decoded);
      continue;
    }
    CHECK(decoder.decode_fast(built.png.data(), built.png.size(), small_image_limits(), out).decoded);
    CHECK(out.pixels == built.expected_rgb);
    CHECK_EQ(out.width, spec.width);
  }
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

// ---------------------------------------------------------------------------------------------
// JPEG limits counted from the markers (DecodeLimits::jpeg_max_*), each at its edge

// The markers a JPEG we encoded has after SOI up to and including its first SOS (TurboJPEG's
// baseline files have one scan and nothing between it and EOI).
size_t markers_through_first_scan(const Bytes& jpeg) {
  size_t pos = 2, count = 0;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xff) {
    ++count;
    if (jpeg[pos + 1] == 0xda) break;
    pos += 2 + ((size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3]);
  }
  return count;
}

// SOS markers: 0xFF 0xDA never occurs inside entropy-coded data (0xFF is stuffed there).
size_t count_sos(const Bytes& jpeg) {
  size_t count = 0;
  for (size_t i = 0; i + 1 < jpeg.size(); ++i) count += jpeg[i] == 0xff && jpeg[i + 1] == 0xda;
  return count;
}

// `jpeg` with `count` empty COM segments after SOI.
Bytes with_comments(const Bytes& jpeg, size_t count) {
  Bytes result(jpeg.begin(), jpeg.begin() + 2);
  for (size_t i = 0; i < count; ++i) result.insert(result.end(), {0xff, 0xfe, 0x00, 0x02});
  result.insert(result.end(), jpeg.begin() + 2, jpeg.end());
  return result;
}

TEST(jpeg_marker_limit_at_its_edge) {
  Decoder decoder;
  RgbImage out;
  const Bytes jpeg = make_rgb_jpeg(24, 16, TJSAMP_420);
  CHECK(!jpeg.empty());
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out);
  const Bytes plain_pixels = out.pixels;
  const size_t base = markers_through_first_scan(jpeg);
  CHECK(base >= 5);  // DQT, SOF, DHT, ..., SOS
  DecodeLimits limits = small_image_limits();
  limits.jpeg_max_markers = base + 3;
  const Bytes at_limit = with_comments(jpeg, 3);
  decoder.decode(at_limit.data(), at_limit.size(), ImageFormat::Jpeg, limits, out);
  CHECK(out.pixels == plain_pixels);
  const Bytes over = with_comments(jpeg, 4);
  CHECK_TEXT(error_message([&] { decoder.decode(over.data(), over.size(), ImageFormat::Jpeg, limits, out); }),
             "JPEG has more than " + std::to_string(base + 3) + " marker segments; at most " +
                 std::to_string(base + 3) + " are accepted (jpeg_max_markers)");
  // The default (2048) takes a file with many comments.
  const Bytes many = with_comments(jpeg, 1000);
  decoder.decode(many.data(), many.size(), ImageFormat::Jpeg, small_image_limits(), out);
  CHECK(out.pixels == plain_pixels);
  // A segment length below 2 hides nothing from the count: libjpeg skips no bytes after such a
  // COM's length field and reads the markers that follow it.
  Bytes short_comment(jpeg.begin(), jpeg.begin() + 2);
  short_comment.insert(short_comment.end(), {0xff, 0xfe, 0x00, 0x00});
  const Bytes rest = with_comments(jpeg, 4);
  short_comment.insert(short_comment.end(), rest.begin() + 2, rest.end());
  limits.jpeg_max_markers = base + 4;
  CHECK(contains(error_message([&] {
                   decoder.decode(short_comment.data(), short_comment.size(), ImageFormat::Jpeg, limits, out);
                 }),
                 "(jpeg_max_markers)"));
}

TEST(jpeg_scan_limits_at_their_edges) {
  Decoder decoder;
  RgbImage out;
  const int width = 24, height = 16;
  const Bytes jpeg = make_rgb_jpeg(width, height, TJSAMP_420, TJFLAG_PROGRESSIVE);
  CHECK(!jpeg.empty());
  const size_t scans = count_sos(jpeg);
  CHECK(scans >= 5);
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out);
  const Bytes pixels = out.pixels;

  DecodeLimits limits = small_image_limits();
  limits.jpeg_max_scans = scans;
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, limits, out);
  CHECK(out.pixels == pixels);
  limits.jpeg_max_scans = scans - 1;
  CHECK_TEXT(error_message([&] { decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, limits, out); }),
             "JPEG has more than " + std::to_string(scans - 1) + " scans; at most " +
                 std::to_string(scans - 1) + " are accepted for a 24x16 image (jpeg_max_scans)");

  limits = small_image_limits();
  const uint64_t pixel_count = uint64_t{width} * height;
  limits.jpeg_max_scan_pixels = scans * pixel_count;
  decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, limits, out);
  CHECK(out.pixels == pixels);
  limits.jpeg_max_scan_pixels = scans * pixel_count - 1;
  CHECK_TEXT(error_message([&] { decoder.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, limits, out); }),
             "JPEG has more than " + std::to_string(scans - 1) + " scans; at most " +
                 std::to_string(scans - 1) + " are accepted for a 24x16 image (jpeg_max_scan_pixels)");
  // A one-scan image is never refused, however small the budget.
  limits.jpeg_max_scan_pixels = 1;
  limits.jpeg_max_scans = 1;
  const Bytes baseline = make_rgb_jpeg(width, height, TJSAMP_420);
  decoder.decode(baseline.data(), baseline.size(), ImageFormat::Jpeg, limits, out);
  CHECK_EQ(out.width, width);
}

// ---------------------------------------------------------------------------------------------
// The reused decompressor and its arena

// `jpeg` without its segments of `marker_code`.
Bytes without_segments(const Bytes& jpeg, uint8_t marker_code) {
  Bytes result(jpeg.begin(), jpeg.begin() + 2);
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xff && jpeg[pos + 1] != 0xda) {
    const size_t segment = 2 + ((size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3]);
    if (jpeg[pos + 1] != marker_code) result.insert(result.end(), jpeg.begin() + pos, jpeg.begin() + pos + segment);
    pos += segment;
  }
  result.insert(result.end(), jpeg.begin() + pos, jpeg.end());
  return result;
}

TEST(jpeg_decoder_forgets_the_previous_images_tables) {
  // A worker's decompressor is reused across requests; a stream that lacks tables must fare as
  // with a fresh one (Pillow's case), not decode with the last request's tables.
  RgbImage out;
  const Bytes previous = make_rgb_jpeg(40, 24, TJSAMP_420, TJFLAG_PROGRESSIVE);  // optimised tables
  const Bytes jpeg = make_rgb_jpeg(40, 24, TJSAMP_420);  // the standard Huffman tables
  // No DQT: an error either way.
  const Bytes no_dqt = without_segments(jpeg, 0xdb);
  CHECK(no_dqt.size() < jpeg.size());
  Decoder fresh;
  const std::string fresh_error = error_message(
      [&] { fresh.decode(no_dqt.data(), no_dqt.size(), ImageFormat::Jpeg, small_image_limits(), out); });
  CHECK(contains(fresh_error, "corrupt or truncated JPEG: Quantization table"));
  Decoder reused;
  reused.decode(previous.data(), previous.size(), ImageFormat::Jpeg, small_image_limits(), out);
  CHECK_TEXT(error_message([&] {
               reused.decode(no_dqt.data(), no_dqt.size(), ImageFormat::Jpeg, small_image_limits(), out);
             }),
             fresh_error);
  // No DHT: libjpeg supplies the standard tables (as for Motion JPEG), which these are.
  const Bytes no_dht = without_segments(jpeg, 0xc4);
  CHECK(no_dht.size() < jpeg.size());
  Decoder reference;
  reference.decode(jpeg.data(), jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out);
  const Bytes expected = out.pixels;
  reused.decode(previous.data(), previous.size(), ImageFormat::Jpeg, small_image_limits(), out);
  reused.decode(no_dht.data(), no_dht.size(), ImageFormat::Jpeg, small_image_limits(), out);
  CHECK(out.pixels == expected);
}

struct JpegFixture {
  const char* name;
  Bytes jpeg;
  openlookout::JpegScaling scaling;
};

std::vector<JpegFixture> varied_jpegs() {
  Bytes cmyk;
  for (int i = 0; i < 72 * 40; ++i) {
    cmyk.insert(cmyk.end(), {static_cast<uint8_t>(i * 7), static_cast<uint8_t>(i / 9), 90, static_cast<uint8_t>(255 - i / 16)});
  }
  Bytes grey(static_cast<size_t>(56) * 48);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = static_cast<uint8_t>(i * 5 / 7);
  return {
      {"baseline 4:2:0", make_rgb_jpeg(96, 80, TJSAMP_420), {}},
      {"progressive 4:2:0", make_rgb_jpeg(96, 80, TJSAMP_420, TJFLAG_PROGRESSIVE), {}},
      {"baseline 4:4:4", make_rgb_jpeg(64, 48, TJSAMP_444), {}},
      {"progressive 4:1:1", make_rgb_jpeg(80, 64, TJSAMP_411, TJFLAG_PROGRESSIVE), {}},
      {"CMYK", compress_jpeg(cmyk, 72, 40, TJPF_CMYK, TJSAMP_420, 95), {}},
      {"progressive CMYK", compress_jpeg(cmyk, 72, 40, TJPF_CMYK, TJSAMP_444, 95, TJFLAG_PROGRESSIVE), {}},
      {"grey", compress_jpeg(grey, 56, 48, TJPF_GRAY, TJSAMP_GRAY, 95), {}},
      {"baseline scaled 1/4", make_rgb_jpeg(96, 80, TJSAMP_420), {20, 20}},
      {"progressive scaled 1/2", make_rgb_jpeg(96, 80, TJSAMP_420, TJFLAG_PROGRESSIVE), {40, 30}},
  };
}

TEST(jpeg_reused_decoder_decodes_like_a_fresh_one) {
  // The arena hands each image memory that held the previous one's rows and coefficients; the
  // pixels must not show it, after good images or after ones that failed half way.
  const std::vector<JpegFixture> fixtures = varied_jpegs();
  std::vector<Bytes> expected;
  for (const JpegFixture& f : fixtures) {
    CHECK(!f.jpeg.empty());
    Decoder fresh;
    RgbImage out;
    fresh.decode(f.jpeg.data(), f.jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out, f.scaling);
    expected.push_back(out.pixels);
  }
  Decoder reused;
  RgbImage out;
  Lcg random{7};
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < fixtures.size(); ++i) {
      const JpegFixture& f = fixtures[(i * 5 + round) % fixtures.size()];
      const Bytes& want = expected[(i * 5 + round) % fixtures.size()];
      // A damaged copy first: truncated mid-scan, or bytes flipped.
      Bytes damaged = f.jpeg;
      if (random.below(2) == 0) {
        damaged.resize(damaged.size() * 2 / 3);
      } else {
        for (int flips = 0; flips < 3; ++flips) damaged[3 + random.below(static_cast<uint32_t>(damaged.size() - 3))] ^= 0x5a;
      }
      CHECK(decode_outcome(reused, damaged, ImageFormat::Jpeg, small_image_limits(), out) != Outcome::OtherError);
      reused.decode(f.jpeg.data(), f.jpeg.size(), ImageFormat::Jpeg, small_image_limits(), out, f.scaling);
      if (out.pixels != want) olt::fail(__FILE__, __LINE__, std::string(f.name) + ": pixels differ from a fresh decoder's");
    }
  }
}

#if defined(__SANITIZE_ADDRESS__)
// Every malloc of the process while `counting` is set (ASan's allocator calls the hook).
std::atomic<long> g_mallocs{0};
std::atomic<bool> g_counting{false};
void count_malloc(const volatile void*, size_t) {
  if (g_counting.load(std::memory_order_relaxed)) g_mallocs.fetch_add(1, std::memory_order_relaxed);
}
void ignore_free(const volatile void*) {}
#endif

TEST(jpeg_warm_decoder_allocates_nothing) {
  // Issue 4: no heap allocation per call in steady state. The arena's own count covers libjpeg's
  // memory; under ASan every malloc of the process is counted too (stage_bench counts them in
  // release builds).
  const std::vector<JpegFixture> fixtures = varied_jpegs();
  openlookout::detail::JpegDecoder decoder;
  RgbImage out;
  // Warm: the largest image first would do; every fixture twice is simpler.
  for (int round = 0; round < 2; ++round) {
    for (const JpegFixture& f : fixtures) decoder.decode(f.jpeg.data(), f.jpeg.size(), small_image_limits(), out, f.scaling);
  }
  // A failed image does not unsettle it either.
  const Bytes cut(fixtures[1].jpeg.begin(), fixtures[1].jpeg.begin() + fixtures[1].jpeg.size() / 2);
  CHECK_THROWS_KIND(decoder.decode(cut.data(), cut.size(), small_image_limits(), out), ErrorKind::Validation);
  const uint64_t blocks = decoder.arena_blocks_allocated();
  CHECK(blocks > 0);
#if defined(__SANITIZE_ADDRESS__)
  static const bool hooked = __sanitizer_install_malloc_and_free_hooks(count_malloc, ignore_free) != 0;
  CHECK(hooked);
  g_mallocs = 0;
  g_counting = true;
#endif
  for (int round = 0; round < 3; ++round) {
    for (const JpegFixture& f : fixtures) decoder.decode(f.jpeg.data(), f.jpeg.size(), small_image_limits(), out, f.scaling);
  }
#if defined(__SANITIZE_ADDRESS__)
  g_counting = false;
  CHECK_EQ(g_mallocs.load(), 0L);
#endif
  CHECK_EQ(decoder.arena_blocks_allocated(), blocks);
  // A bigger image grows the arena once, then settles again.
  const Bytes big = make_rgb_jpeg(400, 320, TJSAMP_420, TJFLAG_PROGRESSIVE);
  decoder.decode(big.data(), big.size(), small_image_limits(), out);
  decoder.decode(big.data(), big.size(), small_image_limits(), out);
  const uint64_t grown = decoder.arena_blocks_allocated();
  CHECK(grown > blocks);
  for (int round = 0; round < 2; ++round) {
    decoder.decode(big.data(), big.size(), small_image_limits(), out);
    for (const JpegFixture& f : fixtures) decoder.decode(f.jpeg.data(), f.jpeg.size(), small_image_limits(), out, f.scaling);
  }
  CHECK_EQ(decoder.arena_blocks_allocated(), grown);
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
