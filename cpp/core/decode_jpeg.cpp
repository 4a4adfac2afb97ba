// JPEG -> RGB through libjpeg-turbo's TurboJPEG API, matching Pillow's decode bit for bit: the
// accurate integer IDCT and fancy (triangle-filter) chroma upsampling, which are also libjpeg's
// defaults that Pillow runs with.
#include <algorithm>
#include <cstring>
#include <string>

#include "decode_internal.h"
#include "errors.h"

namespace openlookout {
namespace detail {

namespace {

// ACCURATEDCT: the ISLOW IDCT, as Pillow. No FASTUPSAMPLE, for the same reason.
// STOPONWARNING: libjpeg only warns on truncated or corrupt entropy data and fills the rest
// with grey; a warning must fail the request instead of returning a made-up image.
// LIMITSCANS: caps progressive scans, so a tiny file cannot cost minutes of CPU (check_scans
// below enforces a lower, size-aware cap before decoding starts).
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

namespace {

// Scan limits (progressive and multi-scan JPEGs), checked by count_scans before decoding.
// libjpeg decodes every scan over the whole image, so a small body with many cheap scans (EOB runs
// cover a whole scan in a few bytes) costs scans x pixels of work: a 140 KB progressive file of
// 4096x4096 with 500 scans took 3.6 s of CPU, and TurboJPEG's own TJFLAG_LIMITSCANS (500 scans)
// only fires when the decode gets to scan 501. So both limits are enforced up front from the
// markers: at most kMaxScans scans, and at most kMaxScanPixels scans x pixels, i.e. 100 full
// scans of a 4096x4096 image (about 1 s): mainstream encoders write 1 to ~20 scans.
constexpr size_t kMaxScans = 500;
constexpr uint64_t kMaxScanPixels = uint64_t{100} * 4096 * 4096;

// Counts the SOS markers of a JPEG datastream by walking its segments and skipping each scan's
// entropy-coded data to the next marker (0xFF followed by neither 0x00 nor RSTn). Stops counting
// past `stop_after`. A malformed stream ends the walk; libjpeg reports what is wrong with it.
size_t count_scans(const uint8_t* data, size_t size, size_t stop_after) {
  size_t scans = 0;
  size_t at = 2;  // after SOI
  while (at + 1 < size && scans <= stop_after) {
    if (data[at] != 0xff) return scans;
    const uint8_t marker = data[at + 1];
    if (marker == 0xff) {  // fill byte before a marker
      ++at;
      continue;
    }
    if (marker == 0xd9) return scans;                                  // EOI
    if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {        // TEM, stray RSTn
      at += 2;
      continue;
    }
    if (at + 4 > size) return scans;
    const size_t length = (size_t{data[at + 2]} << 8) | data[at + 3];
    if (length < 2) return scans;
    at += 2 + length;
    if (marker != 0xda) continue;
    ++scans;
    // Entropy-coded data up to the next marker.
    while (at + 1 < size) {
      const void* ff = std::memchr(data + at, 0xff, size - at - 1);
      if (ff == nullptr) return scans;
      at = static_cast<size_t>(static_cast<const uint8_t*>(ff) - data);
      const uint8_t next = data[at + 1];
      if (next != 0x00 && !(next >= 0xd0 && next <= 0xd7) && next != 0xff) break;
      at += next == 0xff ? 1 : 2;
    }
  }
  return scans;
}

void check_scans(const uint8_t* data, size_t size, int width, int height) {
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  const size_t allowed = static_cast<size_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(kMaxScans, kMaxScanPixels / pixels)));
  const size_t scans = count_scans(data, size, allowed);
  if (scans > allowed) {
    throw_validation("JPEG has more than " + std::to_string(allowed) + " scans; at most " +
                     std::to_string(allowed) + " are accepted for a " + std::to_string(width) +
                     "x" + std::to_string(height) + " image (progressive scan limit)");
  }
}

// The smallest libjpeg-turbo scaling factor (M/8) whose output covers min_width x min_height;
// 1/1 when none is asked for or none is smaller.
tjscalingfactor pick_scaling(int width, int height, JpegScaling wanted) {
  tjscalingfactor best{1, 1};
  if (wanted.min_width <= 0 || wanted.min_height <= 0) return best;
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  for (int i = 0; factors != nullptr && i < count; ++i) {
    const tjscalingfactor f = factors[i];
    // Only 1/2, 1/4 and 1/8: libjpeg-turbo has SIMD reduced-size IDCTs for those (1/8 uses the
    // DC coefficient alone); its other M/8 IDCTs are scalar and save little or nothing.
    if (f.num != 1 || (f.denom != 2 && f.denom != 4 && f.denom != 8)) continue;
    const int w = TJSCALED(width, f), h = TJSCALED(height, f);
    if (w >= wanted.min_width && h >= wanted.min_height &&
        static_cast<long>(w) * h < static_cast<long>(TJSCALED(width, best)) * TJSCALED(height, best))
      best = f;
  }
  return best;
}

}  // namespace

void JpegDecoder::decode(const uint8_t* data, size_t size, const DecodeLimits& limits,
                         RgbImage& out, JpegScaling scaling) {
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
  check_scans(data, size, width, height);

  const tjscalingfactor factor = pick_scaling(width, height, scaling);
  const int out_width = TJSCALED(width, factor), out_height = TJSCALED(height, factor);
  const size_t pixel_count = static_cast<size_t>(out_width) * static_cast<size_t>(out_height);
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    // libjpeg turns YCCK into CMYK; the Adobe-inverted CMYK -> RGB step is Pillow's, done here.
    cmyk_scratch_.resize(pixel_count * 4);
    if (tjDecompress2(tj, data, jpeg_size, cmyk_scratch_.data(), out_width, out_width * 4,
                      out_height, TJPF_CMYK, kDecompressFlags) != 0) {
      throw_corrupt();
    }
    out.reset(out_width, out_height);
    inverted_cmyk_to_rgb(cmyk_scratch_.data(), pixel_count, out.pixels.data());
  } else {
    // Grayscale comes out replicated into R, G and B, as Pillow's L -> RGB convert does.
    out.reset(out_width, out_height);
    if (tjDecompress2(tj, data, jpeg_size, out.pixels.data(), out_width, out_width * 3, out_height,
                      TJPF_RGB, kDecompressFlags) != 0) {
      throw_corrupt();
    }
  }
  out.source_width = width;
  out.source_height = height;
}

}  // namespace detail
}  // namespace openlookout
