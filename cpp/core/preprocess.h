// Stage 2: RgbView -> model input tensor (float32), resize + normalize + layout in one pass.
//
// Resize modes (all map destination pixel centres into the source with half-pixel offsets):
//   Bilinear: source coordinate (i + 0.5) * src / dst - 0.5, clamped to the edge pixels; two taps
//             per axis; no antialiasing (cv2.INTER_LINEAR, torch interpolate align_corners=False).
//   Area:     the destination pixel covers [i * src / dst, (i + 1) * src / dst) of the source;
//             each source pixel is weighted by its overlap (exact box filter; cv2.INTER_AREA when
//             shrinking; when enlarging it is the same overlap average).
//   Nearest:  source index floor((i + 0.5) * src / dst).
// Then x = (pixel * scale - mean[c]) / std[c], channel c in the model's colour order.
#pragma once

#include <cstddef>
#include <vector>

#include "image.h"

namespace openlookout {

enum class ResizeMode { Bilinear, Area, Nearest };
enum class Layout { NCHW, NHWC };
enum class ColorOrder { RGB, BGR };

struct PreprocessSpec {
  int width = 0;   // model input width
  int height = 0;  // model input height
  Layout layout = Layout::NCHW;
  ColorOrder color = ColorOrder::RGB;
  ResizeMode resize = ResizeMode::Bilinear;
  float scale = 1.0f / 255.0f;
  float mean[3] = {0.0f, 0.0f, 0.0f};  // in the model's colour order
  float std[3] = {1.0f, 1.0f, 1.0f};   // in the model's colour order
};

// One axis of a separable resampling: destination index i reads source indices
// [first[i], first[i] + count[i]) with weights[offset[i] ...]. Weights of one index sum to 1.
struct ResampleAxis {
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int> offset;
  std::vector<float> weights;
  int src = -1;  // the source length the table was built for (-1: not built)
  int dst = -1;
  ResizeMode mode = ResizeMode::Bilinear;

  bool built_for(ResizeMode m, int s, int d) const { return mode == m && src == s && dst == d; }
};

// Builds the tap table for resizing `src` samples to `dst` samples with `mode`. Used by
// preprocessing and by the segmentation upsampler (nearest / bilinear).
void build_resample_axis(ResizeMode mode, int src, int dst, ResampleAxis& axis);

// Per-worker scratch: tap tables (rebuilt only when mode or sizes change) and row buffers.
struct PreprocessScratch {
  ResampleAxis x_axis;
  ResampleAxis y_axis;
  // Row buffers: resampled source rows (horizontal pass first) or the vertically summed source
  // row (vertical pass first, chosen per call when it is cheaper, e.g. area shrinking).
  std::vector<float> rows;
  std::vector<int> row_of_slot;
};

// Writes spec.width * spec.height * 3 floats to `out` in spec.layout.
void resize_normalize(const RgbView& src, const PreprocessSpec& spec, PreprocessScratch& scratch,
                      float* out);

// Test hooks, process-wide, not thread-safe; return the previous setting.
// set_preprocess_simd_enabled(false) forces the portable scalar kernels (the Highway kernels are
// otherwise dispatched at run time to the best target the CPU has).
bool set_preprocess_simd_enabled(bool enabled);
// 0: pick the cheaper pass order per call (default), 1: horizontal first, 2: vertical first.
int set_preprocess_resample_order(int order);

}  // namespace openlookout
