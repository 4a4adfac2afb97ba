// Stage 5: label map -> AnomalyMask PNG (8-bit RGB, IHDR + IDAT + IEND).
//
// Masks are flat colours on white, so the scanlines are filtered to be almost all zeros: a row
// whose labels repeat the row above uses filter Up (all zeros), any other row uses filter Sub
// (per run of one label: the colour difference to the run on its left in the first pixel's 3
// bytes, zeros for the rest of the run).
//
// The usual path (MaskEncoding::Runs) never materialises those scanlines. It walks the label map
// once, keeping each row that differs from the row above as its label runs, and writes the zlib
// stream for the filtered bytes directly from the runs:
//   * one final DEFLATE block with a dynamic Huffman code, built from the symbol counts of a first
//     pass over the runs (so a 2-label mask gets ~2-bit codes and a 255-colour one stays valid);
//   * the only tokens are literals (filter bytes, colour differences, and the zero that starts a
//     zero run) and distance-1 matches, which copy the previous zero; a zero run of n bytes is a
//     literal 0 then (n - 1) / 258 matches of length 258 and one match for the rest. The distance
//     code has two 1-bit entries (only distance 1 is used; two keep the code complete, which every
//     inflater accepts), so a length-258 match costs 2 bits when its symbol gets a 1-bit code, and
//     runs of them are written several per bit-buffer store;
//   * zlib's Adler-32 of the uncompressed stream comes from the tokens: a literal b is the usual
//     s1 += b, s2 += s1; n zero bytes leave s1 alone and add n * s1 to s2 (all mod 65521, reduced
//     lazily).
// The cost is proportional to rows + label runs, plus one memcmp per row against the row above and
// a scan for label changes in rows that differ. Pixel counts per label come from the runs.
//
// Maps with very many runs (checkerboards, noise) go to MaskEncoding::Deflate instead: the same
// filtered scanlines, built in memory and compressed by libdeflate, whose LZ matching finds the
// repeats that runs cannot. The choice is the run count against a budget, checked while scanning.

#include "mask_png.h"

#include <libdeflate.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "errors.h"

namespace openlookout {
namespace {

// Measured on mask-like data (1024^2 .. 4096^2, a few blobs): libdeflate 1.14 level 1 is the
// slowest on long zero runs (about 2x level 2); levels 2..7 take the same time and differ in
// size by under 1%. Level 2 it is.
constexpr int kCompressionLevel = 2;

// Runs path budget: rows + pixels / 32 runs. Each run costs at most ~46 bits (3 colour-difference
// literals, the zero literal, a length symbol with extra bits, a distance bit), so the runs
// stream stays under ~1.5 bits per pixel: 3 MB at 4096 x 4096, inside AnomalyMask's 5,242,880
// bytes. Past it the map is no mask-like picture: periodic patterns (a checkerboard is 8.5 bits per
// pixel as runs, 0.04 through libdeflate) need LZ matching. (Measured at 4096 x 4096 with runs of
// random length and colour, 32 pixels on average: runs 13 ms / 2.6 MB, libdeflate 250 ms / 3.1 MB;
// so the budget is about periodic maps, not about noise.)
constexpr size_t kPixelsPerRunBudget = 32;

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

[[noreturn]] void throw_label_outside_palette(unsigned label, size_t palette_size) {
  throw_internal("mask encoder: label " + std::to_string(label) + " has no colour (palette of " +
                 std::to_string(palette_size) + ")");
}

// ------------------------------------------------------------------------------------------
// Deflate path: filtered scanlines in memory, libdeflate.

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
    if (row_max >= palette_size) throw_label_outside_palette(row_max, palette_size);
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

// Compresses the filtered scanlines into scratch.deflated; returns the stream's size.
size_t deflate_scanlines(const uint8_t* labels, size_t w, size_t h, const Rgb* palette,
                         size_t palette_size, MaskEncoderScratch& scratch) {
  const size_t filtered_size = (1 + kRgbBytes * w) * h;
  scratch.filtered.resize(filtered_size);
  filter_scanlines(labels, w, h, palette, palette_size, scratch.filtered.data());

  // This path sees busy maps, but most still deflate well, so the first attempt gets a modest
  // buffer rather than libdeflate's worst-case bound (the size of the input: 50 MB at 4096 x
  // 4096); only a map that does not fit is compressed again into a bound-sized buffer.
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
  return deflated_size;
}

// Pixels per label by a plain histogram (the Deflate path only; labels already validated).
void count_label_pixels(const uint8_t* labels, size_t pixels, size_t palette_size,
                        uint64_t* label_pixels) {
  // Four interleaved tables so that runs of one label do not serialise on one counter.
  uint32_t tables[4][256];
  std::memset(tables, 0, sizeof tables);
  std::fill(label_pixels, label_pixels + palette_size, uint64_t{0});
  constexpr size_t kBlock = size_t{1} << 30;  // flush before a uint32 counter could overflow
  for (size_t start = 0; start < pixels; start += kBlock) {
    const size_t end = std::min(pixels, start + kBlock);
    size_t i = start;
    for (; i + 4 <= end; i += 4) {
      ++tables[0][labels[i]];
      ++tables[1][labels[i + 1]];
      ++tables[2][labels[i + 2]];
      ++tables[3][labels[i + 3]];
    }
    for (; i < end; ++i) ++tables[0][labels[i]];
    for (size_t k = 0; k < palette_size; ++k)
      for (auto& table : tables) label_pixels[k] += table[k];
    std::memset(tables, 0, sizeof tables);
  }
}

// ------------------------------------------------------------------------------------------
// Runs path, step 1: the label map as runs.

// The first index in [from, width) whose label differs from `label`, or width. Eight labels at a
// time: XOR with the label in every byte, the first non-zero byte is the change.
size_t run_end(const uint8_t* row, size_t from, size_t width, uint8_t label) {
  size_t x = from;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  const uint64_t repeated = uint64_t{label} * 0x0101010101010101u;
  for (; x + 8 <= width; x += 8) {
    uint64_t word;
    std::memcpy(&word, row + x, 8);
    const uint64_t differs = word ^ repeated;
    if (differs != 0) return x + static_cast<size_t>(__builtin_ctzll(differs)) / 8;
  }
#endif
  while (x < width && row[x] == label) ++x;
  return x;
}

// Fills scratch.runs and scratch.row_groups. Returns false, leaving them partial, once more than
// `run_budget` runs are needed. Throws on a label outside the palette (every distinct row is
// walked run by run, and a repeated row has the labels of the row it repeats).
bool collect_runs(const uint8_t* labels, size_t width, size_t height, size_t palette_size,
                  size_t run_budget, MaskEncoderScratch& scratch) {
  scratch.runs.clear();
  scratch.row_groups.clear();
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* row = labels + y * width;
    if (y > 0 && std::memcmp(row, row - width, width) == 0) {
      ++scratch.row_groups.back().rows;
      continue;
    }
    const size_t first_run = scratch.runs.size();
    for (size_t x = 0; x < width;) {
      const uint8_t label = row[x];
      if (label >= palette_size) throw_label_outside_palette(label, palette_size);
      const size_t end = run_end(row, x + 1, width, label);
      scratch.runs.push_back({static_cast<uint32_t>(end - x), label});
      x = end;
    }
    if (scratch.runs.size() > run_budget) return false;
    scratch.row_groups.push_back(
        {first_run, static_cast<uint32_t>(scratch.runs.size() - first_run), 1});
  }
  return true;
}

// ------------------------------------------------------------------------------------------
// Runs path, step 2: tokens. The same generator feeds a counting pass (symbol frequencies,
// Adler-32, exact size) and the writing pass, so the two cannot disagree.

constexpr int kEndOfBlock = 256;
constexpr int kLitLenSymbols = 286;  // 0..255 literals, 256 end of block, 257..285 lengths
constexpr int kMaxMatch = 258;
constexpr int kMinMatch = 3;
constexpr int kSymbolOfMaxMatch = 285;
constexpr int kMaxCodeBits = 15;
constexpr int kMaxCodeLengthCodeBits = 7;

struct LengthSymbol {
  uint16_t symbol;
  uint8_t extra_bits;
  uint8_t extra_value;
};

// RFC 1951 3.2.5: match length -> length symbol and its extra bits.
struct LengthSymbols {
  LengthSymbol of[kMaxMatch + 1]{};
  constexpr LengthSymbols() {
    constexpr uint16_t base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                   31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    constexpr uint8_t extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                   2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    int code = 0;
    for (int length = kMinMatch; length <= kMaxMatch; ++length) {
      while (code + 1 < 29 && base[code + 1] <= length) ++code;
      of[length] = {static_cast<uint16_t>(257 + code), extra[code],
                    static_cast<uint8_t>(length - base[code])};
    }
  }
};
constexpr LengthSymbols kLengthSymbols;

// Turns the filtered byte stream into tokens for `Sink` (literal(b), match(length) for one
// distance-1 match, max_matches(k) for k distance-1 matches of length 258). Zero bytes are held
// back and written as one maximal zero run when a non-zero byte (or the end) arrives, so every
// run starts right after a non-zero byte: a literal 0, then matches copying it.
template <class Sink>
class ZeroRunTokenizer {
 public:
  explicit ZeroRunTokenizer(Sink& sink) : sink_(sink) {}
  void byte(uint8_t b) {
    if (b == 0) {
      ++pending_zeros_;
      return;
    }
    flush();
    sink_.literal(b);
  }
  void zeros(uint64_t n) { pending_zeros_ += n; }
  void flush() {
    if (pending_zeros_ == 0) return;
    sink_.literal(0);
    const uint64_t copied = pending_zeros_ - 1;
    pending_zeros_ = 0;
    if (copied >= kMaxMatch) sink_.max_matches(copied / kMaxMatch);
    const unsigned rest = static_cast<unsigned>(copied % kMaxMatch);
    if (rest >= kMinMatch) {
      sink_.match(rest);
    } else {
      for (unsigned i = 0; i < rest; ++i) sink_.literal(0);
    }
  }

 private:
  Sink& sink_;
  uint64_t pending_zeros_ = 0;
};

// The filtered scanlines of the whole map, as tokens.
template <class Sink>
void generate_tokens(const MaskEncoderScratch& scratch, const Rgb* palette, size_t width,
                     Sink& sink) {
  ZeroRunTokenizer<Sink> stream(sink);
  const uint64_t row_pixel_bytes = kRgbBytes * uint64_t{width};
  for (const MaskEncoderScratch::RowGroup& group : scratch.row_groups) {
    // The group's first row differs from the row above (or is row 0): Sub.
    stream.byte(kFilterSub);
    Rgb left = {0, 0, 0};
    const MaskEncoderScratch::Run* run = scratch.runs.data() + group.first_run;
    for (const MaskEncoderScratch::Run* end = run + group.run_count; run != end; ++run) {
      const Rgb& colour = palette[run->label];
      stream.byte(static_cast<uint8_t>(colour[0] - left[0]));
      stream.byte(static_cast<uint8_t>(colour[1] - left[1]));
      stream.byte(static_cast<uint8_t>(colour[2] - left[2]));
      stream.zeros(kRgbBytes * uint64_t{run->length - 1});
      left = colour;
    }
    // Its repeats: Up, all zeros.
    for (uint32_t r = 1; r < group.rows; ++r) {
      stream.byte(kFilterUp);
      stream.zeros(row_pixel_bytes);
    }
  }
  stream.flush();
}

// zlib's Adler-32, fed with literals and zero runs. Reduction modulo 65521 is lazy (a chain of
// reductions per byte would dominate the token pass): every 2^16 updates, s1 stays below
// 65521 + 255 * 2^16 < 2^25, one update adds less than 2^16 * 2^25 = 2^41 to s2, so s2 stays
// below 2^57.
class Adler32 {
 public:
  void byte(uint8_t b) {
    s1_ += b;
    s2_ += s1_;
    count_update();
  }
  // n zero bytes: s1 does not move and s2 gains s1 per byte.
  void zeros(uint64_t n) {
    s2_ += (n % kModulus) * s1_;
    count_update();
  }
  uint32_t value() const {
    return static_cast<uint32_t>(((s2_ % kModulus) << 16) | (s1_ % kModulus));
  }

 private:
  static constexpr uint64_t kModulus = 65521;
  static constexpr uint32_t kUpdatesPerReduction = 1u << 16;
  void count_update() {
    if (++updates_ < kUpdatesPerReduction) return;
    s1_ %= kModulus;
    s2_ %= kModulus;
    updates_ = 0;
  }
  uint64_t s1_ = 1;
  uint64_t s2_ = 0;
  uint32_t updates_ = 0;
};

struct TokenCounter {
  uint64_t frequency[kLitLenSymbols] = {};
  uint64_t matches = 0;
  uint64_t extra_bits = 0;
  Adler32 adler;

  void literal(uint8_t b) {
    ++frequency[b];
    adler.byte(b);
  }
  void match(unsigned length) {
    const LengthSymbol& s = kLengthSymbols.of[length];
    ++frequency[s.symbol];
    ++matches;
    extra_bits += s.extra_bits;
    adler.zeros(length);
  }
  void max_matches(uint64_t count) {
    frequency[kSymbolOfMaxMatch] += count;
    matches += count;
    adler.zeros(count * kMaxMatch);
  }
};

// ------------------------------------------------------------------------------------------
// Runs path, step 3: Huffman codes and the bit writer.

// Code lengths of a Huffman code for `frequency[0..n)` with no code longer than `max_bits`
// (n <= 288). Unused symbols get length 0; at least two symbols get a code (a single used symbol
// is paired with an unused one), so the code is always complete, as zlib requires of the code
// length code. When the plain Huffman code is too deep, the frequencies are flattened (halved,
// kept >= 1) until it fits; with all weights 1 the depth is ceil(log2 n) <= 9, so this ends.
void huffman_code_lengths(const uint64_t* frequency, int n, int max_bits, uint8_t* lengths) {
  constexpr int kMaxSymbols = 288;
  int symbols[kMaxSymbols];
  int used = 0;
  for (int s = 0; s < n; ++s)
    if (frequency[s] != 0) symbols[used++] = s;
  std::fill(lengths, lengths + n, uint8_t{0});
  if (used < 2) {
    // One symbol (or none): two 1-bit codes, the second for a symbol that never occurs.
    const int first = used == 1 ? symbols[0] : 0;
    lengths[first] = 1;
    lengths[first == 0 ? 1 : 0] = 1;
    return;
  }
  uint64_t weight[2 * kMaxSymbols];
  int parent[2 * kMaxSymbols];
  int depth[2 * kMaxSymbols];
  for (int shift = 0;; ++shift) {
    // Leaves 0..used-1 in increasing weight; internal nodes used..2*used-2 are created in
    // increasing weight too, so the two lightest nodes are always at the heads of two queues.
    std::sort(symbols, symbols + used, [&](int a, int b) {
      const uint64_t wa = std::max<uint64_t>(frequency[a] >> shift, 1);
      const uint64_t wb = std::max<uint64_t>(frequency[b] >> shift, 1);
      return wa != wb ? wa < wb : a < b;
    });
    for (int i = 0; i < used; ++i) weight[i] = std::max<uint64_t>(frequency[symbols[i]] >> shift, 1);
    int next_leaf = 0;
    int next_inner = used;
    const int root = 2 * used - 2;
    for (int node = used; node <= root; ++node) {
      int pick[2];
      for (int& p : pick) {
        const bool take_leaf =
            next_leaf < used && (next_inner >= node || weight[next_leaf] <= weight[next_inner]);
        p = take_leaf ? next_leaf++ : next_inner++;
      }
      weight[node] = weight[pick[0]] + weight[pick[1]];
      parent[pick[0]] = node;
      parent[pick[1]] = node;
    }
    depth[root] = 0;
    int deepest = 0;
    for (int node = root - 1; node >= 0; --node) {
      depth[node] = depth[parent[node]] + 1;
      deepest = std::max(deepest, depth[node]);
    }
    if (deepest <= max_bits) {
      for (int i = 0; i < used; ++i) lengths[symbols[i]] = static_cast<uint8_t>(depth[i]);
      return;
    }
  }
}

// Canonical codes for `lengths` (RFC 1951 3.2.2), bit-reversed because DEFLATE sends Huffman
// codes most significant bit first into an LSB-first bit stream.
void canonical_codes(const uint8_t* lengths, int n, uint16_t* codes) {
  int count_of_length[kMaxCodeBits + 1] = {};
  for (int s = 0; s < n; ++s) ++count_of_length[lengths[s]];
  count_of_length[0] = 0;
  uint32_t next_code[kMaxCodeBits + 1] = {};
  uint32_t code = 0;
  for (int bits = 1; bits <= kMaxCodeBits; ++bits) {
    code = (code + static_cast<uint32_t>(count_of_length[bits - 1])) << 1;
    next_code[bits] = code;
  }
  for (int s = 0; s < n; ++s) {
    const int length = lengths[s];
    if (length == 0) {
      codes[s] = 0;
      continue;
    }
    uint32_t c = next_code[length]++;
    uint32_t reversed = 0;
    for (int i = 0; i < length; ++i, c >>= 1) reversed = (reversed << 1) | (c & 1);
    codes[s] = static_cast<uint16_t>(reversed);
  }
}

// LSB-first bit writer. put() takes up to 32 bits (`bits` < 2^count) and stores whole 32-bit
// words, so the caller sizes the output exactly (no slack needed past the last byte).
class BitWriter {
 public:
  explicit BitWriter(uint8_t* out) : out_(out) {}
  void put(uint32_t bits, unsigned count) {
    buffer_ |= uint64_t{bits} << filled_;
    filled_ += count;
    if (filled_ >= 32) {
      out_[0] = static_cast<uint8_t>(buffer_);
      out_[1] = static_cast<uint8_t>(buffer_ >> 8);
      out_[2] = static_cast<uint8_t>(buffer_ >> 16);
      out_[3] = static_cast<uint8_t>(buffer_ >> 24);
      out_ += 4;
      buffer_ >>= 32;
      filled_ -= 32;
    }
  }
  // Pads to a byte boundary with zero bits; returns the end of the written bytes.
  uint8_t* finish() {
    for (; filled_ > 0; filled_ = filled_ > 8 ? filled_ - 8 : 0) {
      *out_++ = static_cast<uint8_t>(buffer_);
      buffer_ >>= 8;
    }
    return out_;
  }

 private:
  uint8_t* out_;
  uint64_t buffer_ = 0;
  unsigned filled_ = 0;
};

// The distance code: two 1-bit codes, 0 for distance code 0 (distance 1, no extra bits) and 1
// for distance code 1 (never used; present so that the code is complete).
constexpr int kDistanceCodes = 2;
constexpr uint8_t kDistanceCodeLengths[kDistanceCodes] = {1, 1};
constexpr unsigned kDistance1Bits = 1;  // the code of distance 1 is the single bit 0

struct LiteralLengthCode {
  uint8_t lengths[kLitLenSymbols];
  uint16_t codes[kLitLenSymbols];
};

struct TokenWriter {
  BitWriter& bits;
  const LiteralLengthCode& code;
  uint32_t max_match_pattern;     // several length-258 matches (code + distance bit), packed
  unsigned max_match_bits;        // bits of one length-258 match
  unsigned max_matches_per_word;  // how many of them max_match_pattern holds

  void literal(uint8_t b) { bits.put(code.codes[b], code.lengths[b]); }
  void match(unsigned length) {
    const LengthSymbol& s = kLengthSymbols.of[length];
    const unsigned symbol_bits = code.lengths[s.symbol];
    // symbol, extra bits, then the distance code (a 0 bit): at most 15 + 5 + 1 bits.
    bits.put(code.codes[s.symbol] | (uint32_t{s.extra_value} << symbol_bits),
             symbol_bits + s.extra_bits + kDistance1Bits);
  }
  void max_matches(uint64_t count) {
    for (; count >= max_matches_per_word; count -= max_matches_per_word)
      bits.put(max_match_pattern, max_matches_per_word * max_match_bits);
    if (count > 0) {
      const unsigned n = static_cast<unsigned>(count) * max_match_bits;  // < 32
      bits.put(max_match_pattern & ((uint32_t{1} << n) - 1), n);
    }
  }
};

// RFC 1951 3.2.7: the order in which the code length code's lengths are sent.
constexpr uint8_t kCodeLengthOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5,
                                          11, 4, 12, 3, 13, 2, 14, 1, 15};
// Upper bound on the dynamic block header: 3 + 5 + 5 + 4 bits, 19 * 3 bits of code length code
// lengths, and at most 286 + 2 code lengths of at most 7 + 7 bits each.
constexpr size_t kMaxBlockHeaderBits = 17 + 19 * 3 + (kLitLenSymbols + kDistanceCodes) * 14;

// Writes the block header (BFINAL = 1, BTYPE = dynamic) with the literal/length code lengths and
// the fixed distance code.
void write_block_header(const LiteralLengthCode& code, BitWriter& bits) {
  int literal_length_count = kLitLenSymbols;
  while (literal_length_count > 257 && code.lengths[literal_length_count - 1] == 0)
    --literal_length_count;

  // The code lengths of both codes form one sequence, run-length coded with symbols 16 (repeat
  // the previous length 3-6 times), 17 (3-10 zeros) and 18 (11-138 zeros).
  uint8_t sequence[kLitLenSymbols + kDistanceCodes];
  const int sequence_size = literal_length_count + kDistanceCodes;
  std::memcpy(sequence, code.lengths, static_cast<size_t>(literal_length_count));
  std::memcpy(sequence + literal_length_count, kDistanceCodeLengths, kDistanceCodes);
  struct Item {
    uint8_t symbol, extra;
  };
  Item items[kLitLenSymbols + kDistanceCodes];
  int item_count = 0;
  for (int i = 0; i < sequence_size;) {
    const uint8_t length = sequence[i];
    int run = 1;
    while (i + run < sequence_size && sequence[i + run] == length) ++run;
    i += run;
    if (length == 0) {
      for (; run >= 11; run -= std::min(run, 138))
        items[item_count++] = {18, static_cast<uint8_t>(std::min(run, 138) - 11)};
      if (run >= 3) {
        items[item_count++] = {17, static_cast<uint8_t>(run - 3)};
        run = 0;
      }
    } else {
      items[item_count++] = {length, 0};
      --run;
      for (; run >= 3; run -= std::min(run, 6))
        items[item_count++] = {16, static_cast<uint8_t>(std::min(run, 6) - 3)};
    }
    for (; run > 0; --run) items[item_count++] = {length, 0};
  }

  uint64_t code_length_frequency[19] = {};
  for (int i = 0; i < item_count; ++i) ++code_length_frequency[items[i].symbol];
  uint8_t code_length_lengths[19];
  uint16_t code_length_codes[19];
  huffman_code_lengths(code_length_frequency, 19, kMaxCodeLengthCodeBits, code_length_lengths);
  canonical_codes(code_length_lengths, 19, code_length_codes);
  int code_length_count = 19;
  while (code_length_count > 4 && code_length_lengths[kCodeLengthOrder[code_length_count - 1]] == 0)
    --code_length_count;

  bits.put(1 | (2 << 1), 3);  // BFINAL, BTYPE = 2
  bits.put(static_cast<uint32_t>(literal_length_count - 257), 5);
  bits.put(kDistanceCodes - 1, 5);
  bits.put(static_cast<uint32_t>(code_length_count - 4), 4);
  for (int i = 0; i < code_length_count; ++i) bits.put(code_length_lengths[kCodeLengthOrder[i]], 3);
  for (int i = 0; i < item_count; ++i) {
    const Item& item = items[i];
    bits.put(code_length_codes[item.symbol], code_length_lengths[item.symbol]);
    if (item.symbol == 16) bits.put(item.extra, 2);
    if (item.symbol == 17) bits.put(item.extra, 3);
    if (item.symbol == 18) bits.put(item.extra, 7);
  }
}

// The zlib stream for the runs in scratch, into scratch.deflated; returns its size.
size_t deflate_runs(const Rgb* palette, size_t width, MaskEncoderScratch& scratch) {
  TokenCounter counter;
  generate_tokens(scratch, palette, width, counter);
  counter.frequency[kEndOfBlock] = 1;

  LiteralLengthCode code;
  huffman_code_lengths(counter.frequency, kLitLenSymbols, kMaxCodeBits, code.lengths);
  canonical_codes(code.lengths, kLitLenSymbols, code.codes);

  uint64_t data_bits = counter.extra_bits + counter.matches * kDistance1Bits;
  for (int s = 0; s < kLitLenSymbols; ++s) data_bits += counter.frequency[s] * code.lengths[s];
  const size_t zlib_header = 2, adler_trailer = 4;
  const size_t capacity =
      zlib_header + static_cast<size_t>((kMaxBlockHeaderBits + data_bits + 7) / 8) + adler_trailer;
  if (scratch.deflated.size() < capacity) scratch.deflated.resize(capacity);

  uint8_t* out = scratch.deflated.data();
  // CMF: deflate, 32 KiB window; FLG: no dictionary, "fastest" level, check bits so that
  // (CMF * 256 + FLG) % 31 == 0.
  out[0] = 0x78;
  out[1] = 0x01;
  BitWriter bits(out + zlib_header);
  write_block_header(code, bits);

  TokenWriter writer{bits, code, 0, 0, 0};
  writer.max_match_bits = code.lengths[kSymbolOfMaxMatch] + kDistance1Bits;
  writer.max_matches_per_word = 32 / writer.max_match_bits;
  for (unsigned i = 0; i < writer.max_matches_per_word; ++i)
    writer.max_match_pattern |= uint32_t{code.codes[kSymbolOfMaxMatch]} << (i * writer.max_match_bits);
  generate_tokens(scratch, palette, width, writer);
  bits.put(code.codes[kEndOfBlock], code.lengths[kEndOfBlock]);
  uint8_t* end = bits.finish();
  put_u32_be(end, counter.adler.value());
  end += adler_trailer;
  const size_t size = static_cast<size_t>(end - out);
  if (size > capacity) throw_internal("mask encoder: runs stream overran its bound");
  return size;
}

// Pixels per label from the runs: each distinct row's runs count once per row of its group.
void count_run_pixels(const MaskEncoderScratch& scratch, size_t palette_size, uint64_t* label_pixels) {
  std::fill(label_pixels, label_pixels + palette_size, uint64_t{0});
  for (const MaskEncoderScratch::RowGroup& group : scratch.row_groups) {
    const MaskEncoderScratch::Run* run = scratch.runs.data() + group.first_run;
    for (const MaskEncoderScratch::Run* end = run + group.run_count; run != end; ++run)
      label_pixels[run->label] += uint64_t{run->length} * group.rows;
  }
}

}  // namespace

MaskEncoderScratch::~MaskEncoderScratch() {
  if (compressor != nullptr) libdeflate_free_compressor(static_cast<libdeflate_compressor*>(compressor));
}

void encode_mask_png(const uint8_t* labels, int width, int height, const Rgb* palette,
                     size_t palette_size, MaskEncoderScratch& scratch, std::vector<uint8_t>& out,
                     uint64_t* label_pixels) {
  if (width < 1 || height < 1) throw_internal("mask encoder: empty mask");
  if (labels == nullptr || palette == nullptr || palette_size == 0)
    throw_internal("mask encoder: no labels or no palette");

  const size_t w = static_cast<size_t>(width);
  const size_t h = static_cast<size_t>(height);
  // Forced Runs has no budget; Auto stops collecting runs as soon as the budget is exceeded.
  const size_t run_budget =
      scratch.encoding == MaskEncoding::Runs ? SIZE_MAX : h + w * h / kPixelsPerRunBudget;
  const bool runs = scratch.encoding != MaskEncoding::Deflate &&
                    collect_runs(labels, w, h, palette_size, run_budget, scratch);
  size_t deflated_size = 0;
  if (runs) {
    scratch.used = MaskEncoding::Runs;
    deflated_size = deflate_runs(palette, w, scratch);
    if (label_pixels != nullptr) count_run_pixels(scratch, palette_size, label_pixels);
  } else {
    scratch.used = MaskEncoding::Deflate;
    deflated_size = deflate_scanlines(labels, w, h, palette, palette_size, scratch);
    if (label_pixels != nullptr) count_label_pixels(labels, w * h, palette_size, label_pixels);
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
