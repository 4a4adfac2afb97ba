// PNG -> RGB: PngDecoder's dispatch between its fast path (png_fast.cpp) and libspng, and the
// libspng decode itself. SPNG_FMT_RGB8 covers every colour type and bit depth: low-depth grey is
// scaled up by bit replication (as Pillow), 16-bit samples keep their high byte, palette indices
// are looked up (an index past the palette's end gives black, as in Pillow), and alpha and tRNS
// are dropped (flags 0: no gamma, no transparency).
#include <spng.h>

#include <climits>
#include <string>

#include "decode_internal.h"
#include "errors.h"

namespace openlookout {
namespace detail {

namespace {

// Owns one libspng context; a fresh one per image is cheap next to the decode itself.
class SpngContext {
 public:
  SpngContext() : ctx_(spng_ctx_new(0)) {
    if (ctx_ == nullptr) throw_internal("cannot create a PNG decoder context");
  }
  ~SpngContext() { spng_ctx_free(ctx_); }
  SpngContext(const SpngContext&) = delete;
  SpngContext& operator=(const SpngContext&) = delete;

  spng_ctx* get() const { return ctx_; }

 private:
  spng_ctx* ctx_;
};

[[noreturn]] void throw_corrupt(int spng_error) {
  throw_validation(std::string("corrupt or truncated PNG: ") + spng_strerror(spng_error));
}

void check(int spng_error) {
  if (spng_error != 0) throw_corrupt(spng_error);
}

// As check, adding the configurable limits to libspng's "reached chunk/cache limits", which it
// also says for other oversized metadata (a chunk length near 2^31, an empty eXIf, the 1001st
// text chunk).
void check_read(int spng_error, const DecodeLimits& limits) {
  if (spng_error == SPNG_ECHUNK_LIMITS) {
    throw_validation(std::string("corrupt or truncated PNG: ") + spng_strerror(spng_error) +
                     " (png_max_chunk_bytes " + std::to_string(limits.png_max_chunk_bytes) +
                     " per inflated chunk, png_max_ancillary_bytes " +
                     std::to_string(limits.png_max_ancillary_bytes) +
                     " in all, at most 1000 ancillary chunks)");
  }
  check(spng_error);
}

uint32_t read_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

int clamp_to_int(uint32_t value) {
  return value > static_cast<uint32_t>(INT_MAX) ? INT_MAX : static_cast<int>(value);
}

// libspng refuses an IHDR beyond the image limits before handing it out; this reports such an
// image the way check_dimensions reports any other, from the IHDR bytes libspng just vetted
// (signature, then IHDR's length and type, then width and height at offsets 16 and 20).
[[noreturn]] void throw_oversized(const uint8_t* data, size_t size, const DecodeLimits& limits,
                                  int spng_error) {
  if (size >= 24) {
    check_dimensions(clamp_to_int(read_u32_be(data + 16)), clamp_to_int(read_u32_be(data + 20)),
                     limits);
  }
  throw_corrupt(spng_error);  // not reached: libspng only says so for sides over the limit
}

void configure(spng_ctx* ctx, const uint8_t* data, size_t size, const DecodeLimits& limits) {
  const auto max_side = static_cast<uint32_t>(limits.max_side > 0 ? limits.max_side : 1);
  check(spng_set_image_limits(ctx, max_side, max_side));
  // Bounds on what libspng may hold besides the image: ancillary chunks (text, ICC profiles) are
  // parsed and cached even though we ignore them, and compressed ones inflate. An 8 MiB body
  // has no business needing more (DecodeLimits::png_max_chunk_bytes, png_max_ancillary_bytes).
  if (limits.png_max_chunk_bytes > limits.png_max_ancillary_bytes ||
      limits.png_max_chunk_bytes > size_t{0x7fffffff}) {
    // libspng refuses such limits with a bare "invalid argument"; load_model checks this first.
    throw_validation("png_max_chunk_bytes must be at most png_max_ancillary_bytes and 2^31 - 1");
  }
  check(spng_set_chunk_limits(ctx, limits.png_max_chunk_bytes, limits.png_max_ancillary_bytes));
  // Strict on every chunk, like Pillow, which rejects a bad CRC on any chunk it reads.
  check(spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR));
  check(spng_set_png_buffer(ctx, data, size));
}

}  // namespace

void decode_png_with_libspng(const uint8_t* data, size_t size, const DecodeLimits& limits,
                             RgbImage& out) {
  SpngContext context;
  spng_ctx* ctx = context.get();
  configure(ctx, data, size, limits);

  spng_ihdr ihdr{};
  const int ihdr_error = spng_get_ihdr(ctx, &ihdr);
  if (ihdr_error == SPNG_EUSER_WIDTH || ihdr_error == SPNG_EUSER_HEIGHT) {
    throw_oversized(data, size, limits, ihdr_error);
  }
  check_read(ihdr_error, limits);
  check_dimensions(clamp_to_int(ihdr.width), clamp_to_int(ihdr.height), limits);

  size_t rgb_bytes = 0;
  check(spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &rgb_bytes));
  out.reset(static_cast<int>(ihdr.width), static_cast<int>(ihdr.height));
  if (rgb_bytes != out.pixels.size()) {
    throw_internal("libspng reports " + std::to_string(rgb_bytes) + " bytes for a " +
                   std::to_string(ihdr.width) + "x" + std::to_string(ihdr.height) + " RGB image");
  }
  check_read(spng_decode_image(ctx, out.pixels.data(), rgb_bytes, SPNG_FMT_RGB8, 0), limits);
  // spng_decode_image stops after the last scanline. Reading on to IEND verifies the rest of the
  // file (the last IDAT's CRC, the chunks after it), so a truncated file is an error.
  check_read(spng_decode_chunks(ctx), limits);
}

void PngDecoder::decode(const uint8_t* data, size_t size, const DecodeLimits& limits,
                        RgbImage& out) {
  if (decode_fast(data, size, limits, out).decoded) return;
  decode_png_with_libspng(data, size, limits, out);
}

}  // namespace detail
}  // namespace openlookout
