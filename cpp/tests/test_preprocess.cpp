// Tests of stage 2 (resize + normalize + layout) against an independent double-precision
// reference that evaluates the 2D formulas of preprocess.h directly per destination pixel, without
// the tap tables. Every case runs with the portable scalar kernels and with each SIMD target the
// CPU supports, in each resampling order (the cheaper one, horizontal first, vertical first);
// SIMD results must match the scalar ones within 1e-6.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#ifndef OPENLOOKOUT_NO_HWY
#include <hwy/targets.h>
#endif

#include "check.h"
#include "preprocess.h"

namespace openlookout {
// Test hooks defined in preprocess.cpp (deliberately not in preprocess.h).
}  // namespace openlookout

using namespace openlookout;

namespace {

const char* mode_name(ResizeMode mode) {
  switch (mode) {
    case ResizeMode::Bilinear: return "bilinear";
    case ResizeMode::Area: return "area";
    case ResizeMode::Nearest: return "nearest";
  }
  return "?";
}

// A source image in a buffer of exactly the bytes the view may touch: `stride` bytes per row, but
// the last row ends right after its pixels (as a cropped numpy view would), so AddressSanitizer
// catches any read past the last pixel. Padding bytes hold a loud value that would show up in the
// output if they were ever read.
struct TestImage {
  std::vector<uint8_t> bytes;
  int width = 0;
  int height = 0;
  size_t stride = 0;

  TestImage(int w, int h, size_t padding, uint32_t seed) : width(w), height(h) {
    stride = static_cast<size_t>(w) * 3 + padding;
    bytes.assign(stride * static_cast<size_t>(h - 1) + static_cast<size_t>(w) * 3, 0xEE);
    uint32_t state = seed * 2654435761u + 12345u;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w * 3; ++x) {
        state = state * 1664525u + 1013904223u;
        bytes[static_cast<size_t>(y) * stride + x] = static_cast<uint8_t>(state >> 24);
      }
  }
  RgbView view() const { return {bytes.data(), width, height, stride}; }
  double at(int x, int y, int channel) const {
    return bytes[static_cast<size_t>(y) * stride + static_cast<size_t>(x) * 3 + channel];
  }
};

// Source coordinate of a bilinear destination index: two taps and the weight of the second.
struct Bilinear1D {
  int x0, x1;
  double w1;
};
Bilinear1D bilinear_1d(int i, int src, int dst) {
  double s = (i + 0.5) * static_cast<double>(src) / dst - 0.5;
  if (s < 0) s = 0;
  if (s > src - 1) s = src - 1;
  const int x0 = static_cast<int>(std::floor(s));
  return {x0, std::min(x0 + 1, src - 1), s - x0};
}

int nearest_1d(int i, int src, int dst) {
  return std::min(static_cast<int>(std::floor((i + 0.5) * static_cast<double>(src) / dst)), src - 1);
}

// Overlap of source pixel j ([j, j + 1)) with the interval [lo, hi).
double overlap(int j, double lo, double hi) { return std::max(0.0, std::min(hi, j + 1.0) - std::max(lo, static_cast<double>(j))); }

// The resampled source value (0..255 scale) of source channel `ch` at destination (x, y).
double reference_sample(const TestImage& img, ResizeMode mode, int dst_w, int dst_h, int x, int y, int ch) {
  const int sw = img.width, sh = img.height;
  switch (mode) {
    case ResizeMode::Nearest:
      return img.at(nearest_1d(x, sw, dst_w), nearest_1d(y, sh, dst_h), ch);
    case ResizeMode::Bilinear: {
      const Bilinear1D bx = bilinear_1d(x, sw, dst_w), by = bilinear_1d(y, sh, dst_h);
      const double top = (1 - bx.w1) * img.at(bx.x0, by.x0, ch) + bx.w1 * img.at(bx.x1, by.x0, ch);
      const double bottom = (1 - bx.w1) * img.at(bx.x0, by.x1, ch) + bx.w1 * img.at(bx.x1, by.x1, ch);
      return (1 - by.w1) * top + by.w1 * bottom;
    }
    case ResizeMode::Area: {
      const double fx = static_cast<double>(sw) / dst_w, fy = static_cast<double>(sh) / dst_h;
      const double x_lo = x * fx, x_hi = (x + 1) * fx, y_lo = y * fy, y_hi = (y + 1) * fy;
      double sum = 0;
      for (int sy = static_cast<int>(std::floor(y_lo)); sy < std::min(sh, static_cast<int>(std::ceil(y_hi))); ++sy)
        for (int sx = static_cast<int>(std::floor(x_lo)); sx < std::min(sw, static_cast<int>(std::ceil(x_hi))); ++sx)
          sum += overlap(sx, x_lo, x_hi) * overlap(sy, y_lo, y_hi) * img.at(sx, sy, ch);
      return sum / (fx * fy);
    }
  }
  return 0;
}

// The whole stage in double: tensor of spec.width * spec.height * 3 values in spec.layout.
std::vector<double> reference_tensor(const TestImage& img, const PreprocessSpec& spec) {
  const int w = spec.width, h = spec.height;
  std::vector<double> t(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const int source_channel = spec.color == ColorOrder::BGR ? 2 - c : c;
        const double v = reference_sample(img, spec.resize, w, h, x, y, source_channel);
        const double normalized = (v * static_cast<double>(spec.scale) - spec.mean[c]) / spec.std[c];
        const size_t index = spec.layout == Layout::NCHW
                                 ? static_cast<size_t>(c) * w * h + static_cast<size_t>(y) * w + x
                                 : (static_cast<size_t>(y) * w + x) * 3 + c;
        t[index] = normalized;
      }
  return t;
}

// Largest |got - want| / max(1, |reference|): float32 against the float64 reference (tolerance
// 1e-5), or SIMD against scalar kernels (tolerance 1e-6).
template <typename T>
double worst_error(const std::vector<float>& got, const std::vector<T>& want, const std::vector<double>& reference) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i])) /
                     std::max(1.0, std::fabs(reference[i]));
    worst = std::max(worst, std::isnan(e) ? 1e30 : e);
  }
  return worst;
}

PreprocessSpec make_spec(int w, int h, ResizeMode mode, Layout layout, ColorOrder color, int variant) {
  PreprocessSpec spec;
  spec.width = w;
  spec.height = h;
  spec.resize = mode;
  spec.layout = layout;
  spec.color = color;
  if (variant == 0) {  // ImageNet statistics on [0, 1]
    spec.scale = 1.0f / 255.0f;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    std::copy(mean, mean + 3, spec.mean);
    std::copy(std, std + 3, spec.std);
  } else {  // raw 0..255 scale, distinct per-channel statistics, one negative std
    spec.scale = 1.0f;
    const float mean[3] = {123.675f, 116.28f, 103.53f}, std[3] = {58.395f, -57.12f, 57.375f};
    std::copy(mean, mean + 3, spec.mean);
    std::copy(std, std + 3, spec.std);
  }
  return spec;
}

struct SizeCase {
  int src_w, src_h, dst_w, dst_h;
  size_t padding;
};

std::string describe(const SizeCase& sc, const PreprocessSpec& spec, int variant) {
  char text[160];
  std::snprintf(text, sizeof text, "%dx%d (+%zu) -> %dx%d %s %s %s variant %d", sc.src_w, sc.src_h,
                sc.padding, sc.dst_w, sc.dst_h, mode_name(spec.resize),
                spec.layout == Layout::NCHW ? "NCHW" : "NHWC",
                spec.color == ColorOrder::RGB ? "RGB" : "BGR", variant);
  return text;
}

const SizeCase kSizeCases[] = {
    {97, 71, 32, 48, 0},     // shrink x, enlarge y
    {1, 1, 5, 3, 0},         // single pixel enlarged
    {300, 200, 256, 256, 5}, // mild shrink x, enlarge y, padded rows
    {64, 48, 64, 48, 7},     // same size: the no-resize path
    {2, 2, 1, 1, 0},
    {5, 7, 5, 3, 1},         // same width, shrink height
    {7, 5, 3, 5, 0},         // shrink width, same height
    {13, 17, 40, 41, 3},     // enlarge, non-integer ratios
    {1, 9, 3, 2, 0},         // one-pixel-wide source
    {96, 96, 32, 32, 0},     // shrink by exactly 3: bilinear centres fall on pixels
    {640, 480, 224, 224, 1},
    {513, 257, 256, 256, 0}, // just over 2x in x, slight enlargement in y
    {33, 3, 4, 11, 2},
    {200, 150, 17, 9, 3},    // strong shrink to odd sizes (sparse bilinear taps, byte reads)
    {40, 100, 7, 3, 1},      // more than 16 vertical area taps: the sum runs in several passes
    {130, 6, 37, 6, 0},      // same height, width shrink: one tap of weight 1 vertically
};

const ResizeMode kModes[] = {ResizeMode::Bilinear, ResizeMode::Area, ResizeMode::Nearest};

// One set of kernels: the portable scalar ones, or one Highway target.
struct KernelSet {
  std::string name;
  bool simd;
  int64_t target;         // Highway target bit (simd only)
  bool rounds_as_scalar;  // multiply-add rounds twice, like the scalar kernels: bit-identical
};

std::vector<KernelSet> kernel_sets() {
  std::vector<KernelSet> sets{{"scalar", false, 0, true}};
#ifndef OPENLOOKOUT_NO_HWY
  hwy::SetSupportedTargetsForTest(0);  // list what the CPU really supports
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    // The SIMD kernels add the same terms in the same order as the scalar ones, so targets
    // without fused multiply-add must give bit-identical results; FMA targets (AVX2, AVX-512,
    // NEON, ...) round once per multiply-add and differ by a few float ulps. The scalar code
    // itself rounds twice only when compiled without FMA (GCC contracts a * b + c otherwise).
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
    const bool rounds_as_scalar = false;
#else
    const bool rounds_as_scalar = target == HWY_SCALAR || target == HWY_EMU128 ||
                                  (HWY_ARCH_X86 && (target == HWY_SSSE3 || target == HWY_SSE4));
#endif
    sets.push_back({hwy::TargetName(target), true, target, rounds_as_scalar});
  }
#endif
  return sets;
}

// Selects a kernel set and an order for the calls that follow; restores the defaults when it
// goes out of scope.
class UseKernels {
 public:
  UseKernels(const KernelSet& set, int order) {
    set_preprocess_simd_enabled(set.simd);
    set_preprocess_resample_order(order);
#ifndef OPENLOOKOUT_NO_HWY
    hwy::SetSupportedTargetsForTest(set.simd ? set.target : 0);
#endif
  }
  ~UseKernels() {
    set_preprocess_simd_enabled(true);
    set_preprocess_resample_order(0);
#ifndef OPENLOOKOUT_NO_HWY
    hwy::SetSupportedTargetsForTest(0);
#endif
  }
  UseKernels(const UseKernels&) = delete;
  UseKernels& operator=(const UseKernels&) = delete;
};

std::vector<float> run(const TestImage& img, const PreprocessSpec& spec, PreprocessScratch& scratch) {
  // Exactly the tensor's size, so an out-of-bounds write trips AddressSanitizer; NaN-filled so a
  // value that is never written fails every comparison.
  std::vector<float> out(static_cast<size_t>(spec.width) * spec.height * 3, std::nanf(""));
  resize_normalize(img.view(), spec, scratch, out.data());
  return out;
}

// Worst errors seen so far, for the summary line.
double g_worst_vs_reference = 0;
double g_worst_simd_vs_scalar = 0;

// Runs one case with every kernel set in every order: each result within 1e-5 of the float64
// reference, and each SIMD result within 1e-6 of the scalar result of the same order (identical
// for targets that round as the scalar kernels do). Returns the number of configurations checked.
int check_case(const SizeCase& sc, const PreprocessSpec& spec, int variant,
               const std::vector<KernelSet>& sets) {
  const TestImage img(sc.src_w, sc.src_h, sc.padding, static_cast<uint32_t>(sc.src_w * 31 + sc.src_h));
  const std::vector<double> reference = reference_tensor(img, spec);
  int checked = 0;
  for (int order = 0; order <= 2; ++order) {
    std::vector<float> scalar;
    for (const KernelSet& set : sets) {
      std::vector<float> got;
      {
        UseKernels use(set, order);
        PreprocessScratch scratch;  // fresh: tables are keyed by size, not mode
        got = run(img, spec, scratch);
      }
      ++checked;
      const double err = worst_error(got, reference, reference);
      g_worst_vs_reference = std::max(g_worst_vs_reference, err);
      if (!(err <= 1e-5))
        ::olt::fail(__FILE__, __LINE__, describe(sc, spec, variant) + " [" + set.name + ", order " +
                                            std::to_string(order) + "]: error " + std::to_string(err));
      if (!set.simd) {
        scalar = got;
      } else {
        const double diff = worst_error(got, scalar, reference);
        g_worst_simd_vs_scalar = std::max(g_worst_simd_vs_scalar, diff);
        if (set.rounds_as_scalar && got != scalar)
          ::olt::fail(__FILE__, __LINE__, describe(sc, spec, variant) + " [" + set.name + ", order " +
                                              std::to_string(order) + "]: not bit-identical to scalar");
        if (!(diff <= 1e-6))
          ::olt::fail(__FILE__, __LINE__, describe(sc, spec, variant) + " [" + set.name + ", order " +
                                              std::to_string(order) + "]: differs from scalar by " +
                                              std::to_string(diff));
      }
    }
  }
  return checked;
}

}  // namespace

TEST(preprocess_matches_reference_all_sizes_modes_layouts_colors) {
  const std::vector<KernelSet> sets = kernel_sets();
  std::string names;
  for (const KernelSet& set : sets) names += " " + set.name;
  int checked = 0;
  for (const SizeCase& sc : kSizeCases)
    for (ResizeMode mode : kModes)
      for (Layout layout : {Layout::NCHW, Layout::NHWC})
        for (ColorOrder color : {ColorOrder::RGB, ColorOrder::BGR})
          for (int variant = 0; variant < 2; ++variant)
            checked += check_case(sc, make_spec(sc.dst_w, sc.dst_h, mode, layout, color, variant), variant, sets);
  std::printf("     %d configurations, kernel sets:%s; worst error %.2g vs float64, %.2g SIMD vs scalar\n",
              checked, names.c_str(), g_worst_vs_reference, g_worst_simd_vs_scalar);
}

TEST(preprocess_large_shrink_matches_reference) {
  // The production shape: a megapixel-class image shrunk to 256x256 (ratio ~4, 5 area taps).
  const std::vector<KernelSet> sets = kernel_sets();
  const SizeCase sc{1030, 1029, 256, 256, 0};
  for (ResizeMode mode : kModes) {
    check_case(sc, make_spec(256, 256, mode, Layout::NCHW, ColorOrder::RGB, 0), 0, sets);
    check_case(sc, make_spec(256, 256, mode, Layout::NHWC, ColorOrder::BGR, 1), 1, sets);
  }
}

// Checks one call with the current kernels and order against the reference.
static void check_default(const SizeCase& sc, ResizeMode mode, Layout layout, ColorOrder color, int variant,
                   PreprocessScratch& scratch) {
  const TestImage img(sc.src_w, sc.src_h, sc.padding, static_cast<uint32_t>(sc.src_w * 31 + sc.src_h));
  const PreprocessSpec spec = make_spec(sc.dst_w, sc.dst_h, mode, layout, color, variant);
  const std::vector<double> reference = reference_tensor(img, spec);
  const double err = worst_error(run(img, spec, scratch), reference, reference);
  if (!(err <= 1e-5))
    ::olt::fail(__FILE__, __LINE__, describe(sc, spec, variant) + ": error " + std::to_string(err));
}

TEST(preprocess_scratch_reuse_across_sizes) {
  // One scratch, sizes going up and down and both orders alternating: tables must be rebuilt on
  // every size change and stale rows must never leak into a later call.
  const SizeCase sequence[] = {{97, 71, 32, 48, 0}, {300, 200, 256, 256, 5}, {97, 71, 32, 48, 2},
                               {13, 17, 40, 41, 0}, {300, 200, 256, 256, 0}, {64, 48, 64, 48, 0},
                               {200, 150, 17, 9, 0}, {97, 71, 32, 48, 0}};
  for (ResizeMode mode : kModes)
    for (int order = 0; order <= 2; ++order) {
      set_preprocess_resample_order(order);
      PreprocessScratch scratch;
      for (const SizeCase& sc : sequence) check_default(sc, mode, Layout::NCHW, ColorOrder::BGR, 0, scratch);
    }
  set_preprocess_resample_order(0);
}

TEST(preprocess_steady_state_does_not_allocate) {
  // Same sizes again: the scratch buffers keep their storage (no reallocation) and the tables
  // keep their identity; a smaller image afterwards fits in the same storage. In both orders.
  for (int order = 1; order <= 2; ++order) {
    set_preprocess_resample_order(order);
    PreprocessScratch scratch;
    const TestImage img(300, 200, 0, 7);
    const PreprocessSpec spec = make_spec(96, 80, ResizeMode::Area, Layout::NCHW, ColorOrder::RGB, 0);
    const std::vector<float> out = run(img, spec, scratch);
    const float* rows = scratch.rows.data();
    const int* slots = scratch.row_of_slot.data();
    const float* x_weights = scratch.x_axis.weights.data();
    const float* y_weights = scratch.y_axis.weights.data();
    const size_t rows_size = scratch.rows.size();
    CHECK(run(img, spec, scratch) == out);
    CHECK(scratch.rows.data() == rows);
    CHECK(scratch.rows.size() == rows_size);
    CHECK(scratch.row_of_slot.data() == slots);
    CHECK(scratch.x_axis.weights.data() == x_weights);
    CHECK(scratch.y_axis.weights.data() == y_weights);
    const TestImage small(120, 90, 0, 8);
    run(small, spec, scratch);
    CHECK(scratch.rows.data() == rows);
    CHECK(scratch.row_of_slot.data() == slots);
  }
  set_preprocess_resample_order(0);
}

TEST(resample_axis_tables_are_well_formed) {
  const int sizes[] = {1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 97, 224, 255, 256, 257, 1000, 1024, 2048};
  for (ResizeMode mode : kModes)
    for (int src : sizes)
      for (int dst : sizes) {
        ResampleAxis axis;
        build_resample_axis(mode, src, dst, axis);
        CHECK_EQ(axis.src, src);
        CHECK_EQ(axis.dst, dst);
        CHECK_EQ(static_cast<int>(axis.first.size()), dst);
        CHECK_EQ(static_cast<int>(axis.count.size()), dst);
        CHECK_EQ(static_cast<int>(axis.offset.size()), dst);
        int expected_offset = 0, previous_first = 0, previous_end = 0;
        bool ok = true;
        for (int i = 0; i < dst; ++i) {
          const int first = axis.first[i], count = axis.count[i], end = first + count;
          ok = ok && count >= 1 && first >= 0 && end <= src && axis.offset[i] == expected_offset;
          // The row cache relies on windows that only move forward.
          ok = ok && first >= previous_first && end >= previous_end;
          double sum = 0;
          for (int k = 0; k < count; ++k) {
            const float w = axis.weights[axis.offset[i] + k];
            ok = ok && w > 0.0f;  // zero-weight taps are dropped
            sum += w;
          }
          ok = ok && std::fabs(sum - 1.0) <= 1e-6;
          expected_offset += count;
          previous_first = first;
          previous_end = end;
        }
        CHECK_EQ(static_cast<int>(axis.weights.size()), expected_offset);
        if (!ok)
          ::olt::fail(__FILE__, __LINE__, std::string("bad table: ") + mode_name(mode) + " " +
                                              std::to_string(src) + " -> " + std::to_string(dst));
      }
}

TEST(resample_axis_nearest_index_formula) {
  // floor((i + 0.5) * src / dst), clamped; hand-computed cases including exact ties.
  struct Case { int src, dst; std::vector<int> want; };
  const Case cases[] = {
      {5, 2, {1, 3}},                 // 1.25, 3.75
      {2, 5, {0, 0, 1, 1, 1}},        // 0.2, 0.6, 1.0 (tie lands on 1), 1.4, 1.8
      {3, 2, {0, 2}},                 // 0.75, 2.25
      {4, 4, {0, 1, 2, 3}},
      {1, 3, {0, 0, 0}},
      {6, 4, {0, 2, 3, 5}},           // 0.75, 2.25, 3.75, 5.25
  };
  for (const Case& c : cases) {
    ResampleAxis axis;
    build_resample_axis(ResizeMode::Nearest, c.src, c.dst, axis);
    for (int i = 0; i < c.dst; ++i) {
      CHECK_EQ(axis.first[i], c.want[i]);
      CHECK_EQ(axis.count[i], 1);
      CHECK_EQ(axis.weights[axis.offset[i]], 1.0f);
    }
  }
  // And the formula itself over many sizes.
  for (int src = 1; src <= 300; src += 7)
    for (int dst = 1; dst <= 300; dst += 11) {
      ResampleAxis axis;
      build_resample_axis(ResizeMode::Nearest, src, dst, axis);
      bool ok = true;
      for (int i = 0; i < dst; ++i) {
        // Exact rational floor((2i + 1) * src / (2 dst)) in integers.
        const long long exact = std::min<long long>((2LL * i + 1) * src / (2LL * dst), src - 1);
        ok = ok && axis.first[i] == exact && axis.first[i] == nearest_1d(i, src, dst);
      }
      if (!ok) ::olt::fail(__FILE__, __LINE__, "nearest " + std::to_string(src) + " -> " + std::to_string(dst));
    }
}

TEST(resample_axis_bilinear_and_area_weights) {
  ResampleAxis axis;
  // 4 -> 2: centres at 0.5 and 2.5.
  build_resample_axis(ResizeMode::Bilinear, 4, 2, axis);
  CHECK_EQ(axis.first[0], 0); CHECK_EQ(axis.count[0], 2);
  CHECK_NEAR(axis.weights[axis.offset[0]], 0.5, 1e-7); CHECK_NEAR(axis.weights[axis.offset[0] + 1], 0.5, 1e-7);
  CHECK_EQ(axis.first[1], 2); CHECK_EQ(axis.count[1], 2);
  // 2 -> 4: -0.25 (clamped to 0, one tap), 0.25, 0.75, 1.25 (clamped to 1, one tap).
  build_resample_axis(ResizeMode::Bilinear, 2, 4, axis);
  CHECK_EQ(axis.first[0], 0); CHECK_EQ(axis.count[0], 1); CHECK_EQ(axis.weights[axis.offset[0]], 1.0f);
  CHECK_EQ(axis.first[1], 0); CHECK_EQ(axis.count[1], 2);
  CHECK_NEAR(axis.weights[axis.offset[1]], 0.75, 1e-7); CHECK_NEAR(axis.weights[axis.offset[1] + 1], 0.25, 1e-7);
  CHECK_EQ(axis.first[2], 0); CHECK_EQ(axis.count[2], 2);
  CHECK_NEAR(axis.weights[axis.offset[2]], 0.25, 1e-7);
  CHECK_EQ(axis.first[3], 1); CHECK_EQ(axis.count[3], 1);
  // 9 -> 3: centres exactly on pixels 1, 4, 7: one tap each.
  build_resample_axis(ResizeMode::Bilinear, 9, 3, axis);
  for (int i = 0; i < 3; ++i) { CHECK_EQ(axis.first[i], 3 * i + 1); CHECK_EQ(axis.count[i], 1); }
  // Area 3 -> 2: [0, 1.5) and [1.5, 3).
  build_resample_axis(ResizeMode::Area, 3, 2, axis);
  CHECK_EQ(axis.first[0], 0); CHECK_EQ(axis.count[0], 2);
  CHECK_NEAR(axis.weights[axis.offset[0]], 2.0 / 3, 1e-7); CHECK_NEAR(axis.weights[axis.offset[0] + 1], 1.0 / 3, 1e-7);
  CHECK_EQ(axis.first[1], 1); CHECK_EQ(axis.count[1], 2);
  CHECK_NEAR(axis.weights[axis.offset[1]], 1.0 / 3, 1e-7); CHECK_NEAR(axis.weights[axis.offset[1] + 1], 2.0 / 3, 1e-7);
  // Area 2 -> 3 (enlarging): [0, 2/3), [2/3, 4/3), [4/3, 2).
  build_resample_axis(ResizeMode::Area, 2, 3, axis);
  CHECK_EQ(axis.count[0], 1); CHECK_EQ(axis.first[0], 0);
  CHECK_EQ(axis.count[1], 2); CHECK_NEAR(axis.weights[axis.offset[1]], 0.5, 1e-7);
  CHECK_EQ(axis.count[2], 1); CHECK_EQ(axis.first[2], 1);
  // Area 8 -> 2: four equal taps.
  build_resample_axis(ResizeMode::Area, 8, 2, axis);
  CHECK_EQ(axis.count[1], 4); CHECK_EQ(axis.first[1], 4);
  for (int k = 0; k < 4; ++k) CHECK_EQ(axis.weights[axis.offset[1] + k], 0.25f);
}

TEST(preprocess_rejects_bad_input) {
  PreprocessScratch scratch;
  const TestImage img(8, 8, 0, 1);
  std::vector<float> out(4 * 4 * 3);
  PreprocessSpec spec = make_spec(4, 4, ResizeMode::Bilinear, Layout::NCHW, ColorOrder::RGB, 0);
  RgbView view = img.view();
  RgbView narrow = view;
  narrow.row_stride = 8 * 3 - 1;
  CHECK_THROWS_KIND(resize_normalize(narrow, spec, scratch, out.data()), ErrorKind::Validation);
  RgbView empty = view;
  empty.width = 0;
  CHECK_THROWS_KIND(resize_normalize(empty, spec, scratch, out.data()), ErrorKind::Validation);
  PreprocessSpec zero_std = spec;
  zero_std.std[1] = 0.0f;
  CHECK_THROWS_KIND(resize_normalize(view, zero_std, scratch, out.data()), ErrorKind::Validation);
  PreprocessSpec no_size = spec;
  no_size.height = 0;
  CHECK_THROWS_KIND(resize_normalize(view, no_size, scratch, out.data()), ErrorKind::Validation);
  ResampleAxis axis;
  CHECK_THROWS_KIND(build_resample_axis(ResizeMode::Area, 0, 4, axis), ErrorKind::Validation);
  CHECK_THROWS_KIND(build_resample_axis(ResizeMode::Nearest, 4, -1, axis), ErrorKind::Validation);
}
