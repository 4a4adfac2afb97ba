// Stage 4: model outputs -> verdict, and for segmentation the full-size label map.
//
// Segmentation upsamples the model's score planes to the image size and decides a label per
// full-size pixel. Maps reach 4096 x 4096 with 3 channels, so the work is shaped around that:
//   Nearest:  each sampled source pixel is decided once; its label is replicated over the run of
//             output columns that read it, and output rows that read the same source row are
//             copied from the row above. No arithmetic per output pixel.
//   Bilinear: per output row, the vertical pass blends the (one or two) source rows into
//             scratch.row_buffer (C * spec.width floats); the horizontal pass interpolates the C
//             values of an output pixel and decides. Because bilinear values are convex
//             combinations, whole blocks of pixels between the same source samples are decided
//             from their corners (see BilinearLabeler), so only mask boundaries are decided pixel
//             by pixel.
// Pixel counts are kept per row and per run, not per pixel, and the anomalous probability s is
// tracked inside the same loops, in a form that needs no transcendental function per pixel.
// The arithmetic on values (vertical blend, horizontal interpolation, argmax / threshold) is done
// by the row kernels of postprocess_simd.cpp, Highway-dispatched, a whole row's run ends per
// call; they are bit-identical on every target, so the labeler's choices never depend on it.

#include "postprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "errors.h"
#include "postprocess_simd.h"

namespace openlookout {
namespace {

constexpr float kInfinity = std::numeric_limits<float>::infinity();
// Labels are uint8: C >= 2 channels give labels 0 .. C-1, so C is at most 256.
constexpr int kMaxChannels = 256;

// Logistic function in double; each branch only evaluates exp of a non-positive number, so it
// never overflows (sigmoid(+-inf) = 1 / 0, sigmoid(NaN) = NaN).
double sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

float sigmoid_float(float x) { return static_cast<float>(sigmoid(static_cast<double>(x))); }

// Floats mapped to unsigned integers in the same order (-inf lowest, +inf highest), so that a
// search over floats can bisect integers.
uint32_t ordered_key(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
float from_ordered_key(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The smallest float x with sigmoid_float(x) >= threshold; NaN when there is none (then
// `x >= result` is false for every x, which is what the label rule needs). Deciding
// `logit >= raw_threshold` per pixel is then exactly `sigmoid_float(logit) >= threshold`
// (sigmoid_float is non-decreasing), without an exp per pixel.
float sigmoid_raw_threshold(float threshold) {
  if (sigmoid_float(-kInfinity) >= threshold) return -kInfinity;
  if (!(sigmoid_float(kInfinity) >= threshold)) return std::numeric_limits<float>::quiet_NaN();
  uint32_t below = ordered_key(-kInfinity);  // sigmoid_float(below) < threshold
  uint32_t at_or_above = ordered_key(kInfinity);  // sigmoid_float(at_or_above) >= threshold
  while (at_or_above - below > 1) {
    const uint32_t middle = below + (at_or_above - below) / 2;
    if (sigmoid_float(from_ordered_key(middle)) >= threshold) {
      at_or_above = middle;
    } else {
      below = middle;
    }
  }
  return from_ordered_key(at_or_above);
}

// NaN scores would make every comparison false and the mask silently background. Checked on the
// bit patterns (NaN: exponent all ones, mantissa non-zero) with a running maximum, a loop
// compilers vectorize, unlike a floating-point self-comparison.
bool contains_nan(const float* values, size_t count) {
  uint32_t largest_magnitude = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    bits &= 0x7fffffffu;
    largest_magnitude = bits > largest_magnitude ? bits : largest_magnitude;
  }
  return largest_magnitude > 0x7f800000u;
}

// Where the values of a score map live: value of channel k at pixel (x, y) is
// scores[y * row_stride + x * column_stride + k * channel_stride].
struct ScoreLayout {
  const float* scores = nullptr;
  int channels = 0;
  int height = 0;
  int width = 0;
  bool channels_last = false;
  ptrdiff_t channel_stride = 0;
  ptrdiff_t column_stride = 0;
  ptrdiff_t row_stride = 0;
};

// One row of values the horizontal taps read: channel k of the value at tap offset o is
// values[k * channel_stride + o]. The column stride is part of the tap offsets (see EntryTables):
// it is the same for a source row read in place and for a blended row.
struct ValueRow {
  const float* values = nullptr;
  ptrdiff_t channel_stride = 0;
};

// Output columns that read the same horizontal taps (same first source column and tap count)
// form a run. The row kernels decide "entries" of scratch's tap tables:
//   [0, width)                      output column x
//   [width, width + runs)           the first column of run r
//   [width + runs, width + 2 runs)  the last column of run r
// so the run ends of a whole row are decided in one vectorized call, and the columns inside a
// run only where its ends disagree.
class EntryTables {
 public:
  // Builds the tables for this call: O(width), no allocation once the scratch has grown.
  EntryTables(const ResampleAxis& x_axis, int width, ptrdiff_t column_stride,
              SegmentationScratch& scratch)
      : width_(width) {
    std::vector<int32_t>& starts = scratch.run_starts;
    starts.clear();
    for (int x = 0; x < width;) {
      starts.push_back(x);
      const int first = x_axis.first[x], count = x_axis.count[x];
      ++x;
      while (x < width && x_axis.first[x] == first && x_axis.count[x] == count) ++x;
    }
    starts.push_back(width);
    runs_ = static_cast<int>(starts.size()) - 1;
    const size_t entries = static_cast<size_t>(width) + 2 * static_cast<size_t>(runs_);
    scratch.tap0.resize(entries);
    scratch.tap1.resize(entries);
    scratch.weight0.resize(entries);
    scratch.weight1.resize(entries);
    // 16 bytes of slack: the run expansion loads 16 run labels at a time.
    scratch.decided_labels.resize(entries + postprocess_kernels::kExpandBlock);
    scratch.decided_key.resize(entries);
    scratch.decided_background.resize(entries);
    for (int x = 0; x < width; ++x) {
      const int count = x_axis.count[x];
      // Nearest and bilinear tables have one or two taps; a tap offset fits int32 because the
      // caller checked that a whole score row does.
      if (count < 1 || count > 2) throw_internal("segmentation: unexpected resampling taps");
      const float* w = x_axis.weights.data() + x_axis.offset[x];
      const int32_t tap = static_cast<int32_t>(x_axis.first[x] * column_stride);
      scratch.tap0[x] = tap;
      scratch.tap1[x] = count == 2 ? static_cast<int32_t>(tap + column_stride) : tap;
      scratch.weight0[x] = w[0];
      scratch.weight1[x] = count == 2 ? w[1] : 0.0f;
    }
    constexpr size_t kBlock = postprocess_kernels::kExpandBlock;
    scratch.block_first_run.resize((static_cast<size_t>(width) + kBlock - 1) / kBlock);
    scratch.offset_in_block.resize(static_cast<size_t>(width));
    scratch.last_decides.resize(static_cast<size_t>(runs_));
    for (int r = 0; r < runs_; ++r) {
      copy_entry(scratch, starts[r], first_entry(r));
      copy_entry(scratch, starts[r + 1] - 1, last_entry(r));
      for (int x = starts[r]; x < starts[r + 1]; ++x) {
        if (x % kBlock == 0) scratch.block_first_run[x / kBlock] = r;
        scratch.offset_in_block[x] = static_cast<uint8_t>(r - scratch.block_first_run[x / kBlock]);
      }
      scratch.last_decides[r] = starts[r + 1] - starts[r] > 1 && x_axis.count[starts[r]] == 2;
    }
    block_first_run_ = scratch.block_first_run.data();
    offset_in_block_ = scratch.offset_in_block.data();
    last_decides_ = scratch.last_decides.data();
    starts_ = starts.data();
    taps_ = {scratch.tap0.data(), scratch.tap1.data(), scratch.weight0.data(),
             scratch.weight1.data()};
    decisions_ = {scratch.decided_labels.data(), scratch.decided_key.data(),
                  scratch.decided_background.data()};
  }

  int runs() const { return runs_; }
  int run_start(int r) const { return starts_[r]; }
  int run_end(int r) const { return starts_[r + 1]; }
  size_t first_entry(int r) const { return static_cast<size_t>(width_) + r; }
  size_t last_entry(int r) const { return static_cast<size_t>(width_) + runs_ + r; }
  // Column x belongs to run block_first_run()[x / 16] + offset_in_block()[x] (the layout
  // RowKernels::expand_runs reads).
  const int32_t* block_first_run() const { return block_first_run_; }
  const uint8_t* offset_in_block() const { return offset_in_block_; }
  // Per run: whether labelling it decides its last column too (two taps, more than one column).
  const uint8_t* last_decides() const { return last_decides_; }
  const postprocess_kernels::TapTable& taps() const { return taps_; }
  const postprocess_kernels::RowDecisions& decisions() const { return decisions_; }

 private:
  static void copy_entry(SegmentationScratch& s, int from, size_t to) {
    s.tap0[to] = s.tap0[from];
    s.tap1[to] = s.tap1[from];
    s.weight0[to] = s.weight0[from];
    s.weight1[to] = s.weight1[from];
  }

  int width_;
  int runs_ = 0;
  const int32_t* starts_ = nullptr;
  const int32_t* block_first_run_ = nullptr;
  const uint8_t* offset_in_block_ = nullptr;
  const uint8_t* last_decides_ = nullptr;
  postprocess_kernels::TapTable taps_{};
  postprocess_kernels::RowDecisions decisions_{};
};

// Decides entries [begin, end) of one value row.
struct RowDecider {
  const postprocess_kernels::RowKernels& kernels;
  const EntryTables& entries;
  postprocess_kernels::DecisionRule rule;

  size_t row_extent;  // values readable from a channel's start: (model width - 1) * column stride + 1

  void operator()(const ValueRow& row, size_t begin, size_t end) const {
    kernels.decide_entries(row.values, row.channel_stride, row_extent, entries.taps(), rule, begin,
                           end, entries.decisions());
  }
};

// The result of running = std::max(running, key) over first_keys[r] and, where last_decides[r],
// last_keys[r], r = 0, 1, ... in that order, bit for bit (no last keys when last_decides is null). Four independent maxima instead of one
// chain: the largest value does not depend on the order, and its bits only do when it is zero
// (+0 and -0 compare equal, std::max keeps the first); that case is redone in order.
float max_of_run_ends(float running, const float* first_keys, const float* last_keys,
                      const uint8_t* last_decides, int runs) {
  float partial[4] = {-kInfinity, -kInfinity, -kInfinity, -kInfinity};
  int r = 0;
  for (; r + 4 <= runs; r += 4) {
    for (int j = 0; j < 4; ++j) {
      partial[j] = std::max(partial[j], first_keys[r + j]);
      if (last_decides != nullptr)
        partial[j] = std::max(partial[j], last_decides[r + j] ? last_keys[r + j] : -kInfinity);
    }
  }
  for (; r < runs; ++r) {
    partial[0] = std::max(partial[0], first_keys[r]);
    if (last_decides != nullptr && last_decides[r]) partial[0] = std::max(partial[0], last_keys[r]);
  }
  const float row_max = std::max(std::max(partial[0], partial[1]), std::max(partial[2], partial[3]));
  if (row_max != 0.0f) return std::max(running, row_max);
  for (r = 0; r < runs; ++r) {
    running = std::max(running, first_keys[r]);
    if (last_decides != nullptr && last_decides[r]) running = std::max(running, last_keys[r]);
  }
  return running;
}

// The decisions below take an entry the row kernels decided and account it into the image score
// s; every entry the labeler uses for a label is taken exactly once, in the labeler's order.

// C == 1: label 1 where the (raw) value >= raw_threshold. For Sigmoid the raw threshold is
// precomputed in logit space, so the activation is applied once, to the maximum, at the end.
class AnomalyMapDecision {
 public:
  static constexpr int kLabelCount = 2;
  explicit AnomalyMapDecision(float raw_threshold) : raw_threshold_(raw_threshold) {}
  int label_count() const { return kLabelCount; }
  postprocess_kernels::DecisionRule rule() const {
    return {postprocess_kernels::DecisionKind::Threshold, 1, raw_threshold_};
  }
  uint8_t take(const postprocess_kernels::RowDecisions& d, size_t entry) {
    max_raw_ = std::max(max_raw_, d.key[entry]);
    return d.labels[entry];
  }
  // take() of the first end of runs [0, runs) and, where last_decides[r] (not null), of their
  // last end, in that order; the labels are not needed.
  void take_run_ends(const postprocess_kernels::RowDecisions& d, size_t first, size_t last,
                     const uint8_t* last_decides, int runs) {
    max_raw_ = max_of_run_ends(max_raw_, d.key + first, d.key + last, last_decides, runs);
  }
  float max_raw() const { return max_raw_; }

 private:
  float raw_threshold_;
  float max_raw_ = -kInfinity;
};

// C >= 2: argmax with ties to the lower index (decided by the row kernels).
//   kLogits (Softmax): tracks max over pixels of (max_{k>=1} z_k - z_0) in float; the label is
//     anomalous exactly when that difference is > 0.
//   otherwise (probabilities): log p_k - log p_0 is maximal where p_k / p_0 is, so the best ratio
//     is kept as a fraction (num / den) and compared by cross-multiplication in double, which is
//     exact for float inputs; p_0 = 0 < p_k gives den = 0, an infinite margin. At the end
//     s = sigmoid(log num - log den) = num / (num + den), no log needed.
template <bool kLogits>
class ClassDecision {
 public:
  explicit ClassDecision(int channels) : channels_(channels) {}
  int label_count() const { return channels_; }
  postprocess_kernels::DecisionRule rule() const {
    return {kLogits ? postprocess_kernels::DecisionKind::Logits
                    : postprocess_kernels::DecisionKind::Probabilities,
            channels_, 0.0f};
  }
  uint8_t take(const postprocess_kernels::RowDecisions& d, size_t entry) {
    if constexpr (kLogits) {
      max_margin_ = std::max(max_margin_, d.key[entry]);
    } else {
      // Negative "probabilities" (a model outside its contract) count as 0.
      const double num = std::max(d.key[entry], 0.0f);
      const double den = std::max(d.background[entry], 0.0f);
      if (num * best_den_ > best_num_ * den) {
        best_num_ = num;
        best_den_ = den;
      }
    }
    return d.labels[entry];
  }
  // take() of the first end of runs [0, runs) and, where last_decides[r] (not null), of their
  // last end, in that order; the labels are not needed.
  void take_run_ends(const postprocess_kernels::RowDecisions& d, size_t first, size_t last,
                     const uint8_t* last_decides, int runs) {
    if constexpr (kLogits) {
      max_margin_ = max_of_run_ends(max_margin_, d.key + first, d.key + last, last_decides, runs);
    } else {
      for (int r = 0; r < runs; ++r) {
        take(d, first + r);
        if (last_decides != nullptr && last_decides[r]) take(d, last + r);
      }
    }
  }
  double anomalous_probability() const {
    if constexpr (kLogits) {
      return sigmoid(static_cast<double>(max_margin_));
    } else {
      return best_num_ / (best_num_ + best_den_);  // (0, 1) -> 0; (p, 0) -> 1
    }
  }

 private:
  int channels_;
  float max_margin_ = -kInfinity;
  double best_num_ = 0.0;  // the "nothing yet" fraction 0 / 1 is a margin of -inf
  double best_den_ = 1.0;
};

// Row histograms are added into the totals once per output row.
using RowHistogram = std::array<uint64_t, kMaxChannels>;

void add_row_histogram(const RowHistogram& row_counts, int label_count, uint64_t* counts) {
  for (int k = 0; k < label_count; ++k) counts[k] += row_counts[k];
}

// Sets n labels to `label`. Runs are often a few pixels long (upsampling by 2..16), where a
// memset call costs more than the stores; 8-byte stores (overlapping at the tail) cover those.
inline void fill_labels(uint8_t* labels, uint8_t label, int n) {
  if (n >= 8) {
    if (n > 64) {
      std::memset(labels, label, static_cast<size_t>(n));
      return;
    }
    const uint64_t pattern = 0x0101010101010101ull * label;
    for (int i = 0; i + 8 <= n; i += 8) std::memcpy(labels + i, &pattern, 8);
    std::memcpy(labels + n - 8, &pattern, 8);
  } else if (n >= 4) {
    const uint32_t pattern = 0x01010101u * label;
    std::memcpy(labels, &pattern, 4);
    std::memcpy(labels + n - 4, &pattern, 4);
  } else {
    labels[0] = label;
    labels[n >> 1] = label;
    labels[n - 1] = label;
  }
}

// Nearest: each run of output columns reads one source pixel, decided once (all runs of a source
// row in one vectorized call) and replicated over the run (a byte shuffle per 16 columns); output
// rows that read the same source row are copied from the row above.
template <class Decision>
void label_nearest(const ScoreLayout& source, const ResampleAxis& y_axis, int width, int height,
                   const postprocess_kernels::RowKernels& kernels, const EntryTables& entries,
                   const RowDecider& decide_row, Decision& decide, uint8_t* labels,
                   uint64_t* counts) {
  const int label_count = decide.label_count();
  const postprocess_kernels::RowDecisions& decided = entries.decisions();
  RowHistogram row_counts{};
  int previous_source_row = -1;
  for (int y = 0; y < height; ++y) {
    uint8_t* row = labels + static_cast<size_t>(y) * width;
    const int source_row_index = y_axis.first[y];
    if (source_row_index == previous_source_row) {
      std::memcpy(row, row - width, static_cast<size_t>(width));
    } else {
      std::fill(row_counts.begin(), row_counts.begin() + label_count, 0);
      const ValueRow source_row{source.scores + source_row_index * source.row_stride,
                                source.channel_stride};
      const int runs = entries.runs();
      decide_row(source_row, entries.first_entry(0), entries.first_entry(0) + runs);
      decide.take_run_ends(decided, entries.first_entry(0), entries.last_entry(0), nullptr, runs);
      const uint8_t* run_labels = decided.labels + entries.first_entry(0);
      kernels.expand_runs(run_labels, entries.block_first_run(), entries.offset_in_block(),
                          static_cast<size_t>(width), row);
      if (label_count <= postprocess_kernels::kMaxCountedLabels) {
        kernels.count_labels(row, static_cast<size_t>(width), label_count, row_counts.data());
      } else {
        for (int r = 0; r < runs; ++r)
          row_counts[run_labels[r]] += static_cast<uint64_t>(entries.run_end(r) - entries.run_start(r));
      }
      previous_source_row = source_row_index;
    }
    add_row_histogram(row_counts, label_count, counts);
  }
}

// Bilinear upsampling and decision, without deciding every pixel.
//
// Output pixels of one run read the same two source values, so their values are points on one
// segment. Output rows that read the same two source rows form a band. So a block (band x run)
// of output pixels holds values that are convex combinations of the values at its four corner
// pixels, and:
//   - if the corners share a label, every pixel in the block has it (each "label k wins against
//     channel j" is a linear inequality that holds at the corners, hence in between);
//   - the block's largest anomalous margin is at a corner (max_k z_k - z_0 is convex, p_k / p_0
//     is linear-fractional, a C == 1 score is linear).
// The first and last row of each band are labelled run by run (both ends of each run decided,
// the pixels between only when the ends differ); the rows between are filled per block from the
// corner labels, or copied whole when the band's first and last rows agree everywhere. Only blocks
// whose corners disagree (mask boundaries) are decided pixel by pixel, so the result equals
// per-pixel deciding except within rounding of a tie. The argument needs non-negative weights
// that move one way along a run; that is checked once per call, and a table without it is
// decided pixel by pixel.
//
// The arithmetic per pixel is the row kernels' (vertical blend, horizontal interpolation,
// decision; vectorized over the run ends of a row and over the pixels inside boundary runs); this
// class only chooses which entries to decide and takes them in a fixed order, so the labels,
// counts and s do not depend on the kernels' SIMD target.
template <class Decision>
class BilinearLabeler {
 public:
  BilinearLabeler(const ScoreLayout& source, const ResampleAxis& x_axis, const ResampleAxis& y_axis,
                  int width, int height, float* row_buffer,
                  const postprocess_kernels::RowKernels& kernels, const EntryTables& entries,
                  const RowDecider& decide_row, Decision& decide, uint8_t* labels,
                  uint64_t* counts)
      : source_(source), y_axis_(y_axis), width_(width), height_(height), row_buffer_(row_buffer),
        kernels_(kernels), entries_(entries), decide_row_(decide_row), decide_(decide),
        decided_(entries.decisions()), labels_(labels), counts_(counts),
        x_count_(x_axis.count.data()), label_count_(decide.label_count()),
        corners_decide_blocks_(weights_ordered_within_runs(x_axis, width) &&
                               weights_ordered_within_runs(y_axis, height)) {}

  void run() {
    RowHistogram top_counts, bottom_counts, between_counts;
    const RowHistogram* previous_counts = nullptr;
    int previous_first = -1, previous_taps = 0;
    const float* previous_weights = nullptr;
    int y = 0;
    while (y < height_) {
      const int first = y_axis_.first[y];
      const int taps = y_axis_.count[y];
      const float* y_weights = y_axis_.weights.data() + y_axis_.offset[y];
      if (first == previous_first && taps == previous_taps &&
          std::memcmp(y_weights, previous_weights, sizeof(float) * static_cast<size_t>(taps)) == 0) {
        // Same vertical taps as the row above (edge rows clamped onto one source row).
        std::memcpy(row_labels(y), row_labels(y - 1), static_cast<size_t>(width_));
        add_row_histogram(*previous_counts, label_count_, counts_);
        ++y;
        continue;
      }
      int band_end = y;
      if (taps == 2 && corners_decide_blocks_) {
        while (band_end + 1 < height_ && y_axis_.first[band_end + 1] == first &&
               y_axis_.count[band_end + 1] == 2)
          ++band_end;
      }
      const bool top_uniform = label_row(y, top_counts);
      add_row_histogram(top_counts, label_count_, counts_);
      previous_counts = &top_counts;
      if (band_end > y) {
        label_row(band_end, bottom_counts);
        add_row_histogram(bottom_counts, label_count_, counts_);
        const uint8_t* top = row_labels(y);
        const uint8_t* bottom = row_labels(band_end);
        // Every run uniform in the top row and the bottom row equal to it: all block corners
        // agree, so each row between is the top row.
        const bool copy_top =
            top_uniform && std::memcmp(top, bottom, static_cast<size_t>(width_)) == 0;
        for (int between = y + 1; between < band_end; ++between) {
          if (copy_top) {
            std::memcpy(row_labels(between), top, static_cast<size_t>(width_));
            add_row_histogram(top_counts, label_count_, counts_);
          } else {
            label_between(between, top, bottom, between_counts);
            add_row_histogram(between_counts, label_count_, counts_);
          }
        }
        previous_counts = &bottom_counts;
      }
      previous_first = y_axis_.first[band_end];
      previous_taps = y_axis_.count[band_end];
      previous_weights = y_axis_.weights.data() + y_axis_.offset[band_end];
      y = band_end + 1;
    }
  }

 private:
  // The corner argument needs the end pixels of a run (band) to be its extreme ones: along a run
  // of two-tap entries the weights stay non-negative and the second weight never decreases. True
  // for build_resample_axis's bilinear tables; checked once per call (O(width + height)) so that
  // any other table is still labelled correctly, pixel by pixel.
  static bool weights_ordered_within_runs(const ResampleAxis& axis, int n) {
    for (int i = 0; i < n; ++i) {
      if (axis.count[i] != 2) continue;
      const float* w = axis.weights.data() + axis.offset[i];
      if (w[0] < 0.0f || w[1] < 0.0f) return false;
      if (i > 0 && axis.count[i - 1] == 2 && axis.first[i - 1] == axis.first[i] &&
          w[1] < axis.weights[axis.offset[i - 1] + 1])
        return false;
    }
    return true;
  }

  uint8_t* row_labels(int y) const { return labels_ + static_cast<size_t>(y) * width_; }

  // Vertical pass for output row y.
  ValueRow blend_row(int y) {
    const int first = y_axis_.first[y];
    const int taps = y_axis_.count[y];
    const float* weights = y_axis_.weights.data() + y_axis_.offset[y];
    if (taps == 1 && weights[0] == 1.0f) {
      // A single source row: read it in place.
      return {source_.scores + first * source_.row_stride, source_.channel_stride};
    }
    // The blended row keeps the source's layout minus the row dimension, so its column stride
    // is the source's (the tap offsets hold it).
    const int channels = source_.channels;
    const bool planar = !source_.channels_last || channels == 1;
    if (planar) {
      for (int k = 0; k < channels; ++k) {
        kernels_.blend_rows(row_buffer_ + static_cast<ptrdiff_t>(k) * source_.width,
                            source_.scores + k * source_.channel_stride + first * source_.row_stride,
                            source_.row_stride, weights, taps, static_cast<size_t>(source_.width));
      }
    } else {
      kernels_.blend_rows(row_buffer_, source_.scores + first * source_.row_stride,
                          source_.row_stride, weights, taps,
                          static_cast<size_t>(source_.width) * channels);
    }
    return {row_buffer_, planar ? static_cast<ptrdiff_t>(source_.width) : 1};
  }

  // Labels run r of a row whose run ends are already decided; returns whether the whole run got
  // one label from its ends (the block argument above then applies to it).
  bool label_run(const ValueRow& row, int r, uint8_t* labels, RowHistogram& row_counts) {
    const int x = entries_.run_start(r), end = entries_.run_end(r);
    const uint8_t first_label = decide_.take(decided_, entries_.first_entry(r));
    const int length = end - x;
    const int taps = x_count_[x];
    if (length == 1) {
      labels[x] = first_label;
      row_counts[first_label] += 1;
      return true;
    }
    // One tap: every pixel of the run reads the same value.
    const uint8_t last_label =
        taps == 1 ? first_label : decide_.take(decided_, entries_.last_entry(r));
    if (first_label == last_label && taps <= 2 && corners_decide_blocks_) {
      fill_labels(labels + x, first_label, length);
      row_counts[first_label] += static_cast<uint64_t>(length);
      return true;
    }
    labels[x] = first_label;
    labels[end - 1] = last_label;
    row_counts[first_label] += 1;
    row_counts[last_label] += 1;
    decide_row_(row, static_cast<size_t>(x) + 1, static_cast<size_t>(end) - 1);
    for (int i = x + 1; i < end - 1; ++i) {
      const uint8_t label = decide_.take(decided_, static_cast<size_t>(i));
      labels[i] = label;
      row_counts[label] += 1;
    }
    return false;
  }

  // A band's first or last row: the ends of all runs in one call, then run by run. Returns
  // whether every run was uniform.
  bool label_row(int y, RowHistogram& row_counts) {
    std::fill(row_counts.begin(), row_counts.begin() + label_count_, 0);
    const ValueRow row = blend_row(y);
    const int runs = entries_.runs();
    decide_row_(row, entries_.first_entry(0), entries_.first_entry(0) + 2 * runs);
    uint8_t* labels = row_labels(y);
    const uint8_t* first_labels = decided_.labels + entries_.first_entry(0);
    const uint8_t* last_labels = decided_.labels + entries_.last_entry(0);
    if (corners_decide_blocks_ &&
        std::memcmp(first_labels, last_labels, static_cast<size_t>(runs)) == 0) {
      // The ends of every run agree (the common case away from mask boundaries): label_run would
      // fill every run from its ends, taking the first end and, for runs of two taps and more
      // than one column, the last. The same, without a branch per run on the labels.
      decide_.take_run_ends(decided_, entries_.first_entry(0), entries_.last_entry(0),
                            entries_.last_decides(), runs);
      kernels_.expand_runs(first_labels, entries_.block_first_run(), entries_.offset_in_block(),
                           static_cast<size_t>(width_), labels);
      if (label_count_ <= postprocess_kernels::kMaxCountedLabels) {
        kernels_.count_labels(labels, static_cast<size_t>(width_), label_count_, row_counts.data());
      } else {
        for (int r = 0; r < runs; ++r)
          row_counts[first_labels[r]] += static_cast<uint64_t>(entries_.run_end(r) - entries_.run_start(r));
      }
      return true;
    }
    bool uniform = true;
    for (int r = 0; r < entries_.runs(); ++r) uniform &= label_run(row, r, labels, row_counts);
    return uniform;
  }

  // A row strictly inside a band: blocks whose four corners (in the band's first and last rows)
  // agree are filled; the others are labelled from this row's own values, blended on first need.
  void label_between(int y, const uint8_t* top, const uint8_t* bottom, RowHistogram& row_counts) {
    std::fill(row_counts.begin(), row_counts.begin() + label_count_, 0);
    uint8_t* labels = row_labels(y);
    ValueRow row;
    bool blended = false;
    for (int r = 0; r < entries_.runs(); ++r) {
      const int x = entries_.run_start(r), end = entries_.run_end(r);
      const uint8_t corner = top[x];
      if (top[end - 1] == corner && bottom[x] == corner && bottom[end - 1] == corner &&
          x_count_[x] <= 2) {
        fill_labels(labels + x, corner, end - x);
        row_counts[corner] += static_cast<uint64_t>(end - x);
      } else {
        if (!blended) {
          row = blend_row(y);
          blended = true;
        }
        decide_row_(row, entries_.first_entry(r), entries_.first_entry(r) + 1);
        decide_row_(row, entries_.last_entry(r), entries_.last_entry(r) + 1);
        label_run(row, r, labels, row_counts);
      }
    }
  }

  const ScoreLayout& source_;
  const ResampleAxis& y_axis_;
  const int width_;
  const int height_;
  float* const row_buffer_;
  const postprocess_kernels::RowKernels& kernels_;
  const EntryTables& entries_;
  const RowDecider& decide_row_;
  Decision& decide_;
  const postprocess_kernels::RowDecisions& decided_;
  uint8_t* const labels_;
  uint64_t* const counts_;
  const int* const x_count_;
  const int label_count_;
  const bool corners_decide_blocks_;
};

template <class Decision>
void label_map(const ScoreLayout& source, const SegmentationSpec& spec, int width, int height,
               SegmentationScratch& scratch, Decision& decide, LabelMap& out) {
  const postprocess_kernels::RowKernels kernels = postprocess_kernels::select_row_kernels();
  const EntryTables entries(scratch.x_axis, width, source.column_stride, scratch);
  const RowDecider decide_row{
      kernels, entries, decide.rule(),
      static_cast<size_t>(source.width - 1) * static_cast<size_t>(source.column_stride) + 1};
  uint8_t* labels = out.labels.data();
  uint64_t* counts = out.counts.data();
  if (spec.upsample == ResizeMode::Nearest) {
    label_nearest(source, scratch.y_axis, width, height, kernels, entries, decide_row, decide,
                  labels, counts);
  } else {
    BilinearLabeler<Decision>(source, scratch.x_axis, scratch.y_axis, width, height,
                              scratch.row_buffer.data(), kernels, entries, decide_row, decide,
                              labels, counts)
        .run();
  }
}

template <bool kLogits>
double label_classes(const ScoreLayout& source, const SegmentationSpec& spec, int width,
                     int height, SegmentationScratch& scratch, LabelMap& out) {
  ClassDecision<kLogits> decide(spec.channels);
  label_map(source, spec, width, height, scratch, decide, out);
  return decide.anomalous_probability();
}

// The tables depend on the mode too, which ResampleAxis does not record: a scratch serves one
// pipeline, whose upsample mode is fixed, so sizes are the only key.
void ensure_axis(ResizeMode mode, int src, int dst, ResampleAxis& axis) {
  if (!axis.built_for(mode, src, dst)) build_resample_axis(mode, src, dst, axis);
}

}  // namespace

Verdict verdict_from_score(float s, float threshold) {
  if (std::isnan(s)) throw_internal("model produced NaN score");
  if (!(threshold > 0.0f && threshold < 1.0f)) {
    throw_validation("threshold must be strictly between 0 and 1, got " +
                     std::to_string(threshold));
  }
  const float clamped = std::min(std::max(s, 0.0f), 1.0f);
  const double score = clamped;
  const double t = threshold;
  Verdict verdict;
  verdict.score = clamped;
  verdict.is_anomalous = clamped >= threshold;
  const double confidence = verdict.is_anomalous ? 0.5 + 0.5 * (score - t) / (1.0 - t)
                                                 : 0.5 + 0.5 * (t - score) / t;
  verdict.confidence = static_cast<float>(std::min(std::max(confidence, 0.5), 1.0));
  return verdict;
}

float classification_score(const float* values, size_t count, ScoreActivation activation) {
  if (count == 1) {
    if (activation == ScoreActivation::Softmax)
      throw_validation("classification: softmax needs two values [normal, anomalous], got one");
    return activation == ScoreActivation::Sigmoid ? sigmoid_float(values[0]) : values[0];
  }
  if (count == 2) {
    switch (activation) {
      case ScoreActivation::None:
        return values[1];
      case ScoreActivation::Sigmoid:
        throw_validation("classification: sigmoid takes one score, got two values "
                         "[normal, anomalous] (use softmax or none)");
      case ScoreActivation::Softmax:
        // softmax([a, b])[1] = e^(b-m) / (e^(a-m) + e^(b-m)) = sigmoid(b - a): stable for any
        // magnitudes, since sigmoid() never exponentiates a positive number.
        return static_cast<float>(
            sigmoid(static_cast<double>(values[1]) - static_cast<double>(values[0])));
    }
  }
  throw_validation("classification: expected one score or two values [normal, anomalous], got " +
                   std::to_string(count));
}

void segment(const float* scores, const SegmentationSpec& spec, int width, int height,
             SegmentationScratch& scratch, LabelMap& out) {
  const int channels = spec.channels;
  if (channels < 1 || channels > kMaxChannels)
    throw_validation("segmentation: channel count must be 1 to 256, got " + std::to_string(channels));
  if (spec.width < 1 || spec.height < 1)
    throw_validation("segmentation: empty score map");
  if (width < 1 || height < 1) throw_validation("segmentation: empty output size");
  if (spec.upsample != ResizeMode::Nearest && spec.upsample != ResizeMode::Bilinear)
    throw_validation("segmentation: upsample must be nearest or bilinear");
  if (channels == 1 && spec.activation == ScoreActivation::Softmax)
    throw_validation("segmentation: a one-channel anomaly map takes none or sigmoid");
  if (channels >= 2 && spec.activation == ScoreActivation::Sigmoid)
    throw_validation("segmentation: class scores take softmax (logits) or none (probabilities)");
  if (channels == 1 && std::isnan(spec.threshold))
    throw_validation("segmentation: threshold is NaN");
  if (scores == nullptr) throw_internal("segmentation: no scores");

  // The row kernels address a row's values with int32 tap offsets.
  if (static_cast<int64_t>(spec.width) * channels > std::numeric_limits<int32_t>::max())
    throw_validation("segmentation: score map rows are too wide");
  const size_t value_count =
      static_cast<size_t>(channels) * static_cast<size_t>(spec.height) * spec.width;
  if (contains_nan(scores, value_count)) throw_internal("model produced NaN scores");

  ensure_axis(spec.upsample, spec.width, width, scratch.x_axis);
  ensure_axis(spec.upsample, spec.height, height, scratch.y_axis);
  const size_t row_values = static_cast<size_t>(channels) * spec.width;
  if (spec.upsample == ResizeMode::Bilinear && scratch.row_buffer.size() < row_values)
    scratch.row_buffer.resize(row_values);

  out.width = width;
  out.height = height;
  out.labels.resize(static_cast<size_t>(width) * static_cast<size_t>(height));
  out.counts.assign(channels == 1 ? 2 : static_cast<size_t>(channels), 0);

  ScoreLayout source;
  source.scores = scores;
  source.channels = channels;
  source.height = spec.height;
  source.width = spec.width;
  source.channels_last = spec.channels_last;
  if (spec.channels_last) {
    source.channel_stride = 1;
    source.column_stride = channels;
    source.row_stride = static_cast<ptrdiff_t>(spec.width) * channels;
  } else {
    source.channel_stride = static_cast<ptrdiff_t>(spec.height) * spec.width;
    source.column_stride = 1;
    source.row_stride = spec.width;
  }

  float score;
  float decision_threshold;  // s >= this exactly when the mask has an anomalous pixel
  if (channels == 1) {
    const bool sigmoid_map = spec.activation == ScoreActivation::Sigmoid;
    AnomalyMapDecision decide(sigmoid_map ? sigmoid_raw_threshold(spec.threshold)
                                          : spec.threshold);
    label_map(source, spec, width, height, scratch, decide, out);
    score = sigmoid_map ? sigmoid_float(decide.max_raw()) : decide.max_raw();
    decision_threshold = spec.threshold;
  } else {
    const double probability = spec.activation == ScoreActivation::Softmax
                                   ? label_classes<true>(source, spec, width, height, scratch, out)
                                   : label_classes<false>(source, spec, width, height, scratch, out);
    score = static_cast<float>(probability);
    decision_threshold = 0.5f;
  }
  // The header promises s >= threshold exactly when the mask holds an anomalous pixel. The
  // margins already guarantee it up to rounding of s itself (a margin of -1e-9 gives
  // sigmoid = 0.5f; an exact tie, margin 0, gives 0.5 with no anomalous pixel); pin those
  // boundary cases so the verdict and the mask never disagree.
  const bool mask_has_anomaly = out.counts[0] != static_cast<uint64_t>(width) * height;
  if (mask_has_anomaly && !(score >= decision_threshold)) {
    score = decision_threshold;
  } else if (!mask_has_anomaly && score >= decision_threshold) {
    score = std::nextafter(decision_threshold, -kInfinity);
  }
  out.score = score;
}

}  // namespace openlookout
