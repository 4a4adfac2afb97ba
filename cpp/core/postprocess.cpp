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

#include "postprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "errors.h"

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

// C == 1: label 1 where the (raw) value >= raw_threshold. For Sigmoid the raw threshold is
// precomputed in logit space, so the activation is applied once, to the maximum, at the end.
class AnomalyMapDecision {
 public:
  static constexpr int kLabelCount = 2;
  explicit AnomalyMapDecision(float raw_threshold) : raw_threshold_(raw_threshold) {}
  int channels() const { return 1; }
  int label_count() const { return kLabelCount; }
  uint8_t operator()(const float* value, ptrdiff_t /*channel_stride*/) {
    const float v = *value;
    max_raw_ = std::max(max_raw_, v);
    return v >= raw_threshold_ ? 1 : 0;
  }
  float max_raw() const { return max_raw_; }

 private:
  float raw_threshold_;
  float max_raw_ = -kInfinity;
};

// C >= 2: argmax with ties to the lower index. kFixedChannels > 0 fixes C at compile time (the
// common 2..4) so the channel loop unrolls; 0 reads it at run time.
//   kLogits (Softmax): tracks max over pixels of (max_{k>=1} z_k - z_0) in float; the label is
//     anomalous exactly when that difference is > 0.
//   otherwise (probabilities): log p_k - log p_0 is maximal where p_k / p_0 is, so the best ratio
//     is kept as a fraction (num / den) and compared by cross-multiplication in double, which is
//     exact for float inputs; p_0 = 0 < p_k gives den = 0, an infinite margin. At the end
//     s = sigmoid(log num - log den) = num / (num + den), no log needed.
template <int kFixedChannels, bool kLogits>
class ClassDecision {
 public:
  explicit ClassDecision(int channels) : channels_(channels) {}
  int channels() const { return kFixedChannels > 0 ? kFixedChannels : channels_; }
  int label_count() const { return channels(); }
  uint8_t operator()(const float* values, ptrdiff_t channel_stride) {
    const int channel_count = channels();
    float best = values[channel_stride];
    int best_channel = 1;
    for (int k = 2; k < channel_count; ++k) {
      const float z = values[k * channel_stride];
      if (z > best) {
        best = z;
        best_channel = k;
      }
    }
    const float background = values[0];
    if constexpr (kLogits) {
      max_margin_ = std::max(max_margin_, best - background);
    } else {
      // Negative "probabilities" (a model outside its contract) count as 0.
      const double num = std::max(best, 0.0f);
      const double den = std::max(background, 0.0f);
      if (num * best_den_ > best_num_ * den) {
        best_num_ = num;
        best_den_ = den;
      }
    }
    return best > background ? static_cast<uint8_t>(best_channel) : 0;
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

template <class Decision>
void label_nearest(const ScoreLayout& source, const ResampleAxis& x_axis,
                   const ResampleAxis& y_axis, int width, int height, Decision& decide,
                   uint8_t* labels, uint64_t* counts) {
  const int label_count = decide.label_count();
  const int* source_column = x_axis.first.data();
  RowHistogram row_counts{};
  int previous_source_row = -1;
  for (int y = 0; y < height; ++y) {
    uint8_t* row = labels + static_cast<size_t>(y) * width;
    const int source_row_index = y_axis.first[y];
    if (source_row_index == previous_source_row) {
      std::memcpy(row, row - width, static_cast<size_t>(width));
    } else {
      std::fill(row_counts.begin(), row_counts.begin() + label_count, 0);
      const float* source_row = source.scores + source_row_index * source.row_stride;
      int x = 0;
      while (x < width) {
        const int sx = source_column[x];
        int run_end = x + 1;
        while (run_end < width && source_column[run_end] == sx) ++run_end;
        const uint8_t label = decide(source_row + sx * source.column_stride, source.channel_stride);
        fill_labels(row + x, label, run_end - x);
        row_counts[label] += static_cast<uint64_t>(run_end - x);
        x = run_end;
      }
      previous_source_row = source_row_index;
    }
    add_row_histogram(row_counts, label_count, counts);
  }
}

// dst[j] = sum_t weights[t] * rows[t * row_stride + j], j < n.
void blend_rows(float* dst, const float* rows, ptrdiff_t row_stride, const float* weights,
                int taps, size_t n) {
  if (taps == 2) {
    const float w0 = weights[0], w1 = weights[1];
    const float* a = rows;
    const float* b = rows + row_stride;
    for (size_t j = 0; j < n; ++j) dst[j] = w0 * a[j] + w1 * b[j];
    return;
  }
  const float w0 = weights[0];
  for (size_t j = 0; j < n; ++j) dst[j] = w0 * rows[j];
  for (int t = 1; t < taps; ++t) {
    const float w = weights[t];
    const float* r = rows + t * row_stride;
    for (size_t j = 0; j < n; ++j) dst[j] += w * r[j];
  }
}

// Values to interpolate horizontally for one output row: channel k of source column sx is at
// values[sx * column_stride + k * channel_stride].
struct SourceRow {
  const float* values = nullptr;
  ptrdiff_t channel_stride = 0;
  ptrdiff_t column_stride = 0;
};

// Bilinear upsampling and decision, without deciding every pixel.
//
// Output pixels of one row that read the same horizontal taps (same first source column and tap
// count) form a run; their values are convex combinations of the same two source values, i.e.
// points on one segment. Output rows that read the same two source rows form a band. So a block
// (band x run) of output pixels holds values that are convex combinations of the values at its
// four corner pixels, and:
//   - if the corners share a label, every pixel in the block has it (each "label k wins against
//     channel j" is a linear inequality that holds at the corners, hence in between);
//   - the block's largest anomalous margin is at a corner (max_k z_k - z_0 is convex, p_k / p_0
//     is linear-fractional, a C == 1 score is linear).
// The first and last row of each band are labelled run by run (both ends of each run decided,
// the pixels between only when the ends differ); the rows between are filled per block from the
// corner labels, or copied whole when the band's first and last rows agree everywhere. Only blocks
// whose corners disagree (mask boundaries) are decided pixel by pixel, so the result equals
// per-pixel deciding except within rounding of a tie. The argument needs non-negative weights
// that move one way along a run; that is checked once per call, and a table without it (or runs
// of more than two taps, which bilinear does not produce) is decided pixel by pixel.
template <int kFixedChannels, class Decision>
class BilinearLabeler {
 public:
  BilinearLabeler(const ScoreLayout& source, const ResampleAxis& x_axis, const ResampleAxis& y_axis,
                  int width, int height, float* row_buffer, Decision& decide, uint8_t* labels,
                  uint64_t* counts)
      : source_(source), y_axis_(y_axis), width_(width), height_(height), row_buffer_(row_buffer),
        decide_(decide), labels_(labels), counts_(counts), x_first_(x_axis.first.data()),
        x_count_(x_axis.count.data()), x_offset_(x_axis.offset.data()),
        x_weights_(x_axis.weights.data()),
        channels_(kFixedChannels > 0 ? kFixedChannels : source.channels),
        label_count_(decide.label_count()),
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

  // A compile-time constant for the common channel counts, so the channel loops unroll.
  int channels() const { return kFixedChannels > 0 ? kFixedChannels : channels_; }
  uint8_t* row_labels(int y) const { return labels_ + static_cast<size_t>(y) * width_; }

  // The end of the run of output columns that starts at x.
  int run_end(int x) const {
    const int first = x_first_[x], count = x_count_[x];
    int end = x + 1;
    while (end < width_ && x_first_[end] == first && x_count_[end] == count) ++end;
    return end;
  }

  // Vertical pass for output row y.
  SourceRow blend_row(int y) {
    const int first = y_axis_.first[y];
    const int taps = y_axis_.count[y];
    const float* weights = y_axis_.weights.data() + y_axis_.offset[y];
    SourceRow row;
    if (taps == 1 && weights[0] == 1.0f) {
      // A single source row: read it in place.
      row.values = source_.scores + first * source_.row_stride;
      row.channel_stride = source_.channel_stride;
      row.column_stride = source_.column_stride;
      return row;
    }
    // The blended row keeps the source's layout minus the row dimension.
    const bool planar = !source_.channels_last || channels() == 1;
    if (planar) {
      for (int k = 0; k < channels(); ++k) {
        blend_rows(row_buffer_ + static_cast<ptrdiff_t>(k) * source_.width,
                   source_.scores + k * source_.channel_stride + first * source_.row_stride,
                   source_.row_stride, weights, taps, static_cast<size_t>(source_.width));
      }
    } else {
      blend_rows(row_buffer_, source_.scores + first * source_.row_stride, source_.row_stride,
                 weights, taps, static_cast<size_t>(source_.width) * channels());
    }
    row.values = row_buffer_;
    row.channel_stride = planar ? source_.width : 1;
    row.column_stride = planar ? 1 : channels();
    return row;
  }

  // Horizontal pass and decision for output pixel x of a blended row.
  uint8_t decide_pixel(const SourceRow& row, int x) {
    // A local array, not a member: the compiler can then keep the values in registers instead
    // of assuming the decision's float state might alias them.
    float values[kFixedChannels > 0 ? kFixedChannels : kMaxChannels];
    const float* taps = row.values + x_first_[x] * row.column_stride;
    const float* weights = x_weights_ + x_offset_[x];
    const int count = x_count_[x];
    if (count == 2) {
      const float w0 = weights[0], w1 = weights[1];
      for (int k = 0; k < channels(); ++k) {
        const float* p = taps + k * row.channel_stride;
        values[k] = w0 * p[0] + w1 * p[row.column_stride];
      }
    } else {
      interpolate_other_taps(row, taps, weights, count, values);
    }
    return decide_(values, 1);
  }

  // One tap (edges, centres landing on a source pixel) or more; kept out of decide_pixel so the
  // two-tap path stays small enough to inline.
  void interpolate_other_taps(const SourceRow& row, const float* taps, const float* weights,
                              int count, float* values) const {
    for (int k = 0; k < channels(); ++k) {
      const float* p = taps + k * row.channel_stride;
      float sum = weights[0] * p[0];
      for (int t = 1; t < count; ++t) sum += weights[t] * p[t * row.column_stride];
      values[k] = sum;
    }
  }

  // Labels the run [x, end) of a row; returns whether the whole run got one label from its ends
  // (the block argument above then applies to it).
  bool label_run(const SourceRow& row, int x, int end, uint8_t* labels, RowHistogram& row_counts) {
    const uint8_t first_label = decide_pixel(row, x);
    const int length = end - x;
    const int taps = x_count_[x];
    if (length == 1) {
      labels[x] = first_label;
      row_counts[first_label] += 1;
      return true;
    }
    // One tap: every pixel of the run reads the same value.
    const uint8_t last_label = taps == 1 ? first_label : decide_pixel(row, end - 1);
    if (first_label == last_label && taps <= 2 && corners_decide_blocks_) {
      fill_labels(labels + x, first_label, length);
      row_counts[first_label] += static_cast<uint64_t>(length);
      return true;
    }
    labels[x] = first_label;
    labels[end - 1] = last_label;
    row_counts[first_label] += 1;
    row_counts[last_label] += 1;
    for (int i = x + 1; i < end - 1; ++i) {
      const uint8_t label = decide_pixel(row, i);
      labels[i] = label;
      row_counts[label] += 1;
    }
    return false;
  }

  // A band's first or last row, run by run. Returns whether every run was uniform.
  bool label_row(int y, RowHistogram& row_counts) {
    std::fill(row_counts.begin(), row_counts.begin() + label_count_, 0);
    const SourceRow row = blend_row(y);
    uint8_t* labels = row_labels(y);
    bool uniform = true;
    for (int x = 0; x < width_;) {
      const int end = run_end(x);
      uniform &= label_run(row, x, end, labels, row_counts);
      x = end;
    }
    return uniform;
  }

  // A row strictly inside a band: blocks whose four corners (in the band's first and last rows)
  // agree are filled; the others are labelled from this row's own values, blended on first need.
  void label_between(int y, const uint8_t* top, const uint8_t* bottom, RowHistogram& row_counts) {
    std::fill(row_counts.begin(), row_counts.begin() + label_count_, 0);
    uint8_t* labels = row_labels(y);
    SourceRow row;
    bool blended = false;
    for (int x = 0; x < width_;) {
      const int end = run_end(x);
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
        label_run(row, x, end, labels, row_counts);
      }
      x = end;
    }
  }

  const ScoreLayout& source_;
  const ResampleAxis& y_axis_;
  const int width_;
  const int height_;
  float* const row_buffer_;
  Decision& decide_;
  uint8_t* const labels_;
  uint64_t* const counts_;
  const int* const x_first_;
  const int* const x_count_;
  const int* const x_offset_;
  const float* const x_weights_;
  const int channels_;
  const int label_count_;
  const bool corners_decide_blocks_;
};

template <int kFixedChannels, class Decision>
void label_map(const ScoreLayout& source, const SegmentationSpec& spec, int width, int height,
               SegmentationScratch& scratch, Decision& decide, LabelMap& out) {
  uint8_t* labels = out.labels.data();
  uint64_t* counts = out.counts.data();
  if (spec.upsample == ResizeMode::Nearest) {
    label_nearest(source, scratch.x_axis, scratch.y_axis, width, height, decide, labels, counts);
  } else {
    BilinearLabeler<kFixedChannels, Decision>(source, scratch.x_axis, scratch.y_axis, width,
                                              height, scratch.row_buffer.data(), decide, labels,
                                              counts)
        .run();
  }
}

template <bool kLogits>
double label_classes(const ScoreLayout& source, const SegmentationSpec& spec, int width,
                     int height, SegmentationScratch& scratch, LabelMap& out) {
  switch (spec.channels) {
    case 2: {
      ClassDecision<2, kLogits> decide(2);
      label_map<2>(source, spec, width, height, scratch, decide, out);
      return decide.anomalous_probability();
    }
    case 3: {
      ClassDecision<3, kLogits> decide(3);
      label_map<3>(source, spec, width, height, scratch, decide, out);
      return decide.anomalous_probability();
    }
    case 4: {
      ClassDecision<4, kLogits> decide(4);
      label_map<4>(source, spec, width, height, scratch, decide, out);
      return decide.anomalous_probability();
    }
    default: {
      ClassDecision<0, kLogits> decide(spec.channels);
      label_map<0>(source, spec, width, height, scratch, decide, out);
      return decide.anomalous_probability();
    }
  }
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
    label_map<1>(source, spec, width, height, scratch, decide, out);
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
