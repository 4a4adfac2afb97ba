// Internal to stage 4 (postprocess.cpp): the per-row kernels of the segmentation upsampler, in a
// portable scalar version and Highway versions picked at run time (postprocess_simd.cpp). No SIMD
// types here: the labeler sees plain pointers and function pointers.
//
// Every kernel performs the same float operations in the same order per value as its scalar
// version, and the files are compiled with floating-point contraction off (CMakeLists.txt), so
// every target, the scalar kernels and every CPU give bit-identical labels, counts and scores.
#pragma once

#include <cstddef>
#include <cstdint>

namespace openlookout {
namespace postprocess_kernels {

// Horizontal taps in the form the row kernels read: entry i interpolates
//   weight0[i] * v[tap0[i]]                          when tap1[i] == tap0[i] (one tap)
//   weight0[i] * v[tap0[i]] + weight1[i] * v[tap1[i]]  otherwise (two taps)
// where v is one channel of a row and taps are value offsets (source column * column stride).
struct TapTable {
  const int32_t* tap0;
  const int32_t* tap1;
  const float* weight0;
  const float* weight1;
};

enum class DecisionKind {
  Threshold,      // C == 1: label = value >= threshold; key = value
  Logits,         // C >= 2, softmax logits: key = best - background
  Probabilities,  // C >= 2, probabilities: key = best, background = channel 0
};

// What the labeler needs to account one entry without recomputing it. For C >= 2, best is the
// largest of channels 1.. (ties to the lower index) and the label is its channel when best >
// background (channel 0), else 0.
struct RowDecisions {
  uint8_t* labels;
  float* key;
  float* background;  // Probabilities only
};

struct DecisionRule {
  DecisionKind kind;
  int channels;
  float threshold;  // Threshold only (NaN: never)
};

// Interpolates and decides entries [begin, end) of `taps` for the row whose channel k starts at
// values + k * channel_stride, writing entry i of `out`. From the start of each channel,
// `row_extent` values may be read (the last tap offset + 1); the SIMD kernels load whole vectors
// within it instead of gathering where the taps of a vector lie close together.
using DecideEntriesFn = void (*)(const float* values, ptrdiff_t channel_stride, size_t row_extent,
                                 const TapTable& taps, const DecisionRule& rule, size_t begin,
                                 size_t end, const RowDecisions& out);

// dst[j] = sum_t weights[t] * rows[t * row_stride + j], j < n; taps added in order t = 0, 1, ...
using BlendRowsFn = void (*)(float* dst, const float* rows, ptrdiff_t row_stride,
                             const float* weights, int taps, size_t n);

// Expands one label per run to one per column: out[x] = run_labels[block_first_run[x / 16] +
// offset_in_block[x]], x < width; every run spans at least one column, so the runs of 16
// columns are at most 16 consecutive entries (one 16-byte table lookup). run_labels must be
// readable 16 bytes past the last run's label.
using ExpandRunsFn = void (*)(const uint8_t* run_labels, const int32_t* block_first_run,
                              const uint8_t* offset_in_block, size_t width, uint8_t* out);
constexpr size_t kExpandBlock = 16;

// counts[k] += number of labels[x] == k, x < n, k < label_count (at most kMaxCountedLabels).
using CountLabelsFn = void (*)(const uint8_t* labels, size_t n, int label_count,
                               uint64_t* counts);
constexpr int kMaxCountedLabels = 8;

struct RowKernels {
  DecideEntriesFn decide_entries;
  BlendRowsFn blend_rows;
  ExpandRunsFn expand_runs;
  CountLabelsFn count_labels;
};

// The best Highway target of this CPU, or the scalar kernels when set_postprocess_simd_enabled
// (postprocess.h) turned SIMD off or the build has no Highway.
RowKernels select_row_kernels();

}  // namespace postprocess_kernels
}  // namespace openlookout
