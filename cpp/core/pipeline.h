// The whole flow for one model: bytes -> decode -> resize_normalize -> session.run ->
// classify / segment -> encode_mask_png. A Pipeline is shared by all threads; each call borrows a
// Worker (decoder, scratch buffers, ORT IO) from a small pool and returns it, so steady-state
// calls allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "decode.h"
#include "image.h"
#include "mask_png.h"
#include "postprocess.h"
#include "preprocess.h"
#include "session.h"

namespace openlookout {

enum class Task { Classification, Segmentation };

struct ClassificationConfig {
  std::string output;  // empty: the model's only output
  ScoreActivation activation = ScoreActivation::None;
  float threshold = 0.5f;
};

struct SegmentationConfig {
  std::string output;  // empty: the model's only output
  // None/Sigmoid for a one-channel map, None (probabilities)/Softmax (logits) for C >= 2.
  ScoreActivation activation = ScoreActivation::None;
  // The manifest left it unset: None for a one-channel map, Softmax for C >= 2.
  bool activation_is_default = false;
  float threshold = 0.5f;
  ResizeMode upsample = ResizeMode::Nearest;
  std::vector<Rgb> label_colors;  // labels[k] -> colour; background is white
};

struct PipelineConfig {
  std::string model_path;
  Task task = Task::Classification;
  std::string input_name;  // empty: the model's only input
  PreprocessSpec preprocess;
  // Feed each image at its own size (preprocess.width/height ignored): models whose graph
  // resizes by itself, such as anomalib's exports (manifest input.resize "none").
  bool original_size = false;
  int image_width = 0;  // > 0: images must be exactly this size (L4V's training-size rule)
  int image_height = 0;
  bool has_classification = false;
  ClassificationConfig classification;
  bool has_segmentation = false;
  SegmentationConfig segmentation;
  DecodeLimits limits;
  // Opt-in: decode JPEGs scaled down in the DCT domain to no less than the model input (see
  // JpegScaling). Faster on large images; results differ slightly from the exact decode.
  bool fast_jpeg_scaling = false;
  SessionOptions session;
};

struct Detection {
  bool is_anomalous = false;
  float confidence = 0.0f;
  bool has_segmentation = false;
  // Segmentation only: pixels per label in the full-size mask (index 0 = background) and the
  // mask PNG.
  std::vector<uint64_t> label_pixels;
  uint64_t total_pixels = 0;
  std::vector<uint8_t> mask_png;
};

struct Worker;

class Pipeline {
 public:
  explicit Pipeline(PipelineConfig config);  // loads and validates; throws Error
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // While a Lease lives, its Detection is valid; destroying it returns the worker to the pool.
  class Lease {
   public:
    Lease(const Pipeline* owner, std::unique_ptr<Worker> worker);
    Lease(Lease&&) noexcept;
    ~Lease();
    const Detection& detection() const;

   private:
    friend class Pipeline;
    const Pipeline* owner_;
    std::unique_ptr<Worker> worker_;
  };

  Lease detect(const uint8_t* body, size_t size, ImageFormat format) const;
  Lease detect_rgb(const RgbView& image) const;

  const PipelineConfig& config() const { return config_; }
  const Session& session() const { return *session_; }
  // Segmentation only: label count C-1 (or 1 for an anomaly map).
  int label_count() const { return static_cast<int>(config_.segmentation.label_colors.size()); }

 private:
  std::unique_ptr<Worker> acquire() const;
  void release(std::unique_ptr<Worker> worker) const;
  // `image` is what the model sees; masks and areas are at full_width x full_height.
  void run(Worker& worker, const RgbView& image, int full_width, int full_height) const;
  void validate_against_model();

  PipelineConfig config_;
  std::unique_ptr<Session> session_;
  std::vector<int64_t> input_shape_;
  // A model with a fixed batch larger than one (e.g. anomalib's PatchCore export has 2) gets the
  // image repeated in every slot; outputs are read from the first.
  int64_t batch_ = 1;
  std::vector<std::string> output_names_;  // [classification?, segmentation?]
  SegmentationSpec segmentation_spec_;
  std::vector<Rgb> palette_;  // background + labels
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Worker>> pool_;
};

}  // namespace openlookout
