// Stage 4's per-row kernels (see postprocess_simd.h): interpolate one row's channels at a list of
// horizontal tap entries and decide each entry, and blend source rows vertically.
//
// Like preprocess.cpp, the file includes itself once per SIMD target through
// hwy/foreach_target.h and is split into three parts:
//   part 1  scalar kernels                       (compiled once, include-guarded)
//   part 2  Highway kernels                      (compiled once per target)
//   part 3  kernel selection and the test hook   (compiled once, HWY_ONCE)
// Building with -DOPENLOOKOUT_NO_HWY leaves out part 2; everything then runs the scalar kernels.
//
// The labels are decisions (argmax, threshold), so a one-ulp difference in an interpolated value
// can flip a pixel. Every SIMD kernel therefore does, per value, exactly the scalar kernel's
// operations: separate multiplies and adds in the same order (never MulAdd), comparisons with the
// same strictness, selects instead of Max where a tie between -0 and +0 could pick another zero.
// The file is compiled with -ffp-contract=off so the compiler does not fuse them either, in the
// scalar kernels (which also run as the SIMD kernels' tails, inside FMA-enabled targets) or in
// the vector code.

// ============================================================================================
// Part 1: scalar kernels.
#ifndef OPENLOOKOUT_POSTPROCESS_SIMD_CPP_PART1
#define OPENLOOKOUT_POSTPROCESS_SIMD_CPP_PART1

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "postprocess.h"
#include "postprocess_simd.h"

namespace openlookout {
namespace postprocess_kernels {

inline float interpolate_scalar(const float* channel, const TapTable& taps, size_t i) {
  const float first = taps.weight0[i] * channel[taps.tap0[i]];
  if (taps.tap1[i] == taps.tap0[i]) return first;
  return first + taps.weight1[i] * channel[taps.tap1[i]];
}

inline void decide_entries_scalar(const float* values, ptrdiff_t channel_stride,
                                  size_t /*row_extent*/, const TapTable& taps, const DecisionRule& rule, size_t begin,
                                  size_t end, const RowDecisions& out) {
  for (size_t i = begin; i < end; ++i) {
    if (rule.kind == DecisionKind::Threshold) {
      const float v = interpolate_scalar(values, taps, i);
      out.labels[i] = v >= rule.threshold ? 1 : 0;
      out.key[i] = v;
      continue;
    }
    const float background = interpolate_scalar(values, taps, i);
    float best = interpolate_scalar(values + channel_stride, taps, i);
    int best_channel = 1;
    for (int k = 2; k < rule.channels; ++k) {
      const float z = interpolate_scalar(values + k * channel_stride, taps, i);
      if (z > best) {
        best = z;
        best_channel = k;
      }
    }
    out.labels[i] = best > background ? static_cast<uint8_t>(best_channel) : 0;
    if (rule.kind == DecisionKind::Logits) {
      out.key[i] = best - background;
    } else {
      out.key[i] = best;
      out.background[i] = background;
    }
  }
}

inline void blend_rows_range_scalar(float* dst, const float* rows, ptrdiff_t row_stride,
                                    const float* weights, int taps, size_t begin, size_t n) {
  if (taps == 2) {
    const float w0 = weights[0], w1 = weights[1];
    const float* a = rows;
    const float* b = rows + row_stride;
    for (size_t j = begin; j < n; ++j) dst[j] = w0 * a[j] + w1 * b[j];
    return;
  }
  const float w0 = weights[0];
  for (size_t j = begin; j < n; ++j) dst[j] = w0 * rows[j];
  for (int t = 1; t < taps; ++t) {
    const float w = weights[t];
    const float* r = rows + t * row_stride;
    for (size_t j = begin; j < n; ++j) dst[j] += w * r[j];
  }
}

inline void expand_runs_range_scalar(const uint8_t* run_labels, const int32_t* block_first_run,
                                     const uint8_t* offset_in_block, size_t begin, size_t width,
                                     uint8_t* out) {
  for (size_t x = begin; x < width; ++x)
    out[x] = run_labels[block_first_run[x / kExpandBlock] + offset_in_block[x]];
}

inline void expand_runs_scalar(const uint8_t* run_labels, const int32_t* block_first_run,
                               const uint8_t* offset_in_block, size_t width, uint8_t* out) {
  expand_runs_range_scalar(run_labels, block_first_run, offset_in_block, 0, width, out);
}

inline void count_labels_range_scalar(const uint8_t* labels, size_t begin, size_t n,
                                      uint64_t* counts) {
  for (size_t x = begin; x < n; ++x) ++counts[labels[x]];
}

inline void count_labels_scalar(const uint8_t* labels, size_t n, int /*label_count*/,
                                uint64_t* counts) {
  count_labels_range_scalar(labels, 0, n, counts);
}

inline void blend_rows_scalar(float* dst, const float* rows, ptrdiff_t row_stride,
                              const float* weights, int taps, size_t n) {
  blend_rows_range_scalar(dst, rows, row_stride, weights, taps, 0, n);
}

}  // namespace postprocess_kernels
}  // namespace openlookout

#endif  // OPENLOOKOUT_POSTPROCESS_SIMD_CPP_PART1

// ============================================================================================
// Part 2: Highway kernels, once per SIMD target. Same contracts and operations as part 1.
#ifndef OPENLOOKOUT_NO_HWY

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "postprocess_simd.cpp"  // found through the include path (-I cpp/core)
#include <hwy/foreach_target.h>                    // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace openlookout {
namespace postprocess_kernels {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_SCALAR
// Highway's one-lane fallback: the portable loops are the same thing.
void DecideEntries(const float* values, ptrdiff_t channel_stride, size_t row_extent,
                   const TapTable& taps, const DecisionRule& rule, size_t begin, size_t end,
                   const RowDecisions& out) {
  decide_entries_scalar(values, channel_stride, row_extent, taps, rule, begin, end, out);
}
void BlendRows(float* dst, const float* rows, ptrdiff_t row_stride, const float* weights, int taps,
               size_t n) {
  blend_rows_scalar(dst, rows, row_stride, weights, taps, n);
}
void ExpandRuns(const uint8_t* run_labels, const int32_t* block_first_run,
                const uint8_t* offset_in_block, size_t width, uint8_t* out) {
  expand_runs_scalar(run_labels, block_first_run, offset_in_block, width, out);
}
void CountLabels(const uint8_t* labels, size_t n, int label_count, uint64_t* counts) {
  count_labels_scalar(labels, n, label_count, counts);
}
#else

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;
using MF = hn::Mask<DF>;

// The taps of `lanes` consecutive entries, loaded once and used for every channel.
struct EntryTaps {
  VI tap0, tap1;
  VF weight0, weight1;
  MF one_tap;        // lanes whose second tap does not exist
  bool all_one_tap;  // then the second tap is not read
  // When all taps lie within one or two vectors' span of values from `window`, as they do for
  // upsampled planar rows, they are picked from those loads by lane permutations: much cheaper
  // than gathers, and the same values. window_vectors is 0 (gather), 1 or 2.
  int window_vectors;
  size_t window;
  VI window_tap0, window_tap1;  // tap offsets from `window`, modulo lanes when two vectors
  MF tap0_in_low, tap1_in_low;  // two vectors: whether the tap lies in the first
};

HWY_INLINE EntryTaps LoadEntryTaps(const TapTable& taps, size_t i, size_t row_extent) {
  const DF df;
  const DI di;
  const size_t lanes = hn::Lanes(df);
  EntryTaps e;
  e.tap0 = hn::LoadU(di, taps.tap0 + i);
  e.tap1 = hn::LoadU(di, taps.tap1 + i);
  e.weight0 = hn::LoadU(df, taps.weight0 + i);
  e.weight1 = hn::LoadU(df, taps.weight1 + i);
  const auto one_tap = hn::Eq(e.tap1, e.tap0);
  e.one_tap = hn::RebindMask(df, one_tap);
  e.all_one_tap = hn::AllTrue(di, one_tap);
  e.window = static_cast<size_t>(taps.tap0[i]);
  e.window_vectors = 0;
  for (int vectors = 1; vectors <= 2; ++vectors) {
    const size_t span = lanes * static_cast<size_t>(vectors);
    if (e.window + span > row_extent) break;
    const VI start = hn::Set(di, static_cast<int32_t>(e.window));
    const VI offset0 = hn::Sub(e.tap0, start);
    const VI offset1 = hn::Sub(e.tap1, start);
    // tap1 >= tap0 in every entry, so these two bounds cover both.
    const auto outside = hn::Or(hn::Lt(offset0, hn::Zero(di)),
                                hn::Gt(offset1, hn::Set(di, static_cast<int32_t>(span - 1))));
    if (!hn::AllFalse(di, outside)) continue;
    e.window_vectors = vectors;
    if (vectors == 1) {
      e.window_tap0 = offset0;
      e.window_tap1 = offset1;
    } else {
      const VI lane_mask = hn::Set(di, static_cast<int32_t>(lanes - 1));
      const VI lane_count = hn::Set(di, static_cast<int32_t>(lanes));
      e.window_tap0 = hn::And(offset0, lane_mask);
      e.window_tap1 = hn::And(offset1, lane_mask);
      e.tap0_in_low = hn::RebindMask(df, hn::Lt(offset0, lane_count));
      e.tap1_in_low = hn::RebindMask(df, hn::Lt(offset1, lane_count));
    }
    break;
  }
  return e;
}

// interpolate_scalar for `lanes` entries: w0 * v0, plus w1 * v1 where there is a second tap.
HWY_INLINE VF Interpolate(const float* HWY_RESTRICT channel, const EntryTaps& e) {
  const DF df;
  VF value0, value1;
  if (e.window_vectors == 1) {
    const VF window = hn::LoadU(df, channel + e.window);
    value0 = hn::TableLookupLanes(window, hn::IndicesFromVec(df, e.window_tap0));
    value1 = hn::TableLookupLanes(window, hn::IndicesFromVec(df, e.window_tap1));
  } else if (e.window_vectors == 2) {
    const VF low = hn::LoadU(df, channel + e.window);
    const VF high = hn::LoadU(df, channel + e.window + hn::Lanes(df));
    const auto index0 = hn::IndicesFromVec(df, e.window_tap0);
    const auto index1 = hn::IndicesFromVec(df, e.window_tap1);
    value0 = hn::IfThenElse(e.tap0_in_low, hn::TableLookupLanes(low, index0),
                            hn::TableLookupLanes(high, index0));
    value1 = hn::IfThenElse(e.tap1_in_low, hn::TableLookupLanes(low, index1),
                            hn::TableLookupLanes(high, index1));
  } else {
    value0 = hn::GatherIndex(df, channel, e.tap0);
    if (e.all_one_tap) return hn::Mul(e.weight0, value0);
    value1 = hn::GatherIndex(df, channel, e.tap1);
  }
  const VF first = hn::Mul(e.weight0, value0);
  if (e.all_one_tap) return first;
  const VF both = hn::Add(first, hn::Mul(e.weight1, value1));
  return hn::IfThenElse(e.one_tap, first, both);
}

template <DecisionKind kKind>
HWY_INLINE void DecideEntriesOf(const float* HWY_RESTRICT values, ptrdiff_t channel_stride,
                                size_t row_extent, const TapTable& taps, const DecisionRule& rule, size_t begin,
                                size_t end, const RowDecisions& out) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DF> du8;
  const size_t lanes = hn::Lanes(df);
  const VF threshold = hn::Set(df, rule.threshold);
  const VI one = hn::Set(di, 1);
  size_t i = begin;
  for (; i + lanes <= end; i += lanes) {
    const EntryTaps e = LoadEntryTaps(taps, i, row_extent);
    VI label;
    if constexpr (kKind == DecisionKind::Threshold) {
      const VF v = Interpolate(values, e);
      label = hn::IfThenElseZero(hn::RebindMask(di, hn::Ge(v, threshold)), one);
      hn::StoreU(v, df, out.key + i);
    } else {
      const VF background = Interpolate(values, e);
      VF best = Interpolate(values + channel_stride, e);
      VI best_channel = one;
      for (int k = 2; k < rule.channels; ++k) {
        const VF z = Interpolate(values + k * channel_stride, e);
        const MF greater = hn::Gt(z, best);  // strict: ties stay with the lower channel
        best = hn::IfThenElse(greater, z, best);
        best_channel = hn::IfThenElse(hn::RebindMask(di, greater), hn::Set(di, k), best_channel);
      }
      label = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(best, background)), best_channel);
      if constexpr (kKind == DecisionKind::Logits) {
        hn::StoreU(hn::Sub(best, background), df, out.key + i);
      } else {
        hn::StoreU(best, df, out.key + i);
        hn::StoreU(background, df, out.background + i);
      }
    }
    hn::StoreU(hn::DemoteTo(du8, label), du8, out.labels + i);
  }
  decide_entries_scalar(values, channel_stride, row_extent, taps, rule, i, end, out);
}

void DecideEntries(const float* values, ptrdiff_t channel_stride, size_t row_extent,
                   const TapTable& taps, const DecisionRule& rule, size_t begin, size_t end,
                   const RowDecisions& out) {
  switch (rule.kind) {
    case DecisionKind::Threshold:
      return DecideEntriesOf<DecisionKind::Threshold>(values, channel_stride, row_extent, taps,
                                                      rule, begin, end, out);
    case DecisionKind::Logits:
      return DecideEntriesOf<DecisionKind::Logits>(values, channel_stride, row_extent, taps, rule,
                                                   begin, end, out);
    case DecisionKind::Probabilities:
      return DecideEntriesOf<DecisionKind::Probabilities>(values, channel_stride, row_extent, taps,
                                                          rule, begin, end, out);
  }
}

void BlendRows(float* HWY_RESTRICT dst, const float* rows, ptrdiff_t row_stride,
               const float* weights, int taps, size_t n) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t j = 0;
  if (taps == 2) {
    const VF w0 = hn::Set(df, weights[0]), w1 = hn::Set(df, weights[1]);
    const float* a = rows;
    const float* b = rows + row_stride;
    for (; j + lanes <= n; j += lanes) {
      hn::StoreU(hn::Add(hn::Mul(w0, hn::LoadU(df, a + j)), hn::Mul(w1, hn::LoadU(df, b + j))), df,
                 dst + j);
    }
  } else {
    for (; j + lanes <= n; j += lanes) {
      VF sum = hn::Mul(hn::Set(df, weights[0]), hn::LoadU(df, rows + j));
      for (int t = 1; t < taps; ++t)
        sum = hn::Add(sum, hn::Mul(hn::Set(df, weights[t]), hn::LoadU(df, rows + t * row_stride + j)));
      hn::StoreU(sum, df, dst + j);
    }
  }
  blend_rows_range_scalar(dst, rows, row_stride, weights, taps, j, n);
}

// One 16-byte table lookup per 16 columns (every target has 16-byte byte shuffles).
void ExpandRuns(const uint8_t* HWY_RESTRICT run_labels, const int32_t* block_first_run,
                const uint8_t* HWY_RESTRICT offset_in_block, size_t width,
                uint8_t* HWY_RESTRICT out) {
  const hn::FixedTag<uint8_t, kExpandBlock> d8;
  size_t x = 0;
  for (; x + kExpandBlock <= width; x += kExpandBlock) {
    const auto labels = hn::LoadU(d8, run_labels + block_first_run[x / kExpandBlock]);
    hn::StoreU(hn::TableLookupBytes(labels, hn::LoadU(d8, offset_in_block + x)), d8, out + x);
  }
  expand_runs_range_scalar(run_labels, block_first_run, offset_in_block, x, width, out);
}

// One compare and mask count per label and vector, instead of a read-modify-write of a counter
// per pixel.
void CountLabels(const uint8_t* HWY_RESTRICT labels, size_t n, int label_count,
                 uint64_t* HWY_RESTRICT counts) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t lanes = hn::Lanes(d8);
  uint64_t local[kMaxCountedLabels] = {};
  size_t x = 0;
  for (; x + lanes <= n; x += lanes) {
    const auto v = hn::LoadU(d8, labels + x);
    for (int k = 0; k < label_count; ++k)
      local[k] += hn::CountTrue(d8, hn::Eq(v, hn::Set(d8, static_cast<uint8_t>(k))));
  }
  for (int k = 0; k < label_count; ++k) counts[k] += local[k];
  count_labels_range_scalar(labels, x, n, counts);
}

#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace HWY_NAMESPACE
}  // namespace postprocess_kernels
}  // namespace openlookout
HWY_AFTER_NAMESPACE();

#endif  // OPENLOOKOUT_NO_HWY

// ============================================================================================
// Part 3: kernel selection and the test hook (compiled once).
#if defined(OPENLOOKOUT_NO_HWY) || HWY_ONCE

namespace openlookout {
namespace postprocess_kernels {

#ifndef OPENLOOKOUT_NO_HWY
HWY_EXPORT(DecideEntries);
HWY_EXPORT(BlendRows);
HWY_EXPORT(ExpandRuns);
HWY_EXPORT(CountLabels);
#endif

namespace {
std::atomic<bool> g_simd_enabled{true};
}  // namespace

RowKernels select_row_kernels() {
#ifndef OPENLOOKOUT_NO_HWY
  if (g_simd_enabled.load(std::memory_order_relaxed)) {
    // Until a target is chosen the tables hold a trampoline that picks one (CPUID) on every call
    // through it; choose now so the pointers are the target's own kernels.
    hwy::ChosenTarget& chosen = hwy::GetChosenTarget();
    if (!chosen.IsInitialized()) chosen.Update(hwy::SupportedTargets());
    return {&HWY_DYNAMIC_DISPATCH(DecideEntries), &HWY_DYNAMIC_DISPATCH(BlendRows),
            &HWY_DYNAMIC_DISPATCH(ExpandRuns), &HWY_DYNAMIC_DISPATCH(CountLabels)};
  }
#endif
  return {&decide_entries_scalar, &blend_rows_scalar, &expand_runs_scalar, &count_labels_scalar};
}

}  // namespace postprocess_kernels

bool set_postprocess_simd_enabled(bool enabled) {
  return postprocess_kernels::g_simd_enabled.exchange(enabled);
}

}  // namespace openlookout

#endif  // defined(OPENLOOKOUT_NO_HWY) || HWY_ONCE
