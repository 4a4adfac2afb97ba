// libFuzzer target, structure-aware: the input describes a PNG's header, palette, tRNS and raw
// (filtered) scanlines; the harness compresses them and writes a well-formed PNG (valid zlib
// stream, valid CRCs), so every input reaches unfiltering, de-interlacing, bit-depth and palette
// conversion. Decoder::decode's result is compared with a plain libspng decode (png_reference.h).
//
// Input layout (missing bytes read as 0):
//   [0] colour type (mod 5 -> 0, 2, 3, 4, 6)   [1] bit depth (mod the depths valid for the type)
//   [2] bit 0: Adam7; bits 1-2: zlib level 0/1/6/9; bits 3-5: IDAT split size; bit 6: tRNS
//   [3] width - 1 (1..256)  [4] height - 1 (1..64)   [5] palette entries - 1 (palette only)
//   then the palette (3 bytes per entry), the tRNS payload, then the scanline bytes (filter
//   bytes included, taken as given so invalid filter types occur too), zero-padded.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "png_reference.h"

namespace {

struct Reader {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  uint8_t byte() { return at < size ? data[at++] : 0; }
  void bytes(uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = byte();
  }
};

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put_chunk(std::vector<uint8_t>& out, const char* type, const uint8_t* payload, size_t n) {
  put_u32(out, static_cast<uint32_t>(n));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), payload, payload + n);
  put_u32(out, static_cast<uint32_t>(crc32(0, out.data() + start, static_cast<uInt>(n + 4))));
}

// Bytes of the filtered image data: per pass (Adam7) or once, rows of 1 + ceil(w*bpp/8) bytes.
size_t raw_size(uint32_t w, uint32_t h, int bits_per_pixel, bool interlaced) {
  auto rows = [&](uint32_t pw, uint32_t ph) -> size_t {
    if (pw == 0 || ph == 0) return 0;
    return ph * (1 + (static_cast<size_t>(pw) * bits_per_pixel + 7) / 8);
  };
  if (!interlaced) return rows(w, h);
  static const int kPass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                  {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  size_t total = 0;
  for (const auto& p : kPass) {
    const uint32_t pw = w > static_cast<uint32_t>(p[0]) ? (w - p[0] + p[2] - 1) / p[2] : 0;
    const uint32_t ph = h > static_cast<uint32_t>(p[1]) ? (h - p[1] + p[3] - 1) / p[3] : 0;
    total += rows(pw, ph);
  }
  return total;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace openlookout;
  Reader in{data, size};
  static const uint8_t kTypes[5] = {0, 2, 3, 4, 6};
  const uint8_t color_type = kTypes[in.byte() % 5];
  static const uint8_t kGrayDepths[5] = {1, 2, 4, 8, 16};
  static const uint8_t kPaletteDepths[4] = {1, 2, 4, 8};
  static const uint8_t kWideDepths[2] = {8, 16};
  const uint8_t depth_choice = in.byte();
  const uint8_t depth = color_type == 0   ? kGrayDepths[depth_choice % 5]
                        : color_type == 3 ? kPaletteDepths[depth_choice % 4]
                                          : kWideDepths[depth_choice % 2];
  const uint8_t options = in.byte();
  const bool interlaced = options & 1;
  static const int kLevels[4] = {0, 1, 6, 9};
  const int level = kLevels[(options >> 1) & 3];
  static const size_t kSplit[8] = {1, 7, 64, 100, 1000, 4096, 65536, size_t{1} << 30};
  const size_t idat_split = kSplit[(options >> 3) & 7];
  const bool with_trns = (options >> 6) & 1;
  const uint32_t width = 1u + in.byte();
  const uint32_t height = 1u + (in.byte() & 63);
  const int palette_entries = 1 + in.byte();

  static const int kChannels[7] = {1, 0, 3, 1, 2, 0, 4};
  const int bits_per_pixel = kChannels[color_type] * depth;

  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  uint8_t ihdr[13];
  const uint32_t wh[2] = {width, height};
  for (int i = 0; i < 2; ++i)
    for (int b = 0; b < 4; ++b) ihdr[i * 4 + b] = static_cast<uint8_t>(wh[i] >> (24 - 8 * b));
  ihdr[8] = depth;
  ihdr[9] = color_type;
  ihdr[10] = ihdr[11] = 0;
  ihdr[12] = interlaced ? 1 : 0;
  put_chunk(png, "IHDR", ihdr, sizeof ihdr);
  if (color_type == 3) {
    std::vector<uint8_t> palette(3 * static_cast<size_t>(palette_entries));
    in.bytes(palette.data(), palette.size());
    put_chunk(png, "PLTE", palette.data(), palette.size());
  }
  if (with_trns && (color_type == 0 || color_type == 2 || color_type == 3)) {
    const size_t n = color_type == 0 ? 2 : color_type == 2 ? 6 : std::min(palette_entries, 1 + in.byte());
    std::vector<uint8_t> trns(n);
    in.bytes(trns.data(), n);
    put_chunk(png, "tRNS", trns.data(), n);
  }
  std::vector<uint8_t> raw(raw_size(width, height, bits_per_pixel, interlaced));
  const size_t available = in.at < size ? size - in.at : 0;
  std::memcpy(raw.data(), data + in.at, std::min(available, raw.size()));
  uLongf compressed_size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> compressed(compressed_size);
  if (compress2(compressed.data(), &compressed_size, raw.data(), static_cast<uLong>(raw.size()),
                level) != Z_OK)
    openlookout_fuzz::fail("harness", "compress2 failed");
  for (size_t at = 0; at < compressed_size; at += idat_split)
    put_chunk(png, "IDAT", compressed.data() + at, std::min<size_t>(idat_split, compressed_size - at));
  put_chunk(png, "IEND", nullptr, 0);

  static Decoder decoder;
  static RgbImage image;
  DecodeLimits limits;
  limits.min_side = 1;
  const bool decoded = openlookout_fuzz::expect_ok_or_validation(
      [&] { decoder.decode(png.data(), png.size(), ImageFormat::Png, limits, image); });
  if (decoded) openlookout_fuzz::check_image(image, limits);
  openlookout_fuzz::compare_with_reference(png.data(), png.size(), decoded, image, limits);
  return 0;
}
