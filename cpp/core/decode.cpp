// The decode stage's front: content types, limits, signatures, and dispatch to the PNG and JPEG
// decoders (decode_png.cpp, decode_jpeg.cpp).
#include "decode.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "decode_internal.h"
#include "errors.h"

namespace openlookout {

namespace {

constexpr const char* kPngContentType = "image/png";
constexpr const char* kJpegContentType = "image/jpeg";

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_ascii_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// The value as it may appear in an error message: bounded, and with bytes that are not printable
// ASCII replaced, so a hostile header cannot smuggle control characters into logs.
std::string printable_excerpt(std::string_view value) {
  constexpr size_t kMaxChars = 100;
  std::string shown;
  for (size_t i = 0; i < value.size() && i < kMaxChars; ++i) {
    char c = value[i];
    shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (value.size() > kMaxChars) shown += "...";
  return shown;
}

bool has_png_signature(const uint8_t* data, size_t size) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return size >= sizeof(kSignature) && std::memcmp(data, kSignature, sizeof(kSignature)) == 0;
}

bool has_jpeg_signature(const uint8_t* data, size_t size) {
  // SOI followed by the first byte of the next marker.
  return size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff;
}

bool has_signature(const uint8_t* data, size_t size, ImageFormat format) {
  return format == ImageFormat::Png ? has_png_signature(data, size)
                                    : has_jpeg_signature(data, size);
}

const char* format_name(ImageFormat format) { return format == ImageFormat::Png ? "PNG" : "JPEG"; }

const char* content_type_of(ImageFormat format) {
  return format == ImageFormat::Png ? kPngContentType : kJpegContentType;
}

ImageFormat other_format(ImageFormat format) {
  return format == ImageFormat::Png ? ImageFormat::Jpeg : ImageFormat::Png;
}

void check_body(const uint8_t* data, size_t size, ImageFormat format, const DecodeLimits& limits) {
  if (data == nullptr || size == 0) throw_validation("empty body");
  if (size > limits.max_body_bytes) {
    throw_validation("body is " + std::to_string(size) + " bytes; the limit is " +
                     std::to_string(limits.max_body_bytes) + " bytes (max_body_bytes)");
  }
  if (has_signature(data, size, format)) return;
  // Naming the format the bytes do have tells the caller which of the two mistakes was made.
  ImageFormat other = other_format(format);
  if (has_signature(data, size, other)) {
    throw_validation(std::string("body looks like a ") + format_name(other) +
                     " image but the content type is " + content_type_of(format));
  }
  throw_validation(std::string("body is not a ") + format_name(format) + " image (content type " +
                   content_type_of(format) + ")");
}

}  // namespace

ImageFormat parse_content_type(std::string_view content_type) {
  // Parameters ("image/jpeg; charset=binary") do not change the format; RFC 9110 allows
  // whitespace before the ';', and media types compare case-insensitively.
  std::string_view media_type = content_type.substr(0, content_type.find(';'));
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  if (equals_ignoring_ascii_case(media_type, kPngContentType)) return ImageFormat::Png;
  if (equals_ignoring_ascii_case(media_type, kJpegContentType)) return ImageFormat::Jpeg;
  if (content_type.empty()) {
    throw_validation(std::string("content type is empty; it must be ") + kPngContentType +
                     " or " + kJpegContentType);
  }
  throw_validation("unsupported content type '" + printable_excerpt(content_type) +
                   "'; it must be " + kPngContentType + " or " + kJpegContentType);
}

void check_dimensions(int width, int height, const DecodeLimits& limits) {
  // A side below 1 is never an image, whatever min_side says.
  const int min_side = std::max(1, limits.min_side);
  const bool too_small = width < min_side || height < min_side;
  const bool too_large = width > limits.max_side || height > limits.max_side;
  if (!too_small && !too_large) return;
  throw_validation("image is " + std::to_string(width) + "x" + std::to_string(height) +
                   " pixels; each side must be between " + std::to_string(limits.min_side) +
                   " and " + std::to_string(limits.max_side) +
                   (too_large ? " (max_side)" : " (min_side)"));
}

struct Decoder::State {
  detail::JpegDecoder jpeg;
  detail::PngDecoder png;
};

Decoder::Decoder() : state_(std::make_unique<State>()) {}

Decoder::~Decoder() = default;

void Decoder::decode(const uint8_t* data, size_t size, ImageFormat format,
                     const DecodeLimits& limits, RgbImage& out, JpegScaling scaling) {
  try {
    check_body(data, size, format, limits);
    if (format == ImageFormat::Png) {
      state_->png.decode(data, size, limits, out);
    } else {
      state_->jpeg.decode(data, size, limits, out, scaling);
    }
  } catch (...) {
    // Never hand on a half-decoded image; reset(0, 0) keeps the buffer's capacity.
    out.reset(0, 0);
    throw;
  }
}

}  // namespace openlookout
