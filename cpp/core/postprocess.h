// Stage 4: model outputs -> verdict and, for segmentation, a full-size label map with per-label
// pixel counts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "preprocess.h"

namespace openlookout {

enum class ScoreActivation { None, Sigmoid, Softmax };

struct Verdict {
  bool is_anomalous = false;
  float confidence = 0.0f;  // confidence in the predicted class, 0.5 .. 1
  float score = 0.0f;       // the anomalous probability s the verdict came from
};

// IsAnomalous = s >= t; Confidence = 0.5 + 0.5 * (s - t) / (1 - t) when anomalous, else
// 0.5 + 0.5 * (t - s) / t. Requires 0 < t < 1; s is clamped to [0, 1].
Verdict verdict_from_score(float s, float threshold);

// Classification output -> anomalous probability s.
//   count == 1: s = the value (None, clamped to [0, 1]) or sigmoid(value) (Sigmoid).
//   count == 2: [normal, anomalous]; Softmax: softmax(values)[1]; None: values[1] (clamped).
// Other counts, Softmax with one value or Sigmoid with two throw a Validation error (the
// pipeline checks this at load when the output shape is static).
float classification_score(const float* values, size_t count, ScoreActivation activation);

// Segmentation output: scores[C][h][w] (channel planes, or interleaved when `channels_last`).
//   C >= 2: label = argmax over channels (ties to the lower index); 0 is background.
//   C == 1: label = 1 where the score (after `activation`, None or Sigmoid) >= threshold, else 0.
// The raw score planes are upsampled to width x height with `upsample` (Nearest or Bilinear),
// then the activation applies, then the decision. The anomalous probability s of the whole image is the largest per-pixel
// anomalous probability over the full-size map:
//   C == 1: the pixel's score (after activation).
//   C >= 2: sigmoid(max_{k>=1} z_k - z_0), with z the channel values when `activation` is
//           Softmax (logits) or their logarithm when it is None (probabilities).
// so that s >= threshold (0.5 for C >= 2) exactly when the mask holds an anomalous pixel.
struct SegmentationSpec {
  int channels = 0;
  int height = 0;  // model output h
  int width = 0;   // model output w
  bool channels_last = false;
  ScoreActivation activation = ScoreActivation::None;
  float threshold = 0.5f;  // C == 1 only
  ResizeMode upsample = ResizeMode::Nearest;
};

struct LabelMap {
  std::vector<uint8_t> labels;  // width * height, 0 = background, k = labels[k - 1]
  std::vector<uint64_t> counts;  // channels (C >= 2) or 2 (C == 1) entries, pixels per label
  int width = 0;
  int height = 0;
  float score = 0.0f;  // s, as defined above
};

// Per-worker scratch; vectors only grow, so steady-state calls allocate nothing.
struct SegmentationScratch {
  ResampleAxis x_axis;
  ResampleAxis y_axis;
  std::vector<float> row_buffer;  // one vertically blended source row, C * model width floats
  // Horizontal taps as the row kernels read them (value offsets and weights), one entry per
  // output column followed by two per run of columns (its first and last column), and the
  // decisions of one output row at those entries.
  std::vector<int32_t> tap0, tap1;
  std::vector<float> weight0, weight1;
  std::vector<int32_t> run_starts;  // first column of each run, then width
  std::vector<int32_t> block_first_run;
  std::vector<uint8_t> offset_in_block;
  std::vector<uint8_t> last_decides;
  std::vector<uint8_t> decided_labels;
  std::vector<float> decided_key, decided_background;
};

void segment(const float* scores, const SegmentationSpec& spec, int width, int height,
             SegmentationScratch& scratch, LabelMap& out);

// Test hook, process-wide, not thread-safe: false makes segment() use the portable scalar row
// kernels, true (the default) the best Highway target of this CPU. Every target gives
// bit-identical results. Returns the previous setting. Independent of
// set_preprocess_simd_enabled.
bool set_postprocess_simd_enabled(bool enabled);

}  // namespace openlookout
