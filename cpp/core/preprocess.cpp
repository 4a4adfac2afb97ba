// Stage 2: resize + normalize + layout. See preprocess.h for the exact semantics.
//
// The resampling is separable, and the two passes run in whichever order is cheaper for the tap
// tables at hand (see vertical_first_is_cheaper); both compute the same sums, up to float rounding:
//   horizontal first: each source row that some destination row needs is resampled to dst width
//      once, into a ring of float rows in scratch.rows; then, per destination row, its tap rows
//      are summed with their weights (or, for a single tap of weight 1, used as they are).
//      Chosen when rows are shared (enlarging) or few rows are taps (nearest, bilinear far down).
//   vertical first: per destination row, its tap source rows are summed straight from the bytes
//      into one source-width float row (dense, fully vectorized), which is then resampled
//      horizontally once. Chosen when many source rows fold into each destination row (area
//      shrinking: about 4x faster at 2048 -> 256; bilinear at moderate ratios).
// Either way the last step, per destination row, normalizes with one multiply-add per value,
// maps to the model's colour order and writes `out` once, planar (NCHW) or interleaved (NHWC);
// the working set is a few rows and stays in L1/L2. Rows are interleaved RGB floats in the
// source's colour order until that last step.
//
// Every kernel exists twice: a portable scalar loop (written for auto-vectorization, and the
// reference the SIMD kernels are tested against) and a Google Highway version compiled for each
// SIMD target and picked at run time. The file includes itself once per target through
// hwy/foreach_target.h, so it is split into three parts:
//   part 1  shared types and scalar kernels          (compiled once, include-guarded)
//   part 2  Highway kernels                          (compiled once per target)
//   part 3  tap tables, dispatch, resize_normalize   (compiled once, HWY_ONCE)
// Building with -DOPENLOOKOUT_NO_HWY leaves out part 2 and libhwy; everything then runs the
// scalar kernels.

// ============================================================================================
// Part 1: shared types and scalar kernels.
#ifndef OPENLOOKOUT_PREPROCESS_CPP_PART1
#define OPENLOOKOUT_PREPROCESS_CPP_PART1

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "errors.h"
#include "preprocess.h"

namespace openlookout {
namespace preprocess_kernels {

constexpr int kChannels = 3;

// x = v * gain + bias per SOURCE channel (R, G, B of the image), gain = scale / std,
// bias = -mean / std of the model channel that the source channel feeds.
struct ChannelAffine {
  float gain[kChannels];
  float bias[kChannels];
};

// One axis of taps as the horizontal kernels read it. The SIMD kernels compute pixels
// [0, vector_end) with 4-lane loads at each tap, which read one value past the tap's pixel, and
// the rest with scalar code; the scalar kernels ignore vector_end.
struct HorizontalTaps {
  const int* first;
  const int* count;
  const int* offset;
  const float* weights;
  int width;  // destination pixels
  int vector_end;
};

// --- horizontal: one source row -> dst width, interleaved float RGB -------------------------

template <typename T>
inline void horizontal_scalar(const T* __restrict src_row, const HorizontalTaps& taps, int begin,
                              float* __restrict dst_row) {
  for (int x = begin; x < taps.width; ++x) {
    const T* __restrict p = src_row + static_cast<size_t>(taps.first[x]) * kChannels;
    const float* __restrict w = taps.weights + taps.offset[x];
    const int n = taps.count[x];
    float r = 0.0f, g = 0.0f, b = 0.0f;
    for (int k = 0; k < n; ++k) {
      r += w[k] * static_cast<float>(p[kChannels * k + 0]);
      g += w[k] * static_cast<float>(p[kChannels * k + 1]);
      b += w[k] * static_cast<float>(p[kChannels * k + 2]);
    }
    dst_row[kChannels * x + 0] = r;
    dst_row[kChannels * x + 1] = g;
    dst_row[kChannels * x + 2] = b;
  }
}

inline void horizontal_from_bytes_scalar(const uint8_t* src_row, const HorizontalTaps& taps,
                                         float* dst_row) {
  horizontal_scalar(src_row, taps, 0, dst_row);
}

inline void horizontal_from_floats_scalar(const float* src_row, const HorizontalTaps& taps,
                                          float* dst_row) {
  horizontal_scalar(src_row, taps, 0, dst_row);
}

// uint8 -> float, values [begin, n). Stages a source row whose pixels are dense taps: converting
// once beats converting at every tap.
inline void widen_range_scalar(const uint8_t* __restrict src, size_t begin, size_t n,
                               float* __restrict dst) {
  for (size_t i = begin; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void widen_row_scalar(const uint8_t* src, size_t n, float* dst) {
  widen_range_scalar(src, 0, n, dst);
}

// --- vertical: acc = (accumulate ? acc : 0) + sum_k weights[k] * rows[k], values [begin, n) --
// Taps are added in order k = 0, 1, ... in every implementation, so they round alike. T = float
// rows from the horizontal pass, or uint8_t source rows when the vertical pass runs first.
template <typename T>
inline void vertical_sum_scalar(const T* const* rows, const float* weights, int taps, size_t begin,
                                size_t n, bool accumulate, float* __restrict acc) {
  int k = 0;
  if (!accumulate) {
    const T* __restrict r0 = rows[0];
    const float w0 = weights[0];
    if (taps >= 2) {
      const T* __restrict r1 = rows[1];
      const float w1 = weights[1];
      for (size_t j = begin; j < n; ++j)
        acc[j] = w0 * static_cast<float>(r0[j]) + w1 * static_cast<float>(r1[j]);
      k = 2;
    } else {
      for (size_t j = begin; j < n; ++j) acc[j] = w0 * static_cast<float>(r0[j]);
      k = 1;
    }
  }
  for (; k < taps; ++k) {
    const T* __restrict r = rows[k];
    const float w = weights[k];
    for (size_t j = begin; j < n; ++j) acc[j] += w * static_cast<float>(r[j]);
  }
}

inline void vertical_sum_floats_scalar(const float* const* rows, const float* weights, int taps,
                                       size_t n, bool accumulate, float* acc) {
  vertical_sum_scalar(rows, weights, taps, 0, n, accumulate, acc);
}
inline void vertical_sum_bytes_scalar(const uint8_t* const* rows, const float* weights, int taps,
                                      size_t n, bool accumulate, float* acc) {
  vertical_sum_scalar(rows, weights, taps, 0, n, accumulate, acc);
}

// --- normalize + layout of one row (T = float from the resampler, uint8_t without resize) ---

// Planar: source channel s of pixel x goes to planes[s][x].
template <typename T>
inline void normalize_to_planes_scalar(const T* __restrict row, int begin, int width,
                                       const ChannelAffine& affine, float* __restrict plane0,
                                       float* __restrict plane1, float* __restrict plane2) {
  const float g0 = affine.gain[0], g1 = affine.gain[1], g2 = affine.gain[2];
  const float b0 = affine.bias[0], b1 = affine.bias[1], b2 = affine.bias[2];
  for (int x = begin; x < width; ++x) plane0[x] = static_cast<float>(row[kChannels * x + 0]) * g0 + b0;
  for (int x = begin; x < width; ++x) plane1[x] = static_cast<float>(row[kChannels * x + 1]) * g1 + b1;
  for (int x = begin; x < width; ++x) plane2[x] = static_cast<float>(row[kChannels * x + 2]) * g2 + b2;
}

// Interleaved: pixel x is written as (R, G, B), or (B, G, R) when `reverse`.
template <typename T>
inline void normalize_to_pixels_scalar(const T* __restrict row, int begin, int width,
                                       const ChannelAffine& affine, bool reverse,
                                       float* __restrict out) {
  const float g0 = affine.gain[0], g1 = affine.gain[1], g2 = affine.gain[2];
  const float b0 = affine.bias[0], b1 = affine.bias[1], b2 = affine.bias[2];
  const int first = reverse ? 2 : 0;
  const int last = 2 - first;
  for (int x = begin; x < width; ++x) {
    const T* __restrict p = row + kChannels * x;
    const float r = static_cast<float>(p[0]) * g0 + b0;
    const float g = static_cast<float>(p[1]) * g1 + b1;
    const float b = static_cast<float>(p[2]) * g2 + b2;
    out[kChannels * x + first] = r;
    out[kChannels * x + 1] = g;
    out[kChannels * x + last] = b;
  }
}

inline void normalize_floats_to_planes_scalar(const float* row, int width, const ChannelAffine& a,
                                              float* p0, float* p1, float* p2) {
  normalize_to_planes_scalar(row, 0, width, a, p0, p1, p2);
}
inline void normalize_bytes_to_planes_scalar(const uint8_t* row, int width, const ChannelAffine& a,
                                             float* p0, float* p1, float* p2) {
  normalize_to_planes_scalar(row, 0, width, a, p0, p1, p2);
}
inline void normalize_floats_to_pixels_scalar(const float* row, int width, const ChannelAffine& a,
                                              bool reverse, float* out) {
  normalize_to_pixels_scalar(row, 0, width, a, reverse, out);
}
inline void normalize_bytes_to_pixels_scalar(const uint8_t* row, int width, const ChannelAffine& a,
                                             bool reverse, float* out) {
  normalize_to_pixels_scalar(row, 0, width, a, reverse, out);
}

}  // namespace preprocess_kernels
}  // namespace openlookout

#endif  // OPENLOOKOUT_PREPROCESS_CPP_PART1

// ============================================================================================
// Part 2: Highway kernels, once per SIMD target. Same contracts and tap order as part 1.
#ifndef OPENLOOKOUT_NO_HWY

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "preprocess.cpp"  // found through the include path (-I cpp/core)
#include <hwy/foreach_target.h>              // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace openlookout {
namespace preprocess_kernels {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_SCALAR
// Highway's one-lane fallback (CPUs without SSSE3): the portable loops do at least as well.
void HorizontalFromBytes(const uint8_t* src_row, const HorizontalTaps& taps, float* dst_row) {
  horizontal_from_bytes_scalar(src_row, taps, dst_row);
}
void HorizontalFromFloats(const float* src_row, const HorizontalTaps& taps, float* dst_row) {
  horizontal_from_floats_scalar(src_row, taps, dst_row);
}
void WidenRow(const uint8_t* src, size_t n, float* dst) { widen_row_scalar(src, n, dst); }
void VerticalSumFloats(const float* const* rows, const float* weights, int taps, size_t n,
                       bool accumulate, float* acc) {
  vertical_sum_floats_scalar(rows, weights, taps, n, accumulate, acc);
}
void VerticalSumBytes(const uint8_t* const* rows, const float* weights, int taps, size_t n,
                      bool accumulate, float* acc) {
  vertical_sum_bytes_scalar(rows, weights, taps, n, accumulate, acc);
}
void NormalizeFloatsToPlanes(const float* row, int width, const ChannelAffine& a, float* p0,
                             float* p1, float* p2) {
  normalize_floats_to_planes_scalar(row, width, a, p0, p1, p2);
}
void NormalizeBytesToPlanes(const uint8_t* row, int width, const ChannelAffine& a, float* p0,
                            float* p1, float* p2) {
  normalize_bytes_to_planes_scalar(row, width, a, p0, p1, p2);
}
void NormalizeFloatsToPixels(const float* row, int width, const ChannelAffine& a, bool reverse,
                             float* out) {
  normalize_floats_to_pixels_scalar(row, width, a, reverse, out);
}
void NormalizeBytesToPixels(const uint8_t* row, int width, const ChannelAffine& a, bool reverse,
                            float* out) {
  normalize_bytes_to_pixels_scalar(row, width, a, reverse, out);
}
#else

namespace hn = hwy::HWY_NAMESPACE;

// One RGB pixel per 4-lane vector (the 4th lane is the next pixel's red, ignored): a tap is one
// load and one multiply-add whatever the ratio, and the result is stored as 4 floats of which
// the next pixel overwrites the last (row buffers have kRowSlack floats of slack).
using Pixel4 = hn::FixedTag<float, 4>;

// Loads 4 source values at p as floats.
HWY_INLINE hn::Vec<Pixel4> LoadPixel4(const uint8_t* HWY_RESTRICT p) {
  const Pixel4 df;
  const hn::Rebind<int32_t, Pixel4> di;
  const hn::Rebind<uint8_t, Pixel4> du8;
  return hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, p)));
}
HWY_INLINE hn::Vec<Pixel4> LoadPixel4(const float* HWY_RESTRICT p) { return hn::LoadU(Pixel4(), p); }

template <typename T>
HWY_INLINE void HorizontalPixels(const T* HWY_RESTRICT src_row, const HorizontalTaps& taps,
                                 float* HWY_RESTRICT dst_row) {
  const Pixel4 df;
  const int* HWY_RESTRICT first = taps.first;
  const int* HWY_RESTRICT count = taps.count;
  const int* HWY_RESTRICT offset = taps.offset;
  const float* HWY_RESTRICT weights = taps.weights;
  int x = 0;
  for (; x < taps.vector_end; ++x) {
    const T* HWY_RESTRICT p = src_row + static_cast<size_t>(first[x]) * kChannels;
    const float* HWY_RESTRICT w = weights + offset[x];
    const int n = count[x];
    auto acc = hn::Mul(hn::Set(df, w[0]), LoadPixel4(p));
    if (n == 2) {  // bilinear: straight-line code instead of a 1-trip loop (~20% on that pass)
      acc = hn::MulAdd(hn::Set(df, w[1]), LoadPixel4(p + kChannels), acc);
    } else {
      for (int k = 1; k < n; ++k) acc = hn::MulAdd(hn::Set(df, w[k]), LoadPixel4(p + kChannels * k), acc);
    }
    hn::StoreU(acc, df, dst_row + static_cast<size_t>(x) * kChannels);
  }
  horizontal_scalar(src_row, taps, x, dst_row);
}

void HorizontalFromBytes(const uint8_t* HWY_RESTRICT src_row, const HorizontalTaps& taps,
                         float* HWY_RESTRICT dst_row) {
  HorizontalPixels(src_row, taps, dst_row);
}

void HorizontalFromFloats(const float* HWY_RESTRICT src_row, const HorizontalTaps& taps,
                          float* HWY_RESTRICT dst_row) {
  HorizontalPixels(src_row, taps, dst_row);
}

void WidenRow(const uint8_t* HWY_RESTRICT src, size_t n, float* HWY_RESTRICT dst) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    hn::StoreU(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, src + i))), df, dst + i);
  widen_range_scalar(src, i, n, dst);
}

void VerticalSumFloats(const float* const* rows, const float* weights, int taps, size_t n,
                       bool accumulate, float* HWY_RESTRICT acc) {
  const hn::ScalableTag<float> df;
  const size_t lanes = hn::Lanes(df);
  size_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    int k = 0;
    auto sum = accumulate ? hn::LoadU(df, acc + j) : hn::Zero(df);
    if (!accumulate) {
      sum = hn::Mul(hn::Set(df, weights[0]), hn::LoadU(df, rows[0] + j));
      k = 1;
    }
    for (; k < taps; ++k) sum = hn::MulAdd(hn::Set(df, weights[k]), hn::LoadU(df, rows[k] + j), sum);
    hn::StoreU(sum, df, acc + j);
  }
  vertical_sum_scalar(rows, weights, taps, j, n, accumulate, acc);
}

// Source rows are the caller's memory and may end exactly at the last pixel: whole vectors as
// far as they fit, then the scalar loop.
void VerticalSumBytes(const uint8_t* const* rows, const float* weights, int taps, size_t n,
                      bool accumulate, float* HWY_RESTRICT acc) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  const size_t lanes = hn::Lanes(df);
  auto load = [&](const uint8_t* p) { return hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, p))); };
  size_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    int k = 0;
    auto sum = accumulate ? hn::LoadU(df, acc + j) : hn::Zero(df);
    if (!accumulate) {
      sum = hn::Mul(hn::Set(df, weights[0]), load(rows[0] + j));
      k = 1;
    }
    for (; k < taps; ++k) sum = hn::MulAdd(hn::Set(df, weights[k]), load(rows[k] + j), sum);
    hn::StoreU(sum, df, acc + j);
  }
  vertical_sum_scalar(rows, weights, taps, j, n, accumulate, acc);
}

// Loads `lanes` interleaved pixels as three channel vectors of floats.
HWY_INLINE void LoadChannels(const float* HWY_RESTRICT p, hn::Vec<hn::ScalableTag<float>>& c0,
                             hn::Vec<hn::ScalableTag<float>>& c1, hn::Vec<hn::ScalableTag<float>>& c2) {
  hn::LoadInterleaved3(hn::ScalableTag<float>(), p, c0, c1, c2);
}
HWY_INLINE void LoadChannels(const uint8_t* HWY_RESTRICT p, hn::Vec<hn::ScalableTag<float>>& c0,
                             hn::Vec<hn::ScalableTag<float>>& c1, hn::Vec<hn::ScalableTag<float>>& c2) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  hn::Vec<decltype(du8)> b0, b1, b2;
  hn::LoadInterleaved3(du8, p, b0, b1, b2);
  c0 = hn::ConvertTo(df, hn::PromoteTo(di, b0));
  c1 = hn::ConvertTo(df, hn::PromoteTo(di, b1));
  c2 = hn::ConvertTo(df, hn::PromoteTo(di, b2));
}

template <typename T>
HWY_INLINE void ToPlanes(const T* HWY_RESTRICT row, int width, const ChannelAffine& a,
                         float* HWY_RESTRICT p0, float* HWY_RESTRICT p1, float* HWY_RESTRICT p2) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const auto g0 = hn::Set(df, a.gain[0]), g1 = hn::Set(df, a.gain[1]), g2 = hn::Set(df, a.gain[2]);
  const auto b0 = hn::Set(df, a.bias[0]), b1 = hn::Set(df, a.bias[1]), b2 = hn::Set(df, a.bias[2]);
  int x = 0;
  for (; x + lanes <= width; x += lanes) {
    hn::Vec<decltype(df)> c0, c1, c2;
    LoadChannels(row + static_cast<size_t>(x) * kChannels, c0, c1, c2);
    hn::StoreU(hn::MulAdd(c0, g0, b0), df, p0 + x);
    hn::StoreU(hn::MulAdd(c1, g1, b1), df, p1 + x);
    hn::StoreU(hn::MulAdd(c2, g2, b2), df, p2 + x);
  }
  normalize_to_planes_scalar(row, x, width, a, p0, p1, p2);
}

template <typename T>
HWY_INLINE void ToPixels(const T* HWY_RESTRICT row, int width, const ChannelAffine& a, bool reverse,
                         float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const auto g0 = hn::Set(df, a.gain[0]), g1 = hn::Set(df, a.gain[1]), g2 = hn::Set(df, a.gain[2]);
  const auto b0 = hn::Set(df, a.bias[0]), b1 = hn::Set(df, a.bias[1]), b2 = hn::Set(df, a.bias[2]);
  int x = 0;
  for (; x + lanes <= width; x += lanes) {
    hn::Vec<decltype(df)> c0, c1, c2;
    LoadChannels(row + static_cast<size_t>(x) * kChannels, c0, c1, c2);
    c0 = hn::MulAdd(c0, g0, b0);
    c1 = hn::MulAdd(c1, g1, b1);
    c2 = hn::MulAdd(c2, g2, b2);
    float* HWY_RESTRICT o = out + static_cast<size_t>(x) * kChannels;
    if (reverse) {
      hn::StoreInterleaved3(c2, c1, c0, df, o);
    } else {
      hn::StoreInterleaved3(c0, c1, c2, df, o);
    }
  }
  normalize_to_pixels_scalar(row, x, width, a, reverse, out);
}

void NormalizeFloatsToPlanes(const float* row, int width, const ChannelAffine& a, float* p0,
                             float* p1, float* p2) {
  ToPlanes(row, width, a, p0, p1, p2);
}
void NormalizeBytesToPlanes(const uint8_t* row, int width, const ChannelAffine& a, float* p0,
                            float* p1, float* p2) {
  ToPlanes(row, width, a, p0, p1, p2);
}
void NormalizeFloatsToPixels(const float* row, int width, const ChannelAffine& a, bool reverse,
                             float* out) {
  ToPixels(row, width, a, reverse, out);
}
void NormalizeBytesToPixels(const uint8_t* row, int width, const ChannelAffine& a, bool reverse,
                            float* out) {
  ToPixels(row, width, a, reverse, out);
}

#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace HWY_NAMESPACE
}  // namespace preprocess_kernels
}  // namespace openlookout
HWY_AFTER_NAMESPACE();

#endif  // OPENLOOKOUT_NO_HWY

// ============================================================================================
// Part 3: tap tables, kernel selection and the stage itself (compiled once).
#if defined(OPENLOOKOUT_NO_HWY) || HWY_ONCE

namespace openlookout {
namespace preprocess_kernels {

#ifndef OPENLOOKOUT_NO_HWY
HWY_EXPORT(HorizontalFromBytes);
HWY_EXPORT(HorizontalFromFloats);
HWY_EXPORT(WidenRow);
HWY_EXPORT(VerticalSumFloats);
HWY_EXPORT(VerticalSumBytes);
HWY_EXPORT(NormalizeFloatsToPlanes);
HWY_EXPORT(NormalizeBytesToPlanes);
HWY_EXPORT(NormalizeFloatsToPixels);
HWY_EXPORT(NormalizeBytesToPixels);
#endif

namespace {

struct Kernels {
  void (*horizontal_from_bytes)(const uint8_t*, const HorizontalTaps&, float*);
  void (*horizontal_from_floats)(const float*, const HorizontalTaps&, float*);
  void (*widen_row)(const uint8_t*, size_t, float*);
  void (*vertical_sum_floats)(const float* const*, const float*, int, size_t, bool, float*);
  void (*vertical_sum_bytes)(const uint8_t* const*, const float*, int, size_t, bool, float*);
  void (*floats_to_planes)(const float*, int, const ChannelAffine&, float*, float*, float*);
  void (*bytes_to_planes)(const uint8_t*, int, const ChannelAffine&, float*, float*, float*);
  void (*floats_to_pixels)(const float*, int, const ChannelAffine&, bool, float*);
  void (*bytes_to_pixels)(const uint8_t*, int, const ChannelAffine&, bool, float*);
};

// Test hooks (see set_preprocess_simd_enabled and set_preprocess_resample_order below).
std::atomic<bool> g_simd_enabled{true};
std::atomic<int> g_forced_order{0};  // 0: cheaper, 1: horizontal first, 2: vertical first

Kernels select_kernels() {
#ifndef OPENLOOKOUT_NO_HWY
  if (g_simd_enabled.load(std::memory_order_relaxed)) {
    // Until a target is chosen, the tables hold a trampoline that picks one (CPUID, slow in a VM)
    // on every call through it; choose now so the pointers below are the target's own kernels.
    hwy::ChosenTarget& chosen = hwy::GetChosenTarget();
    if (!chosen.IsInitialized()) chosen.Update(hwy::SupportedTargets());
    return {&HWY_DYNAMIC_DISPATCH(HorizontalFromBytes),     &HWY_DYNAMIC_DISPATCH(HorizontalFromFloats),
            &HWY_DYNAMIC_DISPATCH(WidenRow),                &HWY_DYNAMIC_DISPATCH(VerticalSumFloats),
            &HWY_DYNAMIC_DISPATCH(VerticalSumBytes),
            &HWY_DYNAMIC_DISPATCH(NormalizeFloatsToPlanes), &HWY_DYNAMIC_DISPATCH(NormalizeBytesToPlanes),
            &HWY_DYNAMIC_DISPATCH(NormalizeFloatsToPixels), &HWY_DYNAMIC_DISPATCH(NormalizeBytesToPixels)};
  }
#endif
  return {&horizontal_from_bytes_scalar,      &horizontal_from_floats_scalar,
          &widen_row_scalar,                  &vertical_sum_floats_scalar,
          &vertical_sum_bytes_scalar,
          &normalize_floats_to_planes_scalar, &normalize_bytes_to_planes_scalar,
          &normalize_floats_to_pixels_scalar, &normalize_bytes_to_pixels_scalar};
}

// Floats of slack after every row buffer: the 4-lane horizontal kernels store a whole vector
// for the last RGB pixel (3 useful lanes + 1), and read one float past a staged source row.
constexpr size_t kRowSlack = 4;
// Row buffers start on 64-byte boundaries relative to the buffer (cache lines; the widest x86
// vector).
constexpr size_t round_up_to_vector(size_t n) { return (n + 15) / 16 * 16; }
// Taps summed per vertical-sum call (tap row pointers live on the stack); more are summed in
// further calls that accumulate.
constexpr int kMaxTapsPerPass = 16;

ChannelAffine make_channel_affine(const PreprocessSpec& spec) {
  if (!std::isfinite(spec.scale)) throw_validation("preprocess: scale must be finite");
  ChannelAffine affine{};
  for (int c = 0; c < kChannels; ++c) {
    if (!std::isfinite(spec.std[c]) || spec.std[c] == 0.0f || !std::isfinite(spec.mean[c]))
      throw_validation("preprocess: mean must be finite and std finite and non-zero");
    // Model channel c reads source channel s (BGR models: channel 0 is blue).
    const int s = spec.color == ColorOrder::BGR ? kChannels - 1 - c : c;
    // In double, so that gain and bias are each the correctly rounded float of their quotient.
    affine.gain[s] = static_cast<float>(static_cast<double>(spec.scale) / spec.std[c]);
    affine.bias[s] = static_cast<float>(-static_cast<double>(spec.mean[c]) / spec.std[c]);
  }
  return affine;
}

// Writes destination row y of `out` from one interleaved row in source colour order.
template <typename T>
void write_output_row(const Kernels& kernels, const T* row, int y, const PreprocessSpec& spec,
                      const ChannelAffine& affine, float* out) {
  const int width = spec.width;
  if (spec.layout == Layout::NCHW) {
    const size_t plane = static_cast<size_t>(width) * static_cast<size_t>(spec.height);
    float* row0 = out + static_cast<size_t>(y) * static_cast<size_t>(width);
    // Source channel s goes to model plane s (RGB) or 2 - s (BGR).
    const bool bgr = spec.color == ColorOrder::BGR;
    float* plane_r = row0 + (bgr ? 2 : 0) * plane;
    float* plane_g = row0 + plane;
    float* plane_b = row0 + (bgr ? 0 : 2) * plane;
    if constexpr (std::is_same<T, float>::value)
      kernels.floats_to_planes(row, width, affine, plane_r, plane_g, plane_b);
    else
      kernels.bytes_to_planes(row, width, affine, plane_r, plane_g, plane_b);
  } else {
    float* o = out + static_cast<size_t>(y) * static_cast<size_t>(width) * kChannels;
    const bool reverse = spec.color == ColorOrder::BGR;
    if constexpr (std::is_same<T, float>::value)
      kernels.floats_to_pixels(row, width, affine, reverse, o);
    else
      kernels.bytes_to_pixels(row, width, affine, reverse, o);
  }
}

// ----------------------------------------------------------------------------------------------
// Tap tables

void reset_axis(ResampleAxis& axis, ResizeMode mode, int src, int dst) {
  // clear() keeps the capacity: rebuilding a table for the same or a smaller size allocates
  // nothing.
  axis.first.clear();
  axis.count.clear();
  axis.offset.clear();
  axis.weights.clear();
  axis.src = src;
  axis.dst = dst;
  axis.mode = mode;
}

// Records destination index i as the `count` weights just appended, starting at source `first`.
void push_taps(ResampleAxis& axis, int first, int count) {
  axis.offset.push_back(static_cast<int>(axis.weights.size()) - count);
  axis.first.push_back(first);
  axis.count.push_back(count);
}

void build_bilinear_axis(int src, int dst, ResampleAxis& axis) {
  for (int i = 0; i < dst; ++i) {
    double sx = (i + 0.5) * src / dst - 0.5;
    sx = std::min(std::max(sx, 0.0), static_cast<double>(src - 1));
    const int x0 = static_cast<int>(std::floor(sx));
    const int x1 = std::min(x0 + 1, src - 1);
    const double w1 = sx - x0;  // in [0, 1): sx - floor(sx) is exact at these magnitudes
    const double w0 = 1.0 - w1;
    if (x1 == x0 || w1 == 0.0) {
      // The second tap contributes nothing (edge clamp, or the centre falls exactly on a source
      // pixel, e.g. every pixel when shrinking by an odd integer factor). Dropping it leaves the
      // result unchanged and spares the horizontal pass a source row that nobody needs.
      axis.weights.push_back(1.0f);
      push_taps(axis, x0, 1);
    } else {
      axis.weights.push_back(static_cast<float>(w0));
      axis.weights.push_back(static_cast<float>(w1));
      push_taps(axis, x0, 2);
    }
  }
}

void build_area_axis(int src, int dst, ResampleAxis& axis) {
  // Destination i covers [i * src / dst, (i + 1) * src / dst). In units of 1 / dst its bounds are
  // the integers i * src and (i + 1) * src and source pixel j covers [j * dst, (j + 1) * dst), so
  // every overlap is an exact integer and weight = overlap / (src / dst) = overlap_units / src
  // (computed in double). The weights of i sum to exactly 1 before rounding to float, and the
  // first and last taps come from integer floor and ceil, so no tap has zero overlap.
  const int64_t s = src;
  const int64_t d = dst;
  for (int i = 0; i < dst; ++i) {
    const int64_t lo = i * s;
    const int64_t hi = (i + 1) * s;
    const int64_t j_first = lo / d;
    const int64_t j_end = std::min((hi + d - 1) / d, s);
    int count = 0;
    for (int64_t j = j_first; j < j_end; ++j) {
      const int64_t overlap = std::min(hi, (j + 1) * d) - std::max(lo, j * d);
      axis.weights.push_back(static_cast<float>(static_cast<double>(overlap) / static_cast<double>(s)));
      ++count;
    }
    push_taps(axis, static_cast<int>(j_first), count);
  }
}

void build_nearest_axis(int src, int dst, ResampleAxis& axis) {
  for (int i = 0; i < dst; ++i) {
    // (i + 0.5) * src is exact in double and the quotient correctly rounded; it is either an
    // exact integer or at least 1 / (2 * dst) away from one, so floor() is the exact rational
    // floor((2i + 1) * src / (2 * dst)).
    const int j = std::min(static_cast<int>(std::floor((i + 0.5) * src / dst)), src - 1);
    axis.weights.push_back(1.0f);
    push_taps(axis, j, 1);
  }
}

// Destination pixels [0, result) never have the last source pixel as a tap, so a 4-byte load at
// any of their taps stays inside the source row. Tap windows end monotonically, so only a short
// suffix is left for the scalar tail. With stage_source_rows as it is, bytes are read directly
// only when shrinking more than 2x, where neither bilinear nor nearest reaches the last pixel
// (the suffix is empty); this keeps the loads safe if that rule changes.
int pixels_before_last_source_pixel(const ResampleAxis& axis) {
  int x = axis.dst;
  while (x > 0 && axis.first[x - 1] + axis.count[x - 1] >= axis.src) --x;
  return x;
}

void validate(const RgbView& src, const PreprocessSpec& spec, const float* out) {
  if (src.pixels == nullptr || src.width <= 0 || src.height <= 0)
    throw_validation("preprocess: the image is empty");
  if (src.row_stride < static_cast<size_t>(src.width) * kChannels)
    throw_validation("preprocess: row stride " + std::to_string(src.row_stride) +
                     " is smaller than 3 * width " + std::to_string(src.width));
  if (spec.width <= 0 || spec.height <= 0)
    throw_validation("preprocess: the model input size must be positive, got " +
                     std::to_string(spec.width) + "x" + std::to_string(spec.height));
  if (out == nullptr) throw_internal("preprocess: no output buffer");
}

}  // namespace
}  // namespace preprocess_kernels

// Test hook, deliberately not in preprocess.h: false makes resize_normalize use the portable
// scalar kernels, true (the default) the best Highway target of this CPU. Returns the previous
// setting. Without Highway (OPENLOOKOUT_NO_HWY) the scalar kernels are the only ones.
bool set_preprocess_simd_enabled(bool enabled) {
  return preprocess_kernels::g_simd_enabled.exchange(enabled);
}

// Test hook, like the one above: 1 forces the horizontal pass first, 2 the vertical pass first,
// 0 (the default) picks the cheaper order. Both orders compute the same resampling and differ
// only in float rounding. Returns the previous setting.
int set_preprocess_resample_order(int order) {
  return preprocess_kernels::g_forced_order.exchange(order);
}

void build_resample_axis(ResizeMode mode, int src, int dst, ResampleAxis& axis) {
  using namespace preprocess_kernels;
  if (src <= 0 || dst <= 0)
    throw_validation("resample: sizes must be positive, got " + std::to_string(src) + " -> " +
                     std::to_string(dst));
  reset_axis(axis, mode, src, dst);
  switch (mode) {
    case ResizeMode::Bilinear:
      build_bilinear_axis(src, dst, axis);
      return;
    case ResizeMode::Area:
      build_area_axis(src, dst, axis);
      return;
    case ResizeMode::Nearest:
      build_nearest_axis(src, dst, axis);
      return;
  }
  reset_axis(axis, mode, -1, -1);
  throw_validation("resample: unknown resize mode");
}

namespace preprocess_kernels {
namespace {

// Whether the horizontal pass should first widen each source row to floats in one vectorized
// pass: worth it when the taps cover at least half of the source pixels (area; bilinear below 2x
// shrink). For sparse taps (bilinear/nearest shrinking far) the bytes are read at each tap.
bool stage_source_rows(const ResampleAxis& xa) {
  return 2 * xa.weights.size() >= static_cast<size_t>(xa.src);
}

// Which order is cheaper, from the tap tables alone (so the scalar and SIMD kernels always take
// the same order and round alike). Costs are in dense multiply-adds of one channel value (uint8
// conversion included); one tap of one pixel in the horizontal pass costs about
// kHorizontalTapCost of those (measured: AVX2/AVX-512 and the scalar kernels agree within 2x).
//   horizontal first: rows_used * (taps_x * K [+ widening]) + taps_y * dst values
//   vertical first:   taps_y * src values + dst_h * taps_x * K
// Area shrinking goes vertical first (about 4x faster at 2048 -> 256), enlarging and nearest go
// horizontal first, bilinear shrinking is close to even at 8x and goes vertical first below.
constexpr int64_t kHorizontalTapCost = 20;

bool vertical_first_is_cheaper(const ResampleAxis& xa, const ResampleAxis& ya) {
  int64_t rows_used = 0;  // distinct source rows that are taps
  int64_t taps_y = 0;
  int previous_end = 0;
  for (int y = 0; y < ya.dst; ++y) {
    const int end = ya.first[y] + ya.count[y];
    rows_used += end - std::max(ya.first[y], previous_end);  // windows only move forward
    previous_end = end;
    taps_y += ya.count[y];
  }
  const int64_t taps_x = static_cast<int64_t>(xa.weights.size());
  const int64_t src_values = static_cast<int64_t>(xa.src) * kChannels;
  const int64_t dst_values = static_cast<int64_t>(xa.dst) * kChannels;
  const int64_t horizontal_first =
      rows_used * (taps_x * kHorizontalTapCost + (stage_source_rows(xa) ? src_values : 0)) +
      taps_y * dst_values;
  const int64_t vertical_first = taps_y * src_values + ya.dst * taps_x * kHorizontalTapCost;
  return vertical_first < horizontal_first;
}

// Horizontal pass first, over the source rows that are taps, cached in a ring; then the vertical
// sum per destination row. Best when source rows are shared between destination rows
// (enlarging) or only a few rows are taps (bilinear/nearest shrinking).
void resample_horizontal_first(const RgbView& src, const PreprocessSpec& spec,
                               const ChannelAffine& affine, const Kernels& kernels,
                               PreprocessScratch& scratch, float* out) {
  const ResampleAxis& xa = scratch.x_axis;
  const ResampleAxis& ya = scratch.y_axis;
  const int dst_w = spec.width;
  const int dst_h = spec.height;

  const size_t src_floats = static_cast<size_t>(src.width) * kChannels;
  const bool stage_rows = stage_source_rows(xa);
  // A staged row has kRowSlack floats after its last pixel, so every pixel can use 4-lane loads.
  const HorizontalTaps taps{xa.first.data(), xa.count.data(), xa.offset.data(), xa.weights.data(),
                            dst_w, stage_rows ? dst_w : pixels_before_last_source_pixel(xa)};

  // Ring of horizontally resampled source rows: row r lives in slot r % slots. The tap windows
  // [first, first + count) of successive destination rows only move forward, so with as many
  // slots as the widest window a row is evicted only after the last destination row that needs
  // it, and each source row is resampled at most once per call.
  int slots = 1;
  for (int y = 0; y < dst_h; ++y) slots = std::max(slots, ya.count[y]);
  const size_t row_floats = static_cast<size_t>(dst_w) * kChannels;
  const size_t pitch = round_up_to_vector(row_floats + kRowSlack);
  const size_t staging_floats = stage_rows ? round_up_to_vector(src_floats + kRowSlack) : 0;
  // Layout: [slots ring rows][vertical accumulator][staged source row].
  const size_t needed = pitch * (static_cast<size_t>(slots) + 1) + staging_floats;
  if (scratch.rows.size() < needed) scratch.rows.resize(needed);  // grows only
  if (scratch.row_of_slot.size() < static_cast<size_t>(slots))
    scratch.row_of_slot.resize(static_cast<size_t>(slots));
  std::fill(scratch.row_of_slot.begin(), scratch.row_of_slot.begin() + slots, -1);
  float* const ring = scratch.rows.data();
  float* const acc = ring + pitch * static_cast<size_t>(slots);
  float* const staged = acc + pitch;
  int* const row_of_slot = scratch.row_of_slot.data();
  // The 4-lane kernels read one float past the staged row's last pixel: keep it a finite value.
  if (stage_rows) std::fill(staged + src_floats, staged + src_floats + kRowSlack, 0.0f);

  const float* tap_rows[kMaxTapsPerPass];
  for (int y = 0; y < dst_h; ++y) {
    const int first = ya.first[y];
    const int count = ya.count[y];
    const float* weights = ya.weights.data() + ya.offset[y];
    for (int r = first; r < first + count; ++r) {
      float* slot_row = ring + pitch * static_cast<size_t>(r % slots);
      if (row_of_slot[r % slots] == r) continue;
      if (stage_rows) {
        kernels.widen_row(src.row(r), src_floats, staged);
        kernels.horizontal_from_floats(staged, taps, slot_row);
      } else {
        kernels.horizontal_from_bytes(src.row(r), taps, slot_row);
      }
      row_of_slot[r % slots] = r;
    }

    const float* row = acc;
    if (count == 1 && weights[0] == 1.0f) {
      row = ring + pitch * static_cast<size_t>(first % slots);  // a copy would change nothing
    } else {
      for (int k0 = 0; k0 < count; k0 += kMaxTapsPerPass) {
        const int n = std::min(kMaxTapsPerPass, count - k0);
        for (int k = 0; k < n; ++k) tap_rows[k] = ring + pitch * static_cast<size_t>((first + k0 + k) % slots);
        kernels.vertical_sum_floats(tap_rows, weights + k0, n, row_floats, k0 > 0, acc);
      }
    }
    write_output_row(kernels, row, y, spec, affine, out);
  }
}

// Vertical sum first, straight from the source bytes into one full-width float row, then the
// horizontal pass once per destination row. Best when many source rows fold into each
// destination row (area shrinking): the per-source-row work is then a dense, fully vectorized
// multiply-add instead of the per-pixel tap loop of the horizontal pass.
void resample_vertical_first(const RgbView& src, const PreprocessSpec& spec,
                             const ChannelAffine& affine, const Kernels& kernels,
                             PreprocessScratch& scratch, float* out) {
  const ResampleAxis& xa = scratch.x_axis;
  const ResampleAxis& ya = scratch.y_axis;
  const size_t src_floats = static_cast<size_t>(src.width) * kChannels;
  const size_t row_floats = static_cast<size_t>(spec.width) * kChannels;
  // The column sum has kRowSlack floats after its last pixel: every pixel can use 4-lane loads.
  const HorizontalTaps taps{xa.first.data(), xa.count.data(), xa.offset.data(), xa.weights.data(),
                            spec.width, spec.width};
  // Layout: [source-width vertical sum][destination row].
  const size_t sum_floats = round_up_to_vector(src_floats + kRowSlack);
  const size_t needed = sum_floats + round_up_to_vector(row_floats + kRowSlack);
  if (scratch.rows.size() < needed) scratch.rows.resize(needed);  // grows only
  float* const column_sum = scratch.rows.data();
  float* const dst_row = column_sum + sum_floats;
  // The 4-lane kernels read one float past the last pixel: keep it a finite value.
  std::fill(column_sum + src_floats, column_sum + src_floats + kRowSlack, 0.0f);

  const uint8_t* tap_rows[kMaxTapsPerPass];
  for (int y = 0; y < spec.height; ++y) {
    const int first = ya.first[y];
    const int count = ya.count[y];
    const float* weights = ya.weights.data() + ya.offset[y];
    for (int k0 = 0; k0 < count; k0 += kMaxTapsPerPass) {
      const int n = std::min(kMaxTapsPerPass, count - k0);
      for (int k = 0; k < n; ++k) tap_rows[k] = src.row(first + k0 + k);
      kernels.vertical_sum_bytes(tap_rows, weights + k0, n, src_floats, k0 > 0, column_sum);
    }
    kernels.horizontal_from_floats(column_sum, taps, dst_row);
    write_output_row(kernels, dst_row, y, spec, affine, out);
  }
}

}  // namespace
}  // namespace preprocess_kernels

void resize_normalize(const RgbView& src, const PreprocessSpec& spec, PreprocessScratch& scratch,
                      float* out) {
  using namespace preprocess_kernels;
  validate(src, spec, out);
  const ChannelAffine affine = make_channel_affine(spec);
  const Kernels kernels = select_kernels();

  // Same size: every mode is the identity (bilinear lands on pixel centres with weight 1, area
  // covers exactly one pixel, nearest picks it), so only normalize + layout remain.
  if (src.width == spec.width && src.height == spec.height) {
    for (int y = 0; y < spec.height; ++y) write_output_row(kernels, src.row(y), y, spec, affine, out);
    return;
  }

  // Tables are keyed by (src, dst) only: ResampleAxis has no mode field, and a scratch belongs to
  // one pipeline, whose spec (so its mode) is fixed.
  ResampleAxis& xa = scratch.x_axis;
  ResampleAxis& ya = scratch.y_axis;
  if (!xa.built_for(spec.resize, src.width, spec.width)) build_resample_axis(spec.resize, src.width, spec.width, xa);
  if (!ya.built_for(spec.resize, src.height, spec.height)) build_resample_axis(spec.resize, src.height, spec.height, ya);

  const int forced = g_forced_order.load(std::memory_order_relaxed);
  const bool vertical_first = forced == 0 ? vertical_first_is_cheaper(xa, ya) : forced == 2;
  if (vertical_first)
    resample_vertical_first(src, spec, affine, kernels, scratch, out);
  else
    resample_horizontal_first(src, spec, affine, kernels, scratch, out);
}

}  // namespace openlookout

#endif  // defined(OPENLOOKOUT_NO_HWY) || HWY_ONCE
