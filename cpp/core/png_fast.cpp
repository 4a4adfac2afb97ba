// PngDecoder's fast path: the common PNG layouts (8-bit grey, grey+alpha, RGB, RGBA and palette,
// not interlaced) decoded without libspng. libspng on zlib inflates scanline by scanline through
// a streaming state machine; here the whole zlib stream is inflated in one call with libdeflate
// (about twice zlib's speed), and the scanlines are unfiltered straight into the output.
//
// The fast path is an accelerator, never a judge: it produces an image only for a file it has
// verified from end to end, and for anything else it declines and libspng decodes the file from
// scratch, so which files decode, to which pixels, and every error message stay libspng's. It
// declines when
//   - the layout is another one (interlaced, 1/2/4/16-bit), or the IHDR is not valid;
//   - any chunk up to IEND is truncated, has a wrong CRC (libdeflate_crc32) or a length beyond
//     2^31 - 1, or breaks the order libspng enforces (IHDR first and once; PLTE once, before the
//     IDATs and not after a tRNS, bKGD or hIST; PLTE present for palette images; the IDATs
//     consecutive; IEND empty and after them; no unknown critical chunk);
//   - the ancillary chunks libspng stores (text, ICC profile, EXIF, sPLT) come near the limits
//     past which libspng fails the whole file (StoredChunkBudget);
//   - the concatenated IDAT data is not one complete zlib stream (header, Adler-32 and all) that
//     inflates to exactly height * (1 + row bytes) bytes: libdeflate can only inflate whole
//     buffers, and libspng, which stops reading at the last scanline, still decodes some such
//     files (surplus data after the image, a missing Adler-32 in a later IDAT);
//   - a scanline has a filter type above 4.
// Within those bounds libspng reads the same chunks, inflates the same bytes and unfilters them
// the same way, so the pixels are identical (the tests compare both paths on every filter type,
// layout and chunk arrangement).
//
// The one known difference: libdeflate (1.14, and still 1.25) accepts a few things RFC 1951
// rules out and zlib rejects: literal/length symbols 286 and 287 (read as length 258), distance
// symbols 30 and 31 (as distance base 24577), a match in a block whose distance code is empty
// (as distance 1), more than 286/30 codes in a dynamic block header, and a code length repeat
// running past the last code. No encoder writes them, and the stream must still match its
// Adler-32; a file whose image data uses one decodes here where libspng reports "IDAT stream
// error". Two tests pin this (png_known_difference_*), and a differential fuzzer comparing with
// libspng will meet it.
#include <libdeflate.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "decode_internal.h"
#include "errors.h"

namespace openlookout {
namespace detail {

namespace {

using Declined = PngDecoder::FastResult;

Declined declined(const char* why) { return Declined{false, why}; }

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
constexpr size_t kChunkFraming = 12;  // length, type, CRC
constexpr size_t kIhdrPayloadBytes = 13;
constexpr uint32_t kMaxChunkLength = 0x7fffffffu;  // PNG's bound on a length; libspng's too

// Bytes readable past the end of each scratch buffer: the SSE2 kernels load a 4-byte word for a
// pixel of 1 to 3 bytes.
constexpr size_t kScratchSlack = 16;

uint32_t read_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

constexpr uint32_t chunk_type(const char (&name)[5]) {
  return (uint32_t{static_cast<uint8_t>(name[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(name[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(name[2])} << 8) | uint32_t{static_cast<uint8_t>(name[3])};
}

// Bit 5 of the first type byte (lower case) marks an ancillary chunk.
bool is_critical(uint32_t type) { return (type & 0x20000000u) == 0; }

// Channels of the 8-bit layouts the fast path decodes; 0 for every other colour type.
int channels_of_8bit(uint8_t color_type) {
  switch (color_type) {
    case 0: return 1;  // grey
    case 2: return 3;  // RGB
    case 3: return 1;  // palette index
    case 4: return 2;  // grey, alpha
    case 6: return 4;  // RGBA
    default: return 0;
  }
}

// libspng stores some ancillary chunks (text, ICC profiles, EXIF, suggested palettes), inflating
// the compressed ones, and fails the whole file once they pass its limits: 1000 chunks, an
// inflated chunk over limits.png_max_chunk_bytes, all of them over png_max_ancillary_bytes.
// Where exactly depends on libspng's struct sizes and buffer growth, so this keeps an upper bound
// on what libspng would store and declines well before any limit could be reached.
class StoredChunkBudget {
 public:
  explicit StoredChunkBudget(const DecodeLimits& limits)
      : max_inflated_bytes_(uint64_t{limits.png_max_chunk_bytes} / 3),
        max_total_bytes_(max_total_bytes(limits)) {}

  // tEXt, eXIf, sPLT, uncompressed iTXt: stored as read (sPLT's entry list takes up to ~1.7x the
  // chunk, and the chunk is briefly held twice).
  bool add_stored(uint32_t length) { return add(3 * uint64_t{length} + kPerChunkOverhead); }

  // zTXt, iCCP, compressed iTXt: inflated, and deflate expands at most 1032:1 (a 258-byte match
  // per two bits). libspng grows its output buffer by doubling and fails when a full buffer is
  // already over half the limit, so one stream stays under a third of it.
  bool add_compressed(uint32_t length) {
    const uint64_t bound = kDeflateMaxExpansion * uint64_t{length} + kPerChunkOverhead;
    return bound <= max_inflated_bytes_ && add(bound);
  }

 private:
  static constexpr uint64_t kMaxChunks = 500;  // libspng: 1000
  static constexpr uint64_t kDeflateMaxExpansion = 1032;
  static constexpr uint64_t kPerChunkOverhead = 4096;  // libspng's records, keyword copies

  // At most half the cache, and never so much that a further stream could not get its full chunk
  // limit within what is left (libspng checks the cache before the chunk limit).
  static uint64_t max_total_bytes(const DecodeLimits& limits) {
    const uint64_t cache = limits.png_max_ancillary_bytes;
    const uint64_t chunk = limits.png_max_chunk_bytes;
    return std::min(cache / 2, cache > chunk ? cache - chunk : 0);
  }

  bool add(uint64_t bytes) {
    ++chunks_;
    total_bytes_ += bytes;
    return chunks_ <= kMaxChunks && total_bytes_ <= max_total_bytes_;
  }

  const uint64_t max_inflated_bytes_;
  const uint64_t max_total_bytes_;
  uint64_t chunks_ = 0;
  uint64_t total_bytes_ = 0;
};

// iTXt's compression flag follows its keyword's terminator (within the first 80 bytes); libspng
// inflates only when it is set, and drops a chunk without a terminator unread. A chunk that ends
// at the terminator counts as compressed, the stricter budget.
bool itxt_may_be_compressed(const uint8_t* payload, uint32_t length) {
  const size_t keyword_span = length < 80 ? length : 80;
  const auto* terminator = static_cast<const uint8_t*>(std::memchr(payload, 0, keyword_span));
  if (terminator == nullptr) return false;  // libspng rejects the chunk before inflating
  const size_t flag_at = static_cast<size_t>(terminator - payload) + 1;
  return flag_at >= length || payload[flag_at] != 0;
}

// The IHDR fields the fast path uses.
struct Header {
  uint32_t width = 0;
  uint32_t height = 0;
  uint8_t color_type = 0;
  int channels = 0;
};

// What the chunk walk found besides the header.
struct ChunkWalk {
  // Every one of the 256 entries, zero (black) past the PLTE's end: libspng looks indices up in
  // a zeroed 256-entry table, so an index past the palette gives black (Pillow agrees). Four
  // bytes per entry, so that a pixel is one 4-byte copy.
  uint8_t palette[256][4] = {};
  // The IDAT run: offset of its first chunk and the end of its last, its payload bytes, and the
  // payload of its only non-empty chunk when it has just one (inflated in place).
  size_t idat_run_begin = 0;
  size_t idat_run_end = 0;
  size_t idat_bytes = 0;
  size_t nonempty_idats = 0;
  const uint8_t* nonempty_payload = nullptr;
};

// Checks the signature and the IHDR (the first chunk's fields; its CRC is the walk's).
const char* read_header(const uint8_t* data, size_t size, Header& header) {
  if (size < sizeof(kSignature) + kChunkFraming + kIhdrPayloadBytes ||
      std::memcmp(data, kSignature, sizeof(kSignature)) != 0) {
    return "no signature and IHDR";
  }
  const uint8_t* chunk = data + sizeof(kSignature);
  if (read_u32_be(chunk) != kIhdrPayloadBytes || read_u32_be(chunk + 4) != chunk_type("IHDR")) {
    return "the first chunk is not a 13-byte IHDR";
  }
  const uint8_t* fields = chunk + 8;
  header.width = read_u32_be(fields);
  header.height = read_u32_be(fields + 4);
  const uint8_t bit_depth = fields[8];
  header.color_type = fields[9];
  if (header.width == 0 || header.height == 0 || header.width > kMaxChunkLength ||
      header.height > kMaxChunkLength) {
    return "IHDR: width or height outside 1 .. 2^31-1";
  }
  header.channels = channels_of_8bit(header.color_type);
  if (bit_depth != 8 || header.channels == 0) {
    return "a layout other than 8-bit G, GA, RGB, RGBA, P";
  }
  if (fields[10] != 0 || fields[11] != 0) return "IHDR: unknown compression or filter method";
  if (fields[12] != 0) return "interlaced (or an unknown interlace method)";
  return nullptr;
}

// Walks every chunk from IHDR to IEND, checking each CRC and the order libspng enforces, and
// finds the palette and the IDAT run. nullptr when the fast path may go on, else why not.
const char* walk_chunks(const uint8_t* data, size_t size, const Header& header,
                        const DecodeLimits& limits, ChunkWalk& walk) {
  enum class Stage { BeforeIdat, InIdatRun, AfterIdatRun } stage = Stage::BeforeIdat;
  bool seen_palette = false;
  bool seen_palette_blocker = false;  // a tRNS, bKGD or hIST, after which libspng refuses a PLTE
  StoredChunkBudget budget(limits);
  size_t pos = sizeof(kSignature);
  for (bool first = true;; first = false) {
    if (size - pos < kChunkFraming) return "truncated: no complete chunk where one must follow";
    const uint32_t length = read_u32_be(data + pos);
    const uint8_t* type_bytes = data + pos + 4;
    const uint8_t* payload = type_bytes + 4;
    if (length > kMaxChunkLength) return "a chunk length beyond 2^31-1";
    if (size - pos - kChunkFraming < length) return "truncated chunk";
    // CRC-32 over the type and the payload.
    if (libdeflate_crc32(0, type_bytes, size_t{length} + 4) != read_u32_be(payload + length)) {
      return "chunk CRC mismatch";
    }
    const size_t chunk_begin = pos;
    pos += kChunkFraming + length;
    const uint32_t type = read_u32_be(type_bytes);
    if (first) continue;  // the IHDR, read_header's
    if (type == chunk_type("IDAT")) {
      if (stage == Stage::AfterIdatRun) return "an IDAT after the IDAT run";
      if (stage == Stage::BeforeIdat) {
        if (header.color_type == 3 && !seen_palette) return "palette image without PLTE";
        stage = Stage::InIdatRun;
        walk.idat_run_begin = chunk_begin;
      }
      walk.idat_run_end = pos;
      walk.idat_bytes += length;
      if (length != 0) {
        ++walk.nonempty_idats;
        walk.nonempty_payload = payload;
      }
      continue;
    }
    if (stage == Stage::InIdatRun) stage = Stage::AfterIdatRun;
    if (type == chunk_type("IEND")) {
      if (stage == Stage::BeforeIdat) return "IEND before any IDAT";
      if (length != 0) return "IEND not empty";
      return nullptr;  // libspng reads nothing past IEND either
    }
    if (type == chunk_type("PLTE")) {
      if (stage != Stage::BeforeIdat) return "PLTE after the IDATs";
      if (seen_palette) return "a second PLTE";
      if (seen_palette_blocker) return "PLTE after tRNS, bKGD or hIST";
      if (length == 0 || length % 3 != 0 || length / 3 > 256) return "PLTE length invalid";
      for (uint32_t i = 0; i < length / 3; ++i) std::memcpy(walk.palette[i], payload + 3 * i, 3);
      seen_palette = true;
      continue;
    }
    if (is_critical(type)) return "IHDR again, or an unknown critical chunk";
    // Ancillary. libspng validates the ones it knows and, not being strict, drops an invalid one
    // and reads on; only those it stores can fail the file (StoredChunkBudget). The rest of
    // them (cHRM, gAMA, sBIT, sRGB, pHYs, tIME, oFFs) and unknown ones are just skipped.
    bool within_budget = true;
    switch (type) {
      case chunk_type("tRNS"):
      case chunk_type("bKGD"):
      case chunk_type("hIST"):
        seen_palette_blocker = true;
        break;
      case chunk_type("eXIf"):
        // libspng counts an empty eXIf as a failed allocation, an error for the whole file.
        if (length == 0) return "an empty eXIf";
        within_budget = budget.add_stored(length);
        break;
      case chunk_type("tEXt"):
      case chunk_type("sPLT"):
        within_budget = budget.add_stored(length);
        break;
      case chunk_type("zTXt"):
      case chunk_type("iCCP"):
        within_budget = budget.add_compressed(length);
        break;
      case chunk_type("iTXt"):
        within_budget = itxt_may_be_compressed(payload, length) ? budget.add_compressed(length)
                                                                : budget.add_stored(length);
        break;
      default:
        break;
    }
    if (!within_budget) return "text, profile or EXIF chunks near libspng's limits";
  }
}

// ---------------------------------------------------------------------------------------------
// Unfiltering. Each kernel reconstructs one row of n bytes (a whole number of pixels) from its
// filtered bytes `src` and the reconstructed row above, `prev` (zeros above the first row);
// `dst` may be `src` (in place) but never overlaps `prev`. The left neighbour of the first pixel
// is zero. Sub, Average and Paeth depend on the pixel to the left, so they run a pixel at a time
// with the pixel in registers, and their speed is the latency of that chain; Up is independent
// per byte.

using UnfilterRow = void (*)(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n);

// Two consecutive Paeth rows at once: row 1's `prev` is row 0's result (dst0).
using UnfilterRowPair = void (*)(const uint8_t* src0, const uint8_t* src1, const uint8_t* prev0,
                                 uint8_t* dst0, uint8_t* dst1, size_t n);

struct UnfilterKernels {
  UnfilterRow sub;
  UnfilterRow up;
  UnfilterRow average;
  UnfilterRow paeth;
  UnfilterRowPair paeth_pair;  // nullptr: rows one at a time
};

void unfilter_up_scalar(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i] + prev[i]);
}

template <int kBpp>
void unfilter_sub_scalar(const uint8_t* src, const uint8_t*, uint8_t* dst, size_t n) {
  uint8_t left[kBpp] = {};
  for (size_t i = 0; i < n; i += kBpp) {
    for (int c = 0; c < kBpp; ++c) {
      left[c] = static_cast<uint8_t>(src[i + c] + left[c]);
      dst[i + c] = left[c];
    }
  }
}

template <int kBpp>
void unfilter_average_scalar(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  uint8_t left[kBpp] = {};
  for (size_t i = 0; i < n; i += kBpp) {
    for (int c = 0; c < kBpp; ++c) {
      left[c] = static_cast<uint8_t>(src[i + c] + ((left[c] + prev[i + c]) >> 1));
      dst[i + c] = left[c];
    }
  }
}

// The PNG specification's predictor: of a (left), b (up) and c (up-left), the one closest to
// a + b - c, ties going to a, then b. Written without branches, which mispredict on photos.
inline int paeth_predictor(int a, int b, int c) {
  const int up_minus_up_left = b - c;
  const int left_minus_up_left = a - c;
  const int pa = std::abs(up_minus_up_left);   // |p - a|
  const int pb = std::abs(left_minus_up_left);  // |p - b|
  const int pc = std::abs(up_minus_up_left + left_minus_up_left);  // |p - c|
  const int b_or_c = pb <= pc ? b : c;
  const bool a_is_closest = (pa <= pb) & (pa <= pc);  // `&`, not `&&`: no branch
  return a_is_closest ? a : b_or_c;
}

template <int kBpp>
void unfilter_paeth_scalar(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  int left[kBpp] = {};
  int up_left[kBpp] = {};
  for (size_t i = 0; i < n; i += kBpp) {
    for (int c = 0; c < kBpp; ++c) {
      const int up = prev[i + c];
      left[c] = (src[i + c] + paeth_predictor(left[c], up, up_left[c])) & 0xff;
      up_left[c] = up;
      dst[i + c] = static_cast<uint8_t>(left[c]);
    }
  }
}

template <int kBpp>
UnfilterKernels scalar_kernels() {
  return {unfilter_sub_scalar<kBpp>, unfilter_up_scalar, unfilter_average_scalar<kBpp>,
          unfilter_paeth_scalar<kBpp>, nullptr};
}

UnfilterKernels scalar_kernels_for(int bpp) {
  switch (bpp) {
    case 1: return scalar_kernels<1>();
    case 2: return scalar_kernels<2>();
    case 3: return scalar_kernels<3>();
    default: return scalar_kernels<4>();
  }
}

#if defined(__SSE2__)
// SSE2 (every x86-64 CPU): a pixel per step in one register. Pixels are loaded as 4-byte words,
// the lanes past the pixel carrying the next bytes along unused: those bytes always exist (the
// next pixel, the next row's filter byte, or kScratchSlack behind the last row), and every lane
// is independent. Stores write exactly the pixel's bytes.

template <int kBpp>
inline __m128i load_pixel(const uint8_t* p) {
  uint32_t word;
  std::memcpy(&word, p, sizeof(word));
  return _mm_cvtsi32_si128(static_cast<int>(word));
}

template <int kBpp>
inline void store_pixel(uint8_t* p, __m128i pixel) {
  const auto word = static_cast<uint32_t>(_mm_cvtsi128_si32(pixel));
  std::memcpy(p, &word, kBpp);  // little-endian: the pixel's bytes are the word's low ones
}

void unfilter_up_sse2(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i filtered = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i above = _mm_loadu_si128(reinterpret_cast<const __m128i*>(prev + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_add_epi8(filtered, above));
  }
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i] + prev[i]);
}

template <int kBpp>
void unfilter_sub_sse2(const uint8_t* src, const uint8_t*, uint8_t* dst, size_t n) {
  __m128i left = _mm_setzero_si128();
  for (size_t i = 0; i < n; i += kBpp) {
    left = _mm_add_epi8(load_pixel<kBpp>(src + i), left);
    store_pixel<kBpp>(dst + i, left);
  }
}

template <int kBpp>
void unfilter_average_sse2(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  // pavgb rounds (a + b) / 2 up, Average needs it down: floor((a + b) / 2) = ~pavgb(~a, ~b).
  // Carrying ~left instead of left, with ~(x + v) = ~v - x, leaves two operations on the chain:
  // ~left' = pavgb(~left, ~up) - x.
  const __m128i all_ones = _mm_set1_epi8(-1);
  __m128i inverted_left = all_ones;  // ~0
  for (size_t i = 0; i < n; i += kBpp) {
    const __m128i inverted_up = _mm_xor_si128(load_pixel<kBpp>(prev + i), all_ones);
    inverted_left =
        _mm_sub_epi8(_mm_avg_epu8(inverted_left, inverted_up), load_pixel<kBpp>(src + i));
    store_pixel<kBpp>(dst + i, _mm_xor_si128(inverted_left, all_ones));
  }
}

inline __m128i abs_epi16(__m128i x) {
  return _mm_max_epi16(x, _mm_sub_epi16(_mm_setzero_si128(), x));
}

// One Paeth step in 16-bit lanes (a + b - 2c needs 10 bits): returns the reconstructed pixel
// (zero high bytes) from the filtered x, left a, up b and up-left c. Written as
// x + c + (a - c if a is chosen) + (b - c if b is), so that only a few operations wait on a.
inline __m128i paeth_step(__m128i x, __m128i a, __m128i b, __m128i c) {
  const __m128i up_minus_up_left = _mm_sub_epi16(b, c);
  const __m128i left_minus_up_left = _mm_sub_epi16(a, c);
  const __m128i pa = abs_epi16(up_minus_up_left);
  const __m128i pb = abs_epi16(left_minus_up_left);
  const __m128i pc = abs_epi16(_mm_add_epi16(up_minus_up_left, left_minus_up_left));
  const __m128i not_a = _mm_or_si128(_mm_cmpgt_epi16(pa, pb), _mm_cmpgt_epi16(pa, pc));
  const __m128i take_b = _mm_andnot_si128(_mm_cmpgt_epi16(pb, pc), not_a);
  const __m128i x_plus_c = _mm_add_epi16(x, c);  // off the chain
  const __m128i sum =
      _mm_add_epi16(_mm_add_epi16(x_plus_c, _mm_andnot_si128(not_a, left_minus_up_left)),
                    _mm_and_si128(take_b, up_minus_up_left));
  return _mm_and_si128(sum, _mm_set1_epi16(0xff));
}

template <int kBpp>
inline __m128i load_pixel_16(const uint8_t* p) {
  return _mm_unpacklo_epi8(load_pixel<kBpp>(p), _mm_setzero_si128());
}

template <int kBpp>
inline void store_pixel_16(uint8_t* p, __m128i pixel) {
  store_pixel<kBpp>(p, _mm_packus_epi16(pixel, pixel));
}

template <int kBpp>
void unfilter_paeth_sse2(const uint8_t* src, const uint8_t* prev, uint8_t* dst, size_t n) {
  __m128i left = _mm_setzero_si128();
  __m128i up_left = left;
  for (size_t i = 0; i < n; i += kBpp) {
    const __m128i up = load_pixel_16<kBpp>(prev + i);
    left = paeth_step(load_pixel_16<kBpp>(src + i), left, up, up_left);
    up_left = up;
    store_pixel_16<kBpp>(dst + i, left);
  }
}

// Two Paeth rows as a wavefront: pixel i of row 0, then pixel i - 1 of row 1, whose up and
// up-left neighbours (row 0's pixels i - 1 and i - 2) are already in registers. The two chains
// are independent, so the CPU overlaps them: about twice the speed of one row at a time.
template <int kBpp>
void unfilter_paeth_pair_sse2(const uint8_t* src0, const uint8_t* src1, const uint8_t* prev0,
                              uint8_t* dst0, uint8_t* dst1, size_t n) {
  __m128i left0 = _mm_setzero_si128();
  __m128i up_left0 = left0;
  __m128i left1 = left0;
  __m128i up_left1 = left0;
  left0 = paeth_step(load_pixel_16<kBpp>(src0), left0, load_pixel_16<kBpp>(prev0), up_left0);
  up_left0 = load_pixel_16<kBpp>(prev0);
  store_pixel_16<kBpp>(dst0, left0);
  for (size_t i = kBpp; i < n; i += kBpp) {
    const __m128i row0_previous = left0;  // row 0, pixel i - 1: row 1's up
    const __m128i up0 = load_pixel_16<kBpp>(prev0 + i);
    left0 = paeth_step(load_pixel_16<kBpp>(src0 + i), left0, up0, up_left0);
    up_left0 = up0;
    store_pixel_16<kBpp>(dst0 + i, left0);
    left1 = paeth_step(load_pixel_16<kBpp>(src1 + i - kBpp), left1, row0_previous, up_left1);
    up_left1 = row0_previous;
    store_pixel_16<kBpp>(dst1 + i - kBpp, left1);
  }
  left1 = paeth_step(load_pixel_16<kBpp>(src1 + n - kBpp), left1, left0, up_left1);
  store_pixel_16<kBpp>(dst1 + n - kBpp, left1);
}

// Sub and Average gain nothing from SSE2 below 3 bytes per pixel; Paeth does.
template <int kBpp>
UnfilterKernels sse2_kernels() {
  if (kBpp < 3) {
    UnfilterKernels kernels = scalar_kernels<kBpp>();
    kernels.up = unfilter_up_sse2;
    kernels.paeth = unfilter_paeth_sse2<kBpp>;
    kernels.paeth_pair = unfilter_paeth_pair_sse2<kBpp>;
    return kernels;
  }
  return {unfilter_sub_sse2<kBpp>, unfilter_up_sse2, unfilter_average_sse2<kBpp>,
          unfilter_paeth_sse2<kBpp>, unfilter_paeth_pair_sse2<kBpp>};
}
#endif

UnfilterKernels kernels_for(int bpp, bool scalar_only) {
#if defined(__SSE2__)
  if (!scalar_only) {
    switch (bpp) {
      case 1: return sse2_kernels<1>();
      case 2: return sse2_kernels<2>();
      case 3: return sse2_kernels<3>();
      default: return sse2_kernels<4>();
    }
  }
#else
  (void)scalar_only;
#endif
  return scalar_kernels_for(bpp);
}

// ---------------------------------------------------------------------------------------------
// Unfiltered rows to RGB. Each pixel is written as a 4-byte word whose last byte the next pixel
// overwrites; the row's last pixel is written as 3 bytes, so nothing is written past the row.

template <typename PixelWord>
void write_rgb_row(size_t width, uint8_t* rgb, PixelWord word_of) {
  for (size_t x = 0; x + 1 < width; ++x) {
    const uint32_t word = word_of(x);
    std::memcpy(rgb + 3 * x, &word, 4);
  }
  const uint32_t last = word_of(width - 1);
  std::memcpy(rgb + 3 * (width - 1), &last, 3);  // the word's first three bytes in memory
}

// The word whose bytes in memory are p[0], p[1], p[2], p[3], on any endianness.
inline uint32_t word_at(const uint8_t* p) {
  uint32_t word;
  std::memcpy(&word, p, sizeof(word));
  return word;
}

void convert_row(const uint8_t* row, size_t width, uint8_t color_type,
                 const uint8_t (*palette)[4], uint8_t* rgb) {
  switch (color_type) {
    case 0:  // grey: every byte of the word is the sample
      write_rgb_row(width, rgb, [row](size_t x) { return row[x] * 0x01010101u; });
      break;
    case 4:  // grey, alpha
      write_rgb_row(width, rgb, [row](size_t x) { return row[2 * x] * 0x01010101u; });
      break;
    case 3:  // palette
      write_rgb_row(width, rgb, [row, palette](size_t x) { return word_at(palette[row[x]]); });
      break;
    default:  // 6, RGBA: alpha lands in the next pixel's red, which that pixel overwrites
      write_rgb_row(width, rgb, [row](size_t x) { return word_at(row + 4 * x); });
      break;
  }
}

}  // namespace

uint8_t* PngDecoder::Scratch::reserve(size_t bytes) {
  if (bytes > capacity_) {
    // Value-initialised, so that the slack the kernels may read is never uninitialised memory.
    bytes_.reset(new uint8_t[bytes]());
    capacity_ = bytes;
  }
  return bytes_.get();
}

PngDecoder::~PngDecoder() {
  if (inflater_ != nullptr) libdeflate_free_decompressor(inflater_);
}

libdeflate_decompressor* PngDecoder::inflater() {
  if (inflater_ == nullptr) {
    inflater_ = libdeflate_alloc_decompressor();
    if (inflater_ == nullptr) throw_internal("cannot create a DEFLATE decompressor");
  }
  return inflater_;
}

PngDecoder::FastResult PngDecoder::decode_fast(const uint8_t* data, size_t size,
                                               const DecodeLimits& limits, RgbImage& out) {
  Header header;
  if (const char* why = read_header(data, size, header)) return declined(why);
  // Before anything is allocated, and as libspng's path reports it for the same IHDR.
  check_dimensions(static_cast<int>(header.width), static_cast<int>(header.height), limits);

  ChunkWalk walk;
  if (const char* why = walk_chunks(data, size, header, limits, walk)) return declined(why);

  // The inflated stream: per row a filter byte, then width * channels bytes. The sides fit in
  // 31 bits each, so only the product can overflow.
  const size_t width = header.width;
  const size_t height = header.height;
  const size_t bpp = static_cast<size_t>(header.channels);
  const size_t row_bytes = width * bpp;
  const size_t stride = row_bytes + 1;
  if (stride > (SIZE_MAX - kScratchSlack) / height) return declined("image too large to inflate");
  const size_t inflated_bytes = stride * height;
  // Deflate expands at most 1032:1: fewer IDAT bytes cannot hold the image, and declining now
  // spares allocating for it.
  if (walk.idat_bytes == 0 || inflated_bytes / 1032 > walk.idat_bytes) {
    return declined("too little IDAT data for the image");
  }

  // The zlib stream: the single IDAT's payload where it is, else the payloads joined.
  const uint8_t* zlib_stream = walk.nonempty_payload;
  if (walk.nonempty_idats > 1) {
    uint8_t* joined = joined_idat_.reserve(walk.idat_bytes);
    size_t at = 0;
    for (size_t pos = walk.idat_run_begin; pos < walk.idat_run_end;) {
      const uint32_t length = read_u32_be(data + pos);
      std::memcpy(joined + at, data + pos + 8, length);
      at += length;
      pos += kChunkFraming + length;
    }
    zlib_stream = joined;
  }

  uint8_t* scanlines = scanlines_.reserve(inflated_bytes + kScratchSlack);
  size_t consumed = 0;
  size_t produced = 0;
  const libdeflate_result result =
      libdeflate_zlib_decompress_ex(inflater(), zlib_stream, walk.idat_bytes, scanlines,
                                    inflated_bytes, &consumed, &produced);
  // Bytes after the stream's end (consumed < idat_bytes) are ignored, as by libspng.
  if (result != LIBDEFLATE_SUCCESS || produced != inflated_bytes) {
    return declined("the IDAT data is not one zlib stream of exactly the image's size");
  }

  uint8_t* zero_row = zero_row_.reserve(row_bytes + kScratchSlack);
  std::memset(zero_row, 0, row_bytes + kScratchSlack);
  const UnfilterKernels kernels = kernels_for(header.channels, scalar_kernels_);
  out.reset(static_cast<int>(width), static_cast<int>(height));
  const size_t rgb_row_bytes = width * 3;
  // RGB rows are unfiltered straight into the output, the output row above serving as `prev`;
  // the other layouts are unfiltered in place in the scanline buffer, then converted.
  const bool unfilter_into_output = header.color_type == 2;
  for (size_t y = 0; y < height; ++y) {
    uint8_t* line = scanlines + y * stride;
    const uint8_t* filtered = line + 1;
    uint8_t* rgb = out.pixels.data() + y * rgb_row_bytes;
    uint8_t* row = unfilter_into_output ? rgb : line + 1;
    const uint8_t* prev =
        y == 0 ? zero_row : (unfilter_into_output ? rgb - rgb_row_bytes : line + 1 - stride);
    const uint8_t filter = line[0];
    if (filter == 4 && kernels.paeth_pair != nullptr && y + 1 < height && line[stride] == 4) {
      // Two Paeth rows in one wavefront (Paeth rows tend to come in runs).
      uint8_t* next_row = unfilter_into_output ? rgb + rgb_row_bytes : line + 1 + stride;
      kernels.paeth_pair(filtered, filtered + stride, prev, row, next_row, row_bytes);
      if (!unfilter_into_output) {
        convert_row(row, width, header.color_type, walk.palette, rgb);
        convert_row(next_row, width, header.color_type, walk.palette, rgb + rgb_row_bytes);
      }
      ++y;
      continue;
    }
    switch (filter) {
      case 0:
        if (row != filtered) std::memcpy(row, filtered, row_bytes);
        break;
      case 1: kernels.sub(filtered, prev, row, row_bytes); break;
      case 2: kernels.up(filtered, prev, row, row_bytes); break;
      case 3: kernels.average(filtered, prev, row, row_bytes); break;
      case 4: kernels.paeth(filtered, prev, row, row_bytes); break;
      default: return declined("a scanline with a filter type above 4");
    }
    if (!unfilter_into_output) convert_row(row, width, header.color_type, walk.palette, rgb);
  }
  return FastResult{true, nullptr};
}

}  // namespace detail
}  // namespace openlookout
