// Tests of stage 4: verdict, classification score, and segmentation against a direct
// double-precision reference (per-pixel formulas, no tap tables, no shortcuts).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#ifndef OPENLOOKOUT_NO_HWY
#include <hwy/targets.h>
#endif

#include "../core/postprocess.h"
#include "check.h"

using namespace openlookout;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double reference_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- reference segmentation -------------------------------------------------------------------

struct ReferenceMap {
  std::vector<uint8_t> labels;
  std::vector<bool> near_tie;  // the decision is within the tolerance of a tie: either label is fine
  double score = 0.0;
};

double source_value(const std::vector<float>& scores, const SegmentationSpec& spec, int k, int sy,
                    int sx) {
  if (spec.channels_last)
    return scores[(static_cast<size_t>(sy) * spec.width + sx) * spec.channels + k];
  return scores[(static_cast<size_t>(k) * spec.height + sy) * spec.width + sx];
}

int nearest_source(int i, int src, int dst) {
  return std::min(static_cast<int>(std::floor((i + 0.5) * src / dst)), src - 1);
}

// Channel k of the upsampled map at full-size pixel (x, y), straight from the definitions.
double upsampled_value(const std::vector<float>& scores, const SegmentationSpec& spec, int k,
                       int x, int y, int width, int height) {
  if (spec.upsample == ResizeMode::Nearest) {
    return source_value(scores, spec, k, nearest_source(y, spec.height, height),
                        nearest_source(x, spec.width, width));
  }
  auto centre = [](int i, int src, int dst) {
    return std::min(std::max((i + 0.5) * src / dst - 0.5, 0.0), static_cast<double>(src - 1));
  };
  const double fx = centre(x, spec.width, width), fy = centre(y, spec.height, height);
  const int x0 = static_cast<int>(std::floor(fx)), y0 = static_cast<int>(std::floor(fy));
  const int x1 = std::min(x0 + 1, spec.width - 1), y1 = std::min(y0 + 1, spec.height - 1);
  const double ax = fx - x0, ay = fy - y0;
  const double top = (1 - ax) * source_value(scores, spec, k, y0, x0) +
                     ax * source_value(scores, spec, k, y0, x1);
  const double bottom = (1 - ax) * source_value(scores, spec, k, y1, x0) +
                        ax * source_value(scores, spec, k, y1, x1);
  return (1 - ay) * top + ay * bottom;
}

ReferenceMap reference_segment(const std::vector<float>& scores, const SegmentationSpec& spec,
                               int width, int height, double tie_tolerance) {
  ReferenceMap ref;
  ref.labels.resize(static_cast<size_t>(width) * height);
  ref.near_tie.resize(ref.labels.size());
  const int channels = spec.channels;
  std::vector<double> v(channels);
  double best_s = -kInf;    // C == 1
  double best_margin = -kInf;  // C >= 2
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const size_t i = static_cast<size_t>(y) * width + x;
      for (int k = 0; k < channels; ++k) v[k] = upsampled_value(scores, spec, k, x, y, width, height);
      if (channels == 1) {
        const double a = spec.activation == ScoreActivation::Sigmoid ? reference_sigmoid(v[0]) : v[0];
        ref.labels[i] = a >= spec.threshold ? 1 : 0;
        ref.near_tie[i] = std::fabs(a - spec.threshold) <= tie_tolerance;
        best_s = std::max(best_s, a);
        continue;
      }
      int label = 0;
      for (int k = 1; k < channels; ++k)
        if (v[k] > v[label]) label = k;
      ref.labels[i] = static_cast<uint8_t>(label);
      bool tie = false;
      for (int k = 0; k < channels; ++k)
        if (k != label && std::fabs(v[k] - v[label]) <= tie_tolerance) tie = true;
      ref.near_tie[i] = tie;
      double best_anomalous = -kInf;
      for (int k = 1; k < channels; ++k) best_anomalous = std::max(best_anomalous, v[k]);
      double margin;
      if (spec.activation == ScoreActivation::Softmax) {
        margin = best_anomalous - v[0];
      } else {
        const double log_anomalous = best_anomalous > 0 ? std::log(best_anomalous) : -kInf;
        const double log_background = v[0] > 0 ? std::log(v[0]) : -kInf;
        if (log_anomalous == -kInf) margin = -kInf;
        else if (log_background == -kInf) margin = kInf;
        else margin = log_anomalous - log_background;
      }
      best_margin = std::max(best_margin, margin);
    }
  }
  ref.score = channels == 1 ? best_s : reference_sigmoid(best_margin);
  return ref;
}

std::vector<float> random_scores(const SegmentationSpec& spec, std::mt19937& rng) {
  const size_t n = static_cast<size_t>(spec.channels) * spec.height * spec.width;
  std::vector<float> scores(n);
  std::uniform_real_distribution<float> logit(-4.0f, 4.0f);
  if (spec.channels == 1) {
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (float& s : scores) s = spec.activation == ScoreActivation::Sigmoid ? logit(rng) : unit(rng);
    return scores;
  }
  // C >= 2: logits, or probabilities that sum to 1 per pixel (softmax of random logits).
  for (float& s : scores) s = logit(rng);
  if (spec.activation == ScoreActivation::None) {
    const size_t pixels = static_cast<size_t>(spec.height) * spec.width;
    for (size_t p = 0; p < pixels; ++p) {
      auto at = [&](int k) -> float& {
        return spec.channels_last ? scores[p * spec.channels + k] : scores[k * pixels + p];
      };
      double sum = 0;
      for (int k = 0; k < spec.channels; ++k) sum += std::exp(static_cast<double>(at(k)));
      for (int k = 0; k < spec.channels; ++k)
        at(k) = static_cast<float>(std::exp(static_cast<double>(at(k))) / sum);
    }
  }
  return scores;
}

// Runs segment() and the reference and compares labels, counts and score. Returns the number of
// pixels skipped as near-ties, so callers can check the comparison was not vacuous.
size_t check_against_reference(const std::vector<float>& scores, const SegmentationSpec& spec,
                               int width, int height, SegmentationScratch& scratch,
                               const std::string& what) {
  // Float weights (rounded from double) and float accumulation put the upsampled values within
  // about 1e-6 of the double reference for values of magnitude <= 4; 1e-5 leaves margin.
  constexpr double kTieTolerance = 1e-5;
  LabelMap out;
  segment(scores.data(), spec, width, height, scratch, out);
  const ReferenceMap ref = reference_segment(scores, spec, width, height, kTieTolerance);
  CHECK_EQ(out.width, width);
  CHECK_EQ(out.height, height);
  CHECK_EQ(out.labels.size(), ref.labels.size());
  if (out.labels.size() != ref.labels.size()) return 0;
  size_t mismatches = 0, ties = 0;
  for (size_t i = 0; i < ref.labels.size(); ++i) {
    if (ref.near_tie[i]) {
      ++ties;
      continue;
    }
    if (out.labels[i] != ref.labels[i]) ++mismatches;
  }
  if (mismatches != 0) ::olt::fail(__FILE__, __LINE__, what + ": " + std::to_string(mismatches) + " labels differ");
  const size_t label_count = spec.channels == 1 ? 2 : static_cast<size_t>(spec.channels);
  CHECK_EQ(out.counts.size(), label_count);
  std::vector<uint64_t> histogram(label_count, 0);
  for (uint8_t l : out.labels) {
    CHECK(l < label_count);
    if (l < label_count) ++histogram[l];
  }
  if (out.counts != histogram) ::olt::fail(__FILE__, __LINE__, what + ": counts differ from the label histogram");
  if (!(std::fabs(out.score - ref.score) <= 1e-5))
    ::olt::fail(__FILE__, __LINE__, what + ": score " + std::to_string(out.score) + " vs reference " +
                                        std::to_string(ref.score));
  // The promise of the header: s >= threshold exactly when the mask holds an anomalous pixel.
  const float threshold = spec.channels == 1 ? spec.threshold : 0.5f;
  const bool anomalous_pixels = out.counts[0] != out.labels.size();
  if ((out.score >= threshold) != anomalous_pixels)
    ::olt::fail(__FILE__, __LINE__, what + ": score and mask disagree");
  return ties;
}

struct Size {
  int width, height;
};

std::string describe(const SegmentationSpec& spec, int width, int height) {
  return "C=" + std::to_string(spec.channels) + (spec.channels_last ? " HWC " : " CHW ") +
         (spec.activation == ScoreActivation::None ? "none " :
          spec.activation == ScoreActivation::Sigmoid ? "sigmoid " : "softmax ") +
         (spec.upsample == ResizeMode::Nearest ? "nearest " : "bilinear ") +
         std::to_string(spec.width) + "x" + std::to_string(spec.height) + " -> " +
         std::to_string(width) + "x" + std::to_string(height) + " t=" + std::to_string(spec.threshold);
}

// Source -> destination sizes: up, down, odd, mixed, degenerate.
const std::vector<std::pair<Size, Size>>& size_cases() {
  static const std::vector<std::pair<Size, Size>> cases = {
      {{7, 5}, {33, 19}},  {{16, 16}, {10, 10}}, {{1, 1}, {4, 4}},   {{5, 7}, {5, 7}},
      {{9, 4}, {4, 9}},    {{3, 8}, {1, 1}},     {{1, 6}, {13, 1}},  {{12, 9}, {36, 27}},
      {{13, 11}, {20, 7}}, {{6, 1}, {31, 3}},
  };
  return cases;
}

}  // namespace

// ---- verdict ------------------------------------------------------------------------------------

TEST(postprocess_verdict_threshold_half) {
  Verdict v = verdict_from_score(0.5f, 0.5f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5, 1e-7);
  v = verdict_from_score(0.75f, 0.5f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.75, 1e-7);
  v = verdict_from_score(1.0f, 0.5f);
  CHECK(v.is_anomalous);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(0.25f, 0.5f);
  CHECK(!v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.75, 1e-7);
  v = verdict_from_score(0.0f, 0.5f);
  CHECK(!v.is_anomalous);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(std::nextafter(0.5f, 0.0f), 0.5f);
  CHECK(!v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5, 1e-7);
  CHECK_NEAR(v.score, 0.5, 1e-7);
}

TEST(postprocess_verdict_other_thresholds) {
  // t = 0.3
  Verdict v = verdict_from_score(0.3f, 0.3f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5, 1e-7);
  v = verdict_from_score(0.65f, 0.3f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5 + 0.5 * (0.65 - 0.3) / 0.7, 1e-6);
  v = verdict_from_score(0.15f, 0.3f);
  CHECK(!v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.75, 1e-6);
  v = verdict_from_score(0.0f, 0.3f);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(1.0f, 0.3f);
  CHECK_EQ(v.confidence, 1.0f);
  // t = 0.8
  v = verdict_from_score(0.8f, 0.8f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5, 1e-7);
  v = verdict_from_score(0.9f, 0.8f);
  CHECK(v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.75, 1e-6);
  v = verdict_from_score(0.4f, 0.8f);
  CHECK(!v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.75, 1e-6);
  v = verdict_from_score(std::nextafter(0.8f, 0.0f), 0.8f);
  CHECK(!v.is_anomalous);
  CHECK_NEAR(v.confidence, 0.5, 1e-6);
  v = verdict_from_score(0.0f, 0.8f);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(1.0f, 0.8f);
  CHECK_EQ(v.confidence, 1.0f);
}

TEST(postprocess_verdict_clamps_and_rejects) {
  Verdict v = verdict_from_score(1.7f, 0.5f);
  CHECK(v.is_anomalous);
  CHECK_EQ(v.score, 1.0f);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(-0.2f, 0.5f);
  CHECK(!v.is_anomalous);
  CHECK_EQ(v.score, 0.0f);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(std::numeric_limits<float>::infinity(), 0.3f);
  CHECK(v.is_anomalous);
  CHECK_EQ(v.confidence, 1.0f);
  v = verdict_from_score(-std::numeric_limits<float>::infinity(), 0.3f);
  CHECK(!v.is_anomalous);
  CHECK_EQ(v.confidence, 1.0f);
  CHECK_THROWS_KIND(verdict_from_score(std::nanf(""), 0.5f), ErrorKind::InternalServer);
  for (float t : {0.0f, 1.0f, -0.1f, 1.5f, std::nanf("")})
    CHECK_THROWS_KIND(verdict_from_score(0.5f, t), ErrorKind::Validation);
}

// ---- classification score -----------------------------------------------------------------------

TEST(postprocess_classification_score) {
  const float one[1] = {0.7f};
  CHECK_EQ(classification_score(one, 1, ScoreActivation::None), 0.7f);
  const float zero_logit[1] = {0.0f};
  CHECK_EQ(classification_score(zero_logit, 1, ScoreActivation::Sigmoid), 0.5f);
  const float logit[1] = {2.0f};
  CHECK_NEAR(classification_score(logit, 1, ScoreActivation::Sigmoid), reference_sigmoid(2.0), 1e-7);
  const float huge[1] = {1000.0f}, tiny[1] = {-1000.0f};
  CHECK_EQ(classification_score(huge, 1, ScoreActivation::Sigmoid), 1.0f);
  CHECK_EQ(classification_score(tiny, 1, ScoreActivation::Sigmoid), 0.0f);
  const float inf[1] = {std::numeric_limits<float>::infinity()};
  CHECK_EQ(classification_score(inf, 1, ScoreActivation::Sigmoid), 1.0f);

  const float pair[2] = {0.2f, 0.8f};
  CHECK_EQ(classification_score(pair, 2, ScoreActivation::None), 0.8f);
  const float logits[2] = {1.0f, 3.0f};
  CHECK_NEAR(classification_score(logits, 2, ScoreActivation::Softmax),
             std::exp(3.0) / (std::exp(1.0) + std::exp(3.0)), 1e-7);
  CHECK_THROWS_KIND(classification_score(logits, 2, ScoreActivation::Sigmoid), ErrorKind::Validation);
  const float large[2] = {1000.0f, 1001.0f};  // exp(1000) overflows unless the max is subtracted
  CHECK_NEAR(classification_score(large, 2, ScoreActivation::Softmax), reference_sigmoid(1.0), 1e-7);
  const float apart[2] = {-1000.0f, 1000.0f}, reversed[2] = {1000.0f, -1000.0f};
  CHECK_EQ(classification_score(apart, 2, ScoreActivation::Softmax), 1.0f);
  CHECK_EQ(classification_score(reversed, 2, ScoreActivation::Softmax), 0.0f);
  const float equal[2] = {-3.5f, -3.5f};
  CHECK_EQ(classification_score(equal, 2, ScoreActivation::Softmax), 0.5f);
}

TEST(postprocess_classification_score_rejects_bad_combinations) {
  const float values[3] = {0.1f, 0.2f, 0.7f};
  CHECK_THROWS_KIND(classification_score(values, 1, ScoreActivation::Softmax), ErrorKind::Validation);
  for (ScoreActivation a : {ScoreActivation::None, ScoreActivation::Sigmoid, ScoreActivation::Softmax}) {
    CHECK_THROWS_KIND(classification_score(values, 0, a), ErrorKind::Validation);
    CHECK_THROWS_KIND(classification_score(values, 3, a), ErrorKind::Validation);
  }
}

// ---- segmentation against the reference ---------------------------------------------------------

TEST(postprocess_segment_one_channel_matches_reference) {
  std::mt19937 rng(1234);
  size_t compared = 0, ties = 0;
  for (ScoreActivation activation : {ScoreActivation::None, ScoreActivation::Sigmoid}) {
    for (ResizeMode mode : {ResizeMode::Nearest, ResizeMode::Bilinear}) {
      for (float threshold : {0.5f, 0.3f, 0.8f, 0.05f}) {
        for (bool channels_last : {false, true}) {
          for (const auto& sizes : size_cases()) {
            SegmentationSpec spec;
            spec.channels = 1;
            spec.width = sizes.first.width;
            spec.height = sizes.first.height;
            spec.channels_last = channels_last;
            spec.activation = activation;
            spec.threshold = threshold;
            spec.upsample = mode;
            const std::vector<float> scores = random_scores(spec, rng);
            SegmentationScratch scratch;
            const Size out = sizes.second;
            ties += check_against_reference(scores, spec, out.width, out.height, scratch,
                                            describe(spec, out.width, out.height));
            compared += static_cast<size_t>(out.width) * out.height;
          }
        }
      }
    }
  }
  CHECK(ties * 1000 < compared);  // near-ties are rare: the comparison is not vacuous
}

TEST(postprocess_segment_classes_match_reference) {
  std::mt19937 rng(99);
  size_t compared = 0, ties = 0;
  for (int channels : {2, 3, 4, 6}) {
    for (ScoreActivation activation : {ScoreActivation::Softmax, ScoreActivation::None}) {
      for (ResizeMode mode : {ResizeMode::Nearest, ResizeMode::Bilinear}) {
        for (bool channels_last : {false, true}) {
          // One scratch for the whole size sequence: tables and buffers are rebuilt as sizes change.
          SegmentationScratch scratch;
          for (const auto& sizes : size_cases()) {
            SegmentationSpec spec;
            spec.channels = channels;
            spec.width = sizes.first.width;
            spec.height = sizes.first.height;
            spec.channels_last = channels_last;
            spec.activation = activation;
            spec.upsample = mode;
            const std::vector<float> scores = random_scores(spec, rng);
            const Size out = sizes.second;
            ties += check_against_reference(scores, spec, out.width, out.height, scratch,
                                            describe(spec, out.width, out.height));
            compared += static_cast<size_t>(out.width) * out.height;
          }
        }
      }
    }
  }
  CHECK(ties * 1000 < compared);
}

TEST(postprocess_segment_larger_upsample_matches_reference) {
  std::mt19937 rng(7);
  for (ResizeMode mode : {ResizeMode::Nearest, ResizeMode::Bilinear}) {
    for (bool channels_last : {false, true}) {
      SegmentationSpec spec;
      spec.channels = 3;
      spec.width = 37;
      spec.height = 29;
      spec.channels_last = channels_last;
      spec.activation = ScoreActivation::Softmax;
      spec.upsample = mode;
      const std::vector<float> scores = random_scores(spec, rng);
      SegmentationScratch scratch;
      check_against_reference(scores, spec, 517, 389, scratch, describe(spec, 517, 389));
    }
  }
}

// Smooth maps with a few blobs, upsampled a lot: the realistic case, where most of the bilinear
// work is filling blocks whose corners agree, and the rest is mask boundaries.
TEST(postprocess_segment_smooth_blobs_match_reference) {
  struct Blob {
    double cx, cy, r;
    int channel;
  };
  const Blob blobs[] = {{0.3, 0.35, 0.12, 1}, {0.7, 0.6, 0.09, 2}, {0.45, 0.8, 0.06, 1},
                        {0.85, 0.2, 0.05, 2}};
  size_t compared = 0, ties = 0;
  for (int channels : {1, 3}) {
    for (ScoreActivation activation : {ScoreActivation::None, channels == 1 ? ScoreActivation::Sigmoid
                                                                            : ScoreActivation::Softmax}) {
      for (bool channels_last : {false, true}) {
        for (const auto& sizes : std::vector<std::pair<Size, Size>>{
                 {{24, 18}, {389, 301}}, {{32, 32}, {512, 512}}, {{20, 15}, {61, 44}}}) {
          SegmentationSpec spec;
          spec.channels = channels;
          spec.width = sizes.first.width;
          spec.height = sizes.first.height;
          spec.channels_last = channels_last;
          spec.activation = activation;
          spec.threshold = 0.5f;
          spec.upsample = ResizeMode::Bilinear;
          std::vector<float> scores(static_cast<size_t>(channels) * spec.width * spec.height);
          for (int y = 0; y < spec.height; ++y) {
            for (int x = 0; x < spec.width; ++x) {
              std::vector<double> logit(channels, 0.0);
              logit[0] = 2.0;  // background, anomaly channels at 0 (C == 1: the map at -2)
              if (channels == 1) logit[0] = -2.0;
              for (const Blob& b : blobs) {
                const double dx = (x + 0.5) / spec.width - b.cx, dy = (y + 0.5) / spec.height - b.cy;
                const double bump = 6.0 * std::exp(-(dx * dx + dy * dy) / (b.r * b.r));
                logit[channels == 1 ? 0 : b.channel] += bump;
              }
              std::vector<double> value = logit;
              if (activation == ScoreActivation::None) {
                if (channels == 1) {
                  value[0] = reference_sigmoid(logit[0]);
                } else {
                  double sum = 0;
                  for (double l : logit) sum += std::exp(l);
                  for (int k = 0; k < channels; ++k) value[k] = std::exp(logit[k]) / sum;
                }
              }
              for (int k = 0; k < channels; ++k) {
                const size_t i = channels_last
                                     ? (static_cast<size_t>(y) * spec.width + x) * channels + k
                                     : (static_cast<size_t>(k) * spec.height + y) * spec.width + x;
                scores[i] = static_cast<float>(value[k]);
              }
            }
          }
          SegmentationScratch scratch;
          const Size out = sizes.second;
          ties += check_against_reference(scores, spec, out.width, out.height, scratch,
                                          "blobs " + describe(spec, out.width, out.height));
          compared += static_cast<size_t>(out.width) * out.height;
        }
      }
    }
  }
  CHECK(ties * 1000 < compared);
}

// ---- segmentation edge cases --------------------------------------------------------------------

TEST(postprocess_segment_ties_go_to_the_lower_label) {
  SegmentationSpec spec;
  spec.channels = 3;
  spec.width = 4;
  spec.height = 1;
  spec.activation = ScoreActivation::Softmax;
  // Planar [C][1][4]: pixel 0 all equal; pixel 1 labels 1 and 2 tie above background; pixel 2
  // background ties label 2; pixel 3 label 2 wins.
  const std::vector<float> scores = {0.0f, 0.0f, 1.0f, 0.0f,
                                     0.0f, 2.0f, 0.0f, 0.5f,
                                     0.0f, 2.0f, 1.0f, 0.7f};
  SegmentationScratch scratch;
  LabelMap out;
  segment(scores.data(), spec, 4, 1, scratch, out);
  CHECK_EQ(out.labels[0], 0);
  CHECK_EQ(out.labels[1], 1);
  CHECK_EQ(out.labels[2], 0);
  CHECK_EQ(out.labels[3], 2);
  CHECK_EQ(out.counts[0], 2u);
  CHECK_EQ(out.counts[1], 1u);
  CHECK_EQ(out.counts[2], 1u);
  CHECK_NEAR(out.score, reference_sigmoid(2.0), 1e-7);
}

TEST(postprocess_segment_score_agrees_with_mask_at_exact_ties) {
  // Best margin exactly 0 (background ties an anomaly label everywhere): no anomalous pixel, so s
  // must stay below 0.5 although sigmoid(0) = 0.5.
  SegmentationSpec spec;
  spec.channels = 2;
  spec.width = 2;
  spec.height = 2;
  spec.activation = ScoreActivation::Softmax;
  std::vector<float> scores = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  SegmentationScratch scratch;
  LabelMap out;
  segment(scores.data(), spec, 3, 3, scratch, out);
  CHECK_EQ(out.counts[0], 9u);
  CHECK(out.score < 0.5f);
  CHECK_NEAR(out.score, 0.5, 1e-6);
  CHECK(!verdict_from_score(out.score, 0.5f).is_anomalous);
  // A margin so small that sigmoid rounds to 0.5f from below.
  scores = {1.0f, 1.0f, 1.0f, 1.0f, std::nextafter(1.0f, 0.0f), 0.0f, 0.0f, 0.0f};
  segment(scores.data(), spec, 2, 2, scratch, out);
  CHECK_EQ(out.counts[0], 4u);
  CHECK(out.score < 0.5f);
  // ... and from above: one anomalous pixel.
  scores = {1.0f, 1.0f, 1.0f, 1.0f, std::nextafter(1.0f, 2.0f), 0.0f, 0.0f, 0.0f};
  segment(scores.data(), spec, 2, 2, scratch, out);
  CHECK_EQ(out.counts[1], 1u);
  CHECK(out.score >= 0.5f);
  CHECK(verdict_from_score(out.score, 0.5f).is_anomalous);

  // C == 1: a score exactly at the threshold is anomalous.
  SegmentationSpec map;
  map.channels = 1;
  map.width = 2;
  map.height = 1;
  map.threshold = 0.3f;
  const std::vector<float> at_threshold = {0.3f, 0.1f};
  segment(at_threshold.data(), map, 2, 1, scratch, out);
  CHECK_EQ(out.labels[0], 1);
  CHECK_EQ(out.labels[1], 0);
  CHECK_EQ(out.score, 0.3f);
  CHECK(verdict_from_score(out.score, map.threshold).is_anomalous);
}

TEST(postprocess_segment_sigmoid_threshold_is_exact) {
  // Decisions are made on logits against a precomputed logit threshold; they must equal the
  // per-pixel rule sigmoid(logit) >= t for logits around the boundary.
  SegmentationSpec spec;
  spec.channels = 1;
  spec.activation = ScoreActivation::Sigmoid;
  for (float t : {0.5f, 0.3f, 0.8f, 0.999f, 1e-6f}) {
    spec.threshold = t;
    const double boundary = std::log(t / (1.0 - t));
    std::vector<float> logits;
    float x = static_cast<float>(boundary);
    for (int i = 0; i < 64; ++i) x = std::nextafter(x, -1e30f);
    for (int i = 0; i < 129; ++i, x = std::nextafter(x, 1e30f)) logits.push_back(x);
    spec.width = static_cast<int>(logits.size());
    spec.height = 1;
    SegmentationScratch scratch;
    LabelMap out;
    segment(logits.data(), spec, spec.width, 1, scratch, out);
    size_t anomalous = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      const float s = static_cast<float>(reference_sigmoid(logits[i]));
      // The reference sigmoid may round differently by an ulp or so: skip values that close to t.
      if (std::fabs(static_cast<double>(s) - t) > 5e-7 * t) CHECK_EQ(out.labels[i], s >= t ? 1 : 0);
      anomalous += out.labels[i];
    }
    // Labels are monotone in the logit: zeros, then ones.
    for (size_t i = 1; i < logits.size(); ++i) CHECK(out.labels[i] >= out.labels[i - 1]);
    CHECK_EQ(out.counts[1], anomalous);
    CHECK((out.score >= t) == (anomalous > 0));
  }
}

TEST(postprocess_segment_probabilities_with_zeros) {
  SegmentationSpec spec;
  spec.channels = 3;
  spec.width = 3;
  spec.height = 1;
  spec.channels_last = true;
  spec.activation = ScoreActivation::None;
  // All zero everywhere: margin -inf, s = 0, all background.
  std::vector<float> zeros(9, 0.0f);
  SegmentationScratch scratch;
  LabelMap out;
  segment(zeros.data(), spec, 3, 1, scratch, out);
  CHECK_EQ(out.counts[0], 3u);
  CHECK_EQ(out.score, 0.0f);
  // p0 = 0 < p2 at one pixel: infinite margin, s = 1.
  std::vector<float> probabilities = {0.9f, 0.05f, 0.05f, 0.0f, 0.0f, 0.2f, 0.0f, 0.0f, 0.0f};
  segment(probabilities.data(), spec, 3, 1, scratch, out);
  CHECK_EQ(out.labels[0], 0);
  CHECK_EQ(out.labels[1], 2);
  CHECK_EQ(out.labels[2], 0);
  CHECK_EQ(out.score, 1.0f);
  // Largest ratio p_k / p_0 = 0.6 / 0.3: s = 2 / 3.
  probabilities = {0.3f, 0.6f, 0.1f, 0.8f, 0.1f, 0.1f, 0.5f, 0.1f, 0.4f};
  segment(probabilities.data(), spec, 3, 1, scratch, out);
  CHECK_EQ(out.labels[0], 1);
  CHECK_EQ(out.labels[1], 0);
  CHECK_EQ(out.labels[2], 0);
  CHECK_NEAR(out.score, 2.0 / 3.0, 1e-7);
}

TEST(postprocess_segment_rejects_bad_input) {
  SegmentationScratch scratch;
  LabelMap out;
  std::vector<float> scores(3 * 4 * 4, 0.1f);
  SegmentationSpec spec;
  spec.channels = 3;
  spec.width = 4;
  spec.height = 4;
  spec.activation = ScoreActivation::Softmax;
  segment(scores.data(), spec, 8, 8, scratch, out);  // the valid baseline

  SegmentationSpec bad = spec;
  bad.channels = 0;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.channels = 257;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.activation = ScoreActivation::Sigmoid;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.channels = 1;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.upsample = ResizeMode::Area;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.width = 0;
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);
  CHECK_THROWS_KIND(segment(scores.data(), spec, 0, 8, scratch, out), ErrorKind::Validation);
  CHECK_THROWS_KIND(segment(scores.data(), spec, 8, -1, scratch, out), ErrorKind::Validation);
  bad = spec;
  bad.channels = 1;
  bad.activation = ScoreActivation::None;
  bad.threshold = std::nanf("");
  CHECK_THROWS_KIND(segment(scores.data(), bad, 8, 8, scratch, out), ErrorKind::Validation);

  scores[17] = std::nanf("");
  CHECK_THROWS_KIND(segment(scores.data(), spec, 8, 8, scratch, out), ErrorKind::InternalServer);
}

TEST(postprocess_segment_steady_state_reuses_buffers) {
  std::mt19937 rng(5);
  for (ResizeMode mode : {ResizeMode::Nearest, ResizeMode::Bilinear}) {
    SegmentationSpec spec;
    spec.channels = 3;
    spec.width = 20;
    spec.height = 15;
    spec.activation = ScoreActivation::Softmax;
    spec.upsample = mode;
    const std::vector<float> scores = random_scores(spec, rng);
    SegmentationScratch scratch;
    LabelMap out;
    segment(scores.data(), spec, 200, 150, scratch, out);
    const std::vector<uint8_t> first_labels = out.labels;
    const float first_score = out.score;
    const uint8_t* labels = out.labels.data();
    const uint64_t* counts = out.counts.data();
    const int* x_first = scratch.x_axis.first.data();
    const float* y_weights = scratch.y_axis.weights.data();
    const float* row_buffer = scratch.row_buffer.data();
    segment(scores.data(), spec, 200, 150, scratch, out);
    CHECK(out.labels.data() == labels);
    CHECK(out.counts.data() == counts);
    CHECK(scratch.x_axis.first.data() == x_first);
    CHECK(scratch.y_axis.weights.data() == y_weights);
    CHECK(scratch.row_buffer.data() == row_buffer);
    CHECK(out.labels == first_labels);
    CHECK_EQ(out.score, first_score);
    // A smaller output reuses the same storage too.
    segment(scores.data(), spec, 100, 90, scratch, out);
    CHECK(out.labels.data() == labels);
    CHECK_EQ(out.labels.size(), 100u * 90u);
  }
}

// ---- SIMD targets -------------------------------------------------------------------------------
// The row kernels (vertical blend, horizontal interpolation, argmax / threshold) run on the best
// Highway target of the CPU. Labels are decisions on floats, so every target must reproduce the
// portable scalar kernels bit for bit: labels, counts and the bits of s.

namespace {

struct RowKernelSet {
  std::string name;
  bool simd;
  int64_t target;  // Highway target bit (simd only)
};

std::vector<RowKernelSet> row_kernel_sets() {
  std::vector<RowKernelSet> sets;
#ifndef OPENLOOKOUT_NO_HWY
  hwy::SetSupportedTargetsForTest(0);  // list what the CPU really supports
  for (int64_t target : hwy::SupportedAndGeneratedTargets())
    sets.push_back({hwy::TargetName(target), true, target});
#endif
  return sets;
}

// Selects the scalar kernels or one target for the calls that follow; restores the default.
class UseRowKernels {
 public:
  explicit UseRowKernels(const RowKernelSet* set) {
    set_postprocess_simd_enabled(set != nullptr);
#ifndef OPENLOOKOUT_NO_HWY
    hwy::SetSupportedTargetsForTest(set != nullptr ? set->target : 0);
#endif
  }
  ~UseRowKernels() {
    set_postprocess_simd_enabled(true);
#ifndef OPENLOOKOUT_NO_HWY
    hwy::SetSupportedTargetsForTest(0);
#endif
  }
  UseRowKernels(const UseRowKernels&) = delete;
  UseRowKernels& operator=(const UseRowKernels&) = delete;
};

uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// Scores on a coarse grid (many exact ties between channels, and values exactly at the
// threshold) or continuous; smooth fields give long uniform runs, noise gives boundaries
// everywhere. Probabilities for None with C >= 2, logits otherwise.
std::vector<float> target_test_scores(const SegmentationSpec& spec, bool coarse, bool smooth,
                                      std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  const size_t count = static_cast<size_t>(spec.channels) * spec.width * spec.height;
  std::vector<float> scores(count);
  for (size_t i = 0; i < count; ++i) {
    float v = uniform(rng);
    if (smooth) {
      const size_t pixel = spec.channels_last ? i / spec.channels : i % (spec.width * spec.height);
      const int x = static_cast<int>(pixel % spec.width), y = static_cast<int>(pixel / spec.width);
      v = 0.3f * v + std::sin(0.4f * x + 0.1f * static_cast<float>(i % 7)) * std::cos(0.3f * y);
    }
    if (coarse) v = std::floor(v * 2.0f) / 4.0f;  // multiples of 0.25
    if (spec.activation == ScoreActivation::None) v = 0.5f + 0.25f * v;  // a C == 1 score or p
    scores[i] = v;
  }
  return scores;
}

}  // namespace

TEST(postprocess_segment_every_simd_target_matches_scalar_bit_for_bit) {
  const std::vector<RowKernelSet> sets = row_kernel_sets();
  // Model size -> image size: widths that are no multiple of any vector length, 1-pixel-wide and
  // 1-pixel-high targets, integer and non-integer upsampling, downsampling, model rows wider
  // than two AVX-512 vectors (the kernels' window loads) and narrower than one.
  const std::vector<std::pair<Size, Size>> sizes = {
      {{7, 5}, {33, 19}},    {{16, 16}, {10, 10}},  {{1, 1}, {4, 4}},     {{9, 4}, {1, 9}},
      {{3, 8}, {1, 1}},      {{1, 6}, {13, 1}},     {{12, 9}, {36, 27}},  {{13, 11}, {20, 7}},
      {{40, 24}, {200, 77}}, {{64, 48}, {641, 157}}, {{37, 29}, {370, 290}}, {{64, 40}, {23, 17}},
      {{33, 17}, {131, 1}},  {{50, 30}, {127, 64}},
  };
  struct Mode {
    int channels;
    ScoreActivation activation;
    float threshold;
  };
  const std::vector<Mode> modes = {
      {1, ScoreActivation::None, 0.5f},     {1, ScoreActivation::None, 0.625f},
      {1, ScoreActivation::Sigmoid, 0.5f},  {1, ScoreActivation::Sigmoid, 0.3f},
      {2, ScoreActivation::None, 0.5f},     {2, ScoreActivation::Softmax, 0.5f},
      {3, ScoreActivation::None, 0.5f},     {3, ScoreActivation::Softmax, 0.5f},
      {5, ScoreActivation::Softmax, 0.5f},  {4, ScoreActivation::None, 0.5f},
  };
  std::mt19937 rng(20240611);
  int cases = 0, compared = 0;
  size_t anomalous_cases = 0, background_cases = 0;
  for (const auto& size : sizes) {
    for (const Mode& mode : modes) {
      for (int variant = 0; variant < 8; ++variant) {
        SegmentationSpec spec;
        spec.channels = mode.channels;
        spec.activation = mode.activation;
        spec.threshold = mode.threshold;
        spec.width = size.first.width;
        spec.height = size.first.height;
        spec.channels_last = (variant & 1) != 0;
        spec.upsample = (variant & 2) != 0 ? ResizeMode::Nearest : ResizeMode::Bilinear;
        const bool coarse = (variant & 4) != 0;
        const bool smooth = !coarse && (cases % 2 == 0);
        const std::vector<float> scores = target_test_scores(spec, coarse, smooth, rng);
        const int width = size.second.width, height = size.second.height;
        const std::string what = describe(spec, width, height);
        ++cases;

        LabelMap expected;
        {
          UseRowKernels scalar(nullptr);
          SegmentationScratch scratch;
          segment(scores.data(), spec, width, height, scratch, expected);
        }
        (expected.counts[0] == expected.labels.size() ? background_cases : anomalous_cases) += 1;
        for (const RowKernelSet& set : sets) {
          UseRowKernels use(&set);
          SegmentationScratch scratch;
          LabelMap got;
          // Twice with one scratch: tables built by the first call are reused by the second.
          for (int call = 0; call < 2; ++call) {
            segment(scores.data(), spec, width, height, scratch, got);
            ++compared;
            if (got.labels != expected.labels)
              ::olt::fail(__FILE__, __LINE__, set.name + ": labels differ from scalar, " + what);
            if (got.counts != expected.counts)
              ::olt::fail(__FILE__, __LINE__, set.name + ": counts differ from scalar, " + what);
            if (float_bits(got.score) != float_bits(expected.score))
              ::olt::fail(__FILE__, __LINE__, set.name + ": score " + std::to_string(got.score) +
                                                  " vs scalar " + std::to_string(expected.score) +
                                                  ", " + what);
          }
        }
      }
    }
  }
  // Not vacuous: every target was compared, on masks with and without anomalous pixels.
#ifndef OPENLOOKOUT_NO_HWY
  CHECK(!sets.empty());
#endif
  CHECK_EQ(compared, cases * 2 * static_cast<int>(sets.size()));
  CHECK(anomalous_cases > 0);
  CHECK(background_cases > 0);
  std::string names;
  for (const RowKernelSet& set : sets) names += " " + set.name;
  std::printf("  segmentation: %d cases bit-identical to the scalar kernels on:%s\n", cases,
              names.c_str());
}

TEST(postprocess_simd_hook_returns_previous_setting) {
  CHECK(set_postprocess_simd_enabled(false));
  CHECK(!set_postprocess_simd_enabled(true));
  CHECK(set_postprocess_simd_enabled(true));
}
