// JPEG -> RGB through libjpeg-turbo's TurboJPEG API, matching Pillow's decode bit for bit: the
// accurate integer IDCT and fancy (triangle-filter) chroma upsampling, which are also libjpeg's
// defaults that Pillow runs with.
#include <string>

#include "decode_internal.h"
#include "errors.h"

namespace openlookout {
namespace detail {

namespace {

// ACCURATEDCT: the ISLOW IDCT, as Pillow. No FASTUPSAMPLE, for the same reason.
// STOPONWARNING: libjpeg only warns on truncated or corrupt entropy data and fills the rest
// with grey; a warning must fail the request instead of returning a made-up image.
// LIMITSCANS: caps progressive scans, so a tiny file cannot cost minutes of CPU.
constexpr int kDecompressFlags = TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;

// Pillow's MULDIV255: a * b / 255, rounded, without a division.
inline int muldiv255(int a, int b) {
  int tmp = a * b + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

}  // namespace

void inverted_cmyk_to_rgb(const uint8_t* cmyk, size_t pixel_count, uint8_t* rgb) {
  for (size_t i = 0; i < pixel_count; ++i, cmyk += 4, rgb += 3) {
    // Undoing the inversion turns Pillow's `nk = 255 - k` into the stored byte itself.
    const int not_k = cmyk[3];
    for (int channel = 0; channel < 3; ++channel) {
      const int ink = 255 - cmyk[channel];
      rgb[channel] = static_cast<uint8_t>(not_k - muldiv255(ink, not_k));
    }
  }
}

JpegDecoder::~JpegDecoder() {
  if (handle_ != nullptr) tjDestroy(handle_);
}

tjhandle JpegDecoder::handle() {
  if (handle_ == nullptr) {
    handle_ = tjInitDecompress();
    if (handle_ == nullptr) {
      throw_internal(std::string("cannot create a JPEG decompressor: ") + tjGetErrorStr2(nullptr));
    }
  }
  return handle_;
}

void JpegDecoder::throw_corrupt() {
  const std::string message = std::string("corrupt or truncated JPEG: ") + tjGetErrorStr2(handle_);
  // A libjpeg error can leave the instance mid-header (tjDecompressHeader3 in 2.x does not reset
  // the marker reader), and the next image then fails with "Bogus marker length"; libjpeg-turbo's
  // maintainer advises against reusing an instance after a fatal error. Start afresh next time.
  tjDestroy(handle_);
  handle_ = nullptr;
  throw_validation(message);
}

void JpegDecoder::decode(const uint8_t* data, size_t size, const DecodeLimits& limits,
                         RgbImage& out) {
  tjhandle tj = handle();
  const auto jpeg_size = static_cast<unsigned long>(size);

  // Only the markers up to SOS are read here: dimensions are checked before any pixel memory
  // (ours or libjpeg's) is allocated.
  int width = 0, height = 0, subsampling = -1, colorspace = -1;
  const int header_status =
      tjDecompressHeader3(tj, data, jpeg_size, &width, &height, &subsampling, &colorspace);
  // TurboJPEG 2.x fails on sampling factors outside its TJSAMP_* list (4:1:0, 3x1, ...), but only
  // after libjpeg has read the whole header and the outputs are filled in; libjpeg decodes such
  // images fine (as Pillow does), and we never need the subsampling. TurboJPEG 3 reports
  // TJSAMP_UNKNOWN (-1) for them instead of failing.
  const bool only_subsampling_unknown =
      subsampling < 0 && colorspace >= 0 && width > 0 && height > 0;
  if (header_status != 0 && !only_subsampling_unknown) throw_corrupt();
  // A tables-only datastream "succeeds" without an image.
  if (width <= 0 || height <= 0) throw_validation("corrupt JPEG: it contains no image");
  check_dimensions(width, height, limits);

  const size_t pixel_count = static_cast<size_t>(width) * static_cast<size_t>(height);
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    // libjpeg turns YCCK into CMYK; the Adobe-inverted CMYK -> RGB step is Pillow's, done here.
    cmyk_scratch_.resize(pixel_count * 4);
    if (tjDecompress2(tj, data, jpeg_size, cmyk_scratch_.data(), width, width * 4, height,
                      TJPF_CMYK, kDecompressFlags) != 0) {
      throw_corrupt();
    }
    out.reset(width, height);
    inverted_cmyk_to_rgb(cmyk_scratch_.data(), pixel_count, out.pixels.data());
    return;
  }
  // Grayscale comes out replicated into R, G and B, as Pillow's L -> RGB convert does.
  out.reset(width, height);
  if (tjDecompress2(tj, data, jpeg_size, out.pixels.data(), width, width * 3, height, TJPF_RGB,
                    kDecompressFlags) != 0) {
    throw_corrupt();
  }
}

}  // namespace detail
}  // namespace openlookout
