// JPEG -> RGB through libjpeg-turbo's libjpeg API, matching Pillow's decode bit for bit: the
// accurate integer IDCT and fancy (triangle-filter) chroma upsampling, libjpeg's defaults, which
// Pillow runs with. The decompressor is created once per JpegDecoder and reused; its memory
// comes from the arena of jpeg_memory.cpp, so a warm decoder allocates nothing per image, and
// the pixels are written straight into the caller's RgbImage.
//
// libjpeg reports errors through error_exit, which must not return: ours longjmps back into the
// guarded_* function that called into libjpeg. longjmp skips every frame in between without
// running destructors, so those functions and everything libjpeg calls back (error, source,
// progress and memory managers) hold only trivially destructible objects and never throw; the
// C++ around them (checks, messages, exceptions) runs after the jump has landed.
#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include <jerror.h>
#include <jpeglib.h>

#include "decode_internal.h"
#include "errors.h"
#include "jpeg_memory.h"

namespace openlookout {
namespace detail {

namespace {

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

namespace {

// error_exit, and warnings made errors: libjpeg only warns on truncated or corrupt entropy data
// (and fills the rest of the image with grey), on bogus progression and the like; a warning
// must fail the request instead of returning a made-up image (TurboJPEG's STOPONWARNING did this
// before). The message is formatted here, into a fixed buffer, and read after the jump.
struct ErrorManager {
  jpeg_error_mgr pub;  // first member: cinfo->err points at it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

ErrorManager& error_manager_of(j_common_ptr cinfo) {
  return *reinterpret_cast<ErrorManager*>(cinfo->err);
}

[[noreturn]] void fail_with_message(j_common_ptr cinfo) {
  ErrorManager& errors = error_manager_of(cinfo);
  (*cinfo->err->format_message)(cinfo, errors.message);
  std::longjmp(errors.jump, 1);
}

void on_error(j_common_ptr cinfo) { fail_with_message(cinfo); }

void on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) fail_with_message(cinfo);  // a warning; levels >= 0 are trace messages
}

void print_nothing(j_common_ptr) {}

// The scan limit while decoding: libjpeg decodes every scan of a progressive or multi-scan file
// over the whole image, so a small body with many cheap scans costs scans x pixels of work.
// check_scan_limits refuses such files from their markers before decoding; this monitor, which
// libjpeg calls between scans and rows, holds the same limit should the marker walk ever count
// fewer scans than libjpeg reads (TurboJPEG's LIMITSCANS played this role, at 500 scans).
struct ScanGuard {
  jpeg_progress_mgr pub;  // first member: cinfo->progress points at it
  int max_scans;
  // For the message, as scan_limit_message words it.
  int width, height;
  const char* limit;
};

void watch_scans(j_common_ptr cinfo) {
  auto* guard = reinterpret_cast<ScanGuard*>(cinfo->progress);
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number <= guard->max_scans) return;
  ErrorManager& errors = error_manager_of(cinfo);
  std::snprintf(errors.message, sizeof(errors.message),
                "JPEG has more than %d scans; at most %d are accepted for a %dx%d image (%s)",
                guard->max_scans, guard->max_scans, guard->width, guard->height, guard->limit);
  std::longjmp(errors.jump, 1);
}

// The whole body is in memory: the source hands it over at once. Reading past its end is an
// error (libjpeg's memory source warns and feeds a fake EOI; the warning fails the decode).
void source_start(j_decompress_ptr) {}

boolean source_ran_out(j_decompress_ptr cinfo) {
  WARNMS(cinfo, JWRN_JPEG_EOF);
  // Not reached: the warning longjmps. Were it to return, an EOI ends the stream cleanly.
  static const JOCTET kEndOfImage[2] = {0xff, JPEG_EOI};
  cinfo->src->next_input_byte = kEndOfImage;
  cinfo->src->bytes_in_buffer = sizeof(kEndOfImage);
  return TRUE;
}

void source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  jpeg_source_mgr* source = cinfo->src;
  if (static_cast<unsigned long>(count) > source->bytes_in_buffer) {
    source_ran_out(cinfo);
    return;
  }
  source->next_input_byte += count;
  source->bytes_in_buffer -= static_cast<size_t>(count);
}

void source_end(j_decompress_ptr) {}

// How a guarded step ended: Failed carries libjpeg's message, Unexpected one of ours about libjpeg
// doing what it should not (a bug, not bad input).
enum class Step { Done, TablesOnly, Failed, Unexpected };

}  // namespace

// Everything libjpeg holds for one decoder, in one place that never moves (libjpeg keeps
// pointers to the managers).
struct JpegSession {
  jpeg_decompress_struct cinfo;
  ErrorManager errors;
  ScanGuard scan_guard;
  jpeg_source_mgr source;
  JpegMemoryManager memory;
  bool created = false;
};

namespace {

bool guarded_create(JpegSession& s) noexcept {
  std::memset(&s.cinfo, 0, sizeof(s.cinfo));
  s.cinfo.err = jpeg_std_error(&s.errors.pub);
  s.errors.pub.error_exit = on_error;
  s.errors.pub.emit_message = on_message;
  s.errors.pub.output_message = print_nothing;
  if (setjmp(s.errors.jump)) {
    jpeg_destroy_decompress(&s.cinfo);
    return false;
  }
  jpeg_create_decompress(&s.cinfo);
  s.memory.install(&s.cinfo);
  s.source.init_source = source_start;
  s.source.fill_input_buffer = source_ran_out;
  s.source.skip_input_data = source_skip;
  s.source.resync_to_restart = jpeg_resync_to_restart;
  s.source.term_source = source_end;
  s.cinfo.src = &s.source;
  s.scan_guard = {};  // set for each image before it is decoded
  s.scan_guard.pub.progress_monitor = watch_scans;
  s.scan_guard.limit = "";
  s.cinfo.progress = &s.scan_guard.pub;
  return true;
}

// Reads the markers up to the first scan.
Step guarded_read_header(JpegSession& s, const uint8_t* data, size_t size) noexcept {
  if (setjmp(s.errors.jump)) return Step::Failed;
  s.source.next_input_byte = data;
  s.source.bytes_in_buffer = size;
  // jpeg_read_header calls jpeg_abort itself before reporting a tables-only datastream.
  return jpeg_read_header(&s.cinfo, FALSE) == JPEG_HEADER_TABLES_ONLY ? Step::TablesOnly
                                                                      : Step::Done;
}

// libjpeg returns no rows only from a suspending source, which ours is not; should it ever, the
// loops below must not spin.
Step no_progress(j_decompress_ptr cinfo) {
  ErrorManager& errors = error_manager_of(reinterpret_cast<j_common_ptr>(cinfo));
  std::snprintf(errors.message, sizeof(errors.message), "libjpeg returned no scanline at row %u",
                cinfo->output_scanline);
  return Step::Unexpected;
}

// Reads every scanline into `pixels` (which the caller sized for the output), converting inverted
// CMYK through a strip of rec_outbuf_height rows from the arena.
Step read_scanlines(j_decompress_ptr cinfo, uint8_t* pixels, size_t stride, bool cmyk) {
  const JDIMENSION height = cinfo->output_height;
  if (!cmyk) {
    JSAMPARRAY rows = static_cast<JSAMPARRAY>((*cinfo->mem->alloc_small)(
        reinterpret_cast<j_common_ptr>(cinfo), JPOOL_IMAGE, sizeof(JSAMPROW) * height));
    for (JDIMENSION y = 0; y < height; ++y) rows[y] = pixels + y * stride;
    while (cinfo->output_scanline < height) {
      const JDIMENSION at = cinfo->output_scanline;
      if (jpeg_read_scanlines(cinfo, rows + at, height - at) == 0) return no_progress(cinfo);
    }
    return Step::Done;
  }
  const JDIMENSION strip_rows = static_cast<JDIMENSION>(cinfo->rec_outbuf_height);
  JSAMPARRAY strip = (*cinfo->mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(cinfo),
                                                 JPOOL_IMAGE, cinfo->output_width * 4, strip_rows);
  while (cinfo->output_scanline < height) {
    const JDIMENSION at = cinfo->output_scanline;
    const JDIMENSION got = jpeg_read_scanlines(cinfo, strip, strip_rows);
    if (got == 0) return no_progress(cinfo);
    // libjpeg turns YCCK into CMYK; the Adobe-inverted CMYK -> RGB step is Pillow's, done here.
    for (JDIMENSION i = 0; i < got; ++i) {
      inverted_cmyk_to_rgb(strip[i], cinfo->output_width, pixels + (at + i) * stride);
    }
  }
  return Step::Done;
}

Step guarded_decompress(JpegSession& s, uint8_t* pixels, JDIMENSION width, JDIMENSION height,
                        bool cmyk) noexcept {
  if (setjmp(s.errors.jump)) return Step::Failed;
  jpeg_start_decompress(&s.cinfo);
  const int components = cmyk ? 4 : 3;
  if (s.cinfo.output_width != width || s.cinfo.output_height != height ||
      s.cinfo.output_components != components) {
    std::snprintf(s.errors.message, sizeof(s.errors.message),
                  "libjpeg's output is %ux%u with %d components; %ux%u with %d were expected",
                  s.cinfo.output_width, s.cinfo.output_height, s.cinfo.output_components, width,
                  height, components);
    return Step::Unexpected;
  }
  const Step step = read_scanlines(&s.cinfo, pixels, size_t{width} * 3, cmyk);
  if (step != Step::Done) return step;
  // Reads the rest of the stream to EOI: damage after the last scanline still fails the image.
  jpeg_finish_decompress(&s.cinfo);
  return Step::Done;
}

// ---- limits checked from the markers, before decoding ----------------------------------------

struct MarkerCounts {
  size_t markers = 0;  // marker segments after SOI, up to EOI, outside entropy-coded data
  size_t scans = 0;    // SOS markers among them
};

// Walks a JPEG datastream's segments, skipping each scan's entropy-coded data to the next marker
// (0xFF followed by neither 0x00 nor RSTn), and counts markers and scans; stops once either count
// passes its limit. A malformed stream ends the walk; libjpeg reports what is wrong with it.
// A segment length below 2 is followed as libjpeg follows it where it skips such segments
// (APPn, COM: nothing skipped after the length field), so such a segment cannot hide the
// markers after it from the count.
MarkerCounts count_markers(const uint8_t* data, size_t size, size_t max_markers,
                           size_t max_scans) {
  MarkerCounts counts;
  size_t at = 2;  // after SOI
  while (at + 1 < size && counts.markers <= max_markers && counts.scans <= max_scans) {
    if (data[at] != 0xff) return counts;
    const uint8_t marker = data[at + 1];
    if (marker == 0xff) {  // fill byte before a marker
      ++at;
      continue;
    }
    if (marker == 0xd9) return counts;  // EOI
    ++counts.markers;
    if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {  // TEM, stray RSTn
      at += 2;
      continue;
    }
    if (at + 4 > size) return counts;
    const size_t length = (size_t{data[at + 2]} << 8) | data[at + 3];
    at += 2 + std::max<size_t>(length, 2);
    if (marker != 0xda) continue;
    ++counts.scans;
    // Entropy-coded data up to the next marker.
    while (at + 1 < size) {
      const void* ff = std::memchr(data + at, 0xff, size - at - 1);
      if (ff == nullptr) return counts;
      at = static_cast<size_t>(static_cast<const uint8_t*>(ff) - data);
      const uint8_t next = data[at + 1];
      if (next != 0x00 && !(next >= 0xd0 && next <= 0xd7) && next != 0xff) break;
      at += next == 0xff ? 1 : 2;
    }
  }
  return counts;
}

std::string scan_limit_message(size_t allowed, int width, int height, const char* limit) {
  return "JPEG has more than " + std::to_string(allowed) + " scans; at most " +
         std::to_string(allowed) + " are accepted for a " + std::to_string(width) + "x" +
         std::to_string(height) + " image (" + limit + ")";
}

// The marker and scan counts against jpeg_max_markers and jpeg_max_scans: dimensions are not
// needed yet, so this runs before libjpeg parses anything.
MarkerCounts check_marker_limits(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  const MarkerCounts counts = count_markers(data, size, limits.jpeg_max_markers,
                                            std::max<size_t>(1, limits.jpeg_max_scans));
  if (counts.markers > limits.jpeg_max_markers) {
    throw_validation("JPEG has more than " + std::to_string(limits.jpeg_max_markers) +
                     " marker segments; at most " + std::to_string(limits.jpeg_max_markers) +
                     " are accepted (jpeg_max_markers)");
  }
  return counts;
}

// How many scans an image of width x height may have: at most jpeg_max_scans, and at most
// jpeg_max_scan_pixels scans x pixels (a 140 KB progressive 4096x4096 file with 500 scans took
// 3.6 s of CPU; the default, 100 full scans of 4096x4096, is about 1 s, and mainstream encoders
// write 1 to ~20 scans). Always at least 1. Names the limit that binds.
struct ScanAllowance {
  size_t scans;
  const char* limit;
};

ScanAllowance scan_allowance(int width, int height, const DecodeLimits& limits) {
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  const uint64_t by_pixels = limits.jpeg_max_scan_pixels / pixels;
  if (by_pixels < limits.jpeg_max_scans) {
    return {static_cast<size_t>(std::max<uint64_t>(1, by_pixels)), "jpeg_max_scan_pixels"};
  }
  return {std::max<size_t>(1, limits.jpeg_max_scans), "jpeg_max_scans"};
}

// The scaling factors to pick from: only 1/2, 1/4 and 1/8, for which libjpeg-turbo has SIMD
// reduced-size IDCTs (1/8 uses the DC coefficient alone); its other M/8 IDCTs are scalar and save
// little or nothing.
struct ScalingFactor {
  unsigned num, denom;
};
constexpr ScalingFactor kScalingFactors[] = {{1, 2}, {1, 4}, {1, 8}};

// A side as libjpeg scales it (jpeg_calc_output_dimensions: rounded up).
int scaled(int side, ScalingFactor f) {
  return static_cast<int>((static_cast<uint64_t>(side) * f.num + f.denom - 1) / f.denom);
}

// The smallest factor whose output covers min_width x min_height; 1/1 when none is asked for or
// none is smaller.
ScalingFactor pick_scaling(int width, int height, JpegScaling wanted) {
  ScalingFactor best{1, 1};
  if (wanted.min_width <= 0 || wanted.min_height <= 0) return best;
  for (const ScalingFactor f : kScalingFactors) {
    const int w = scaled(width, f), h = scaled(height, f);
    if (w >= wanted.min_width && h >= wanted.min_height &&
        static_cast<long>(w) * h < static_cast<long>(scaled(width, best)) * scaled(height, best))
      best = f;
  }
  return best;
}

}  // namespace

JpegDecoder::JpegDecoder() = default;

JpegDecoder::~JpegDecoder() {
  if (session_ != nullptr && session_->created) jpeg_destroy_decompress(&session_->cinfo);
}

JpegSession& JpegDecoder::session() {
  if (session_ == nullptr) session_ = std::make_unique<JpegSession>();
  if (!session_->created) {
    if (!guarded_create(*session_)) {
      throw_internal(std::string("cannot create a JPEG decompressor: ") + session_->errors.message);
    }
    session_->created = true;
  }
  return *session_;
}

uint64_t JpegDecoder::arena_blocks_allocated() const {
  return session_ != nullptr ? session_->memory.blocks_allocated() : 0;
}

void JpegDecoder::decode(const uint8_t* data, size_t size, const DecodeLimits& limits,
                         RgbImage& out, JpegScaling scaling) {
  const MarkerCounts counts = check_marker_limits(data, size, limits);
  JpegSession& s = session();
  j_decompress_ptr cinfo = &s.cinfo;
  // From here on the decompressor is mid-image until jpeg_abort_decompress (also after a
  // successful jpeg_finish_decompress, where it only resets the arena again): every exit,
  // thrown or not, leaves it ready for the next image.
  struct AbortOnExit {
    j_decompress_ptr cinfo;
    ~AbortOnExit() { jpeg_abort_decompress(cinfo); }
  } abort_on_exit{cinfo};
  const auto corrupt = [&s] {
    throw_validation(std::string("corrupt or truncated JPEG: ") + s.errors.message);
  };

  s.memory.begin_image(cinfo);
  // Only the markers up to SOS are read here: dimensions are checked before any pixel memory
  // (ours or libjpeg's) is allocated.
  const Step header = guarded_read_header(s, data, size);
  if (header == Step::Failed) corrupt();
  if (header == Step::TablesOnly) throw_validation("corrupt JPEG: it contains no image");
  const int width = static_cast<int>(cinfo->image_width);
  const int height = static_cast<int>(cinfo->image_height);
  // libjpeg guesses the colour space from the markers; 2 or more than 4 components have none
  // it can convert to RGB.
  const J_COLOR_SPACE colour_space = cinfo->jpeg_color_space;
  if (colour_space != JCS_GRAYSCALE && colour_space != JCS_YCbCr && colour_space != JCS_RGB &&
      colour_space != JCS_CMYK && colour_space != JCS_YCCK) {
    throw_validation("corrupt or truncated JPEG: cannot determine the colour space of its " +
                     std::to_string(cinfo->num_components) + " components");
  }
  check_dimensions(width, height, limits);
  const ScanAllowance allowance = scan_allowance(width, height, limits);
  if (counts.scans > allowance.scans) {
    throw_validation(scan_limit_message(allowance.scans, width, height, allowance.limit));
  }
  s.scan_guard.max_scans = static_cast<int>(std::min<size_t>(allowance.scans, 1 << 30));
  s.scan_guard.width = width;
  s.scan_guard.height = height;
  s.scan_guard.limit = allowance.limit;

  const ScalingFactor factor = pick_scaling(width, height, scaling);
  const int out_width = scaled(width, factor), out_height = scaled(height, factor);
  const bool cmyk = colour_space == JCS_CMYK || colour_space == JCS_YCCK;
  // The ISLOW IDCT and fancy upsampling are libjpeg's defaults (jpeg_read_header sets them), as
  // Pillow has them; block smoothing of incomplete progressive images too. Grayscale comes out
  // replicated into R, G and B, as Pillow's L -> RGB convert does.
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGB;
  cinfo->scale_num = factor.num;
  cinfo->scale_denom = factor.denom;
  out.reset(out_width, out_height);
  const Step decoded = guarded_decompress(s, out.pixels.data(), static_cast<JDIMENSION>(out_width),
                                          static_cast<JDIMENSION>(out_height), cmyk);
  if (decoded == Step::Failed) corrupt();
  if (decoded == Step::Unexpected) {
    throw_internal(std::string("JPEG decode went wrong: ") + s.errors.message);
  }
  out.source_width = width;
  out.source_height = height;
}

}  // namespace detail
}  // namespace openlookout
