#include "pipeline.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "errors.h"

namespace openlookout {

// Everything one call needs, owned by one thread at a time and reused across calls.
struct Worker {
  Decoder decoder;
  RgbImage image;
  PreprocessScratch preprocess;
  std::unique_ptr<SessionIO> io;
  std::vector<int64_t> input_shape;  // per call for original-size models; keeps its capacity
  SegmentationScratch segmentation;
  LabelMap label_map;
  MaskEncoderScratch mask;
  Detection detection;
};

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    s << (i ? "," : "");
    if (shape[i] < 0) s << "?"; else s << shape[i];
  }
  s << "]";
  return s.str();
}

// Finds the tensor named `wanted`, or the only one when `wanted` is empty.
const TensorInfo& pick_tensor(const std::vector<TensorInfo>& tensors, const std::string& wanted,
                              const char* field, const char* kind) {
  if (wanted.empty()) {
    if (tensors.size() == 1) return tensors[0];
    std::ostringstream s;
    s << field << ": the model has " << tensors.size() << " " << kind << "s (";
    for (size_t i = 0; i < tensors.size(); ++i) s << (i ? ", " : "") << tensors[i].name;
    s << "); name the one to use";
    throw_validation(s.str());
  }
  for (const auto& t : tensors) {
    if (t.name == wanted) return t;
  }
  std::ostringstream s;
  s << field << ": the model has no " << kind << " named '" << wanted << "' (it has:";
  for (const auto& t : tensors) s << " " << t.name;
  s << ")";
  throw_validation(s.str());
}

bool dim_matches(int64_t actual, int64_t expected) { return actual < 0 || actual == expected; }

size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= d < 0 ? 0 : static_cast<size_t>(d);
  return n;
}

// Reads the segmentation layout off an output shape: [N,C,h,w], [N,h,w,C] or [N,h,w] (C = 1),
// N the model's batch. Returns false when the shape does not fit `channels`.
bool segmentation_geometry(const std::vector<int64_t>& shape, int channels, int64_t batch,
                           SegmentationSpec& spec) {
  if (shape.size() == 3 && channels == 1 && dim_matches(shape[0], batch)) {
    spec.channels_last = false;
    spec.height = static_cast<int>(shape[1]);
    spec.width = static_cast<int>(shape[2]);
    return true;
  }
  if (shape.size() != 4 || !dim_matches(shape[0], batch)) return false;
  if (shape[1] == channels) {
    spec.channels_last = false;
    spec.height = static_cast<int>(shape[2]);
    spec.width = static_cast<int>(shape[3]);
    return true;
  }
  if (shape[3] == channels) {
    spec.channels_last = true;
    spec.height = static_cast<int>(shape[1]);
    spec.width = static_cast<int>(shape[2]);
    return true;
  }
  return false;
}

void check_config(const PipelineConfig& c) {
  const PreprocessSpec& p = c.preprocess;
  if (!c.original_size && (p.width < 1 || p.height < 1 || p.width > 16384 || p.height > 16384))
    throw_validation("input.width/input.height: must be between 1 and 16384");
  for (int i = 0; i < 3; ++i) {
    if (!std::isfinite(p.std[i]) || p.std[i] == 0.0f) throw_validation("input.std: must be non-zero");
    if (!std::isfinite(p.mean[i])) throw_validation("input.mean: must be finite");
  }
  if (!std::isfinite(p.scale) || p.scale == 0.0f) throw_validation("input.scale: must be non-zero");
  if (c.has_classification && !(c.classification.threshold > 0.0f && c.classification.threshold < 1.0f))
    throw_validation("classification.threshold: must be strictly between 0 and 1");
  if (c.task == Task::Classification && !c.has_classification)
    throw_validation("classification: a classification model needs a classification section");
  if (c.task == Task::Segmentation) {
    if (!c.has_segmentation) throw_validation("segmentation: a segmentation model needs a segmentation section");
    const size_t labels = c.segmentation.label_colors.size();
    if (labels < 1 || labels > 254) throw_validation("segmentation.labels: need 1 to 254 labels");
    if (!(c.segmentation.threshold > 0.0f && c.segmentation.threshold < 1.0f))
      throw_validation("segmentation.threshold: must be strictly between 0 and 1");
    if (c.segmentation.upsample == ResizeMode::Area)
      throw_validation("segmentation.upsample: must be nearest or bilinear");
  }
  if (c.limits.min_side < 1 || c.limits.max_side < c.limits.min_side)
    throw_validation("limits: need 1 <= min_side <= max_side");
  if (c.image_width < 0 || c.image_height < 0) throw_validation("image_size: must be positive");
}

}  // namespace

Pipeline::Pipeline(PipelineConfig config) : config_(std::move(config)) {
  check_config(config_);
  session_ = std::make_unique<Session>(config_.model_path, config_.session);
  validate_against_model();
  // One worker up front: it proves the IO can be built and serves the first call warm.
  release(acquire());
}

Pipeline::~Pipeline() = default;

void Pipeline::validate_against_model() {
  const PreprocessSpec& p = config_.preprocess;
  const TensorInfo& input = pick_tensor(session_->inputs(), config_.input_name, "input.name", "input");
  config_.input_name = input.name;
  if (input.type != ElementType::Float32)
    throw_validation("input.name: model input '" + input.name + "' is " + input.type_name +
                     "; openlookout feeds float32");
  const bool nchw = p.layout == Layout::NCHW;
  const auto& s = input.shape;
  if (s.size() == 4 && s[0] > 1) batch_ = s[0];
  const int64_t height = config_.original_size ? -1 : p.height;
  const int64_t width = config_.original_size ? -1 : p.width;
  input_shape_ = nchw ? std::vector<int64_t>{batch_, 3, height, width}
                      : std::vector<int64_t>{batch_, height, width, 3};
  bool fits = s.size() == 4;
  for (size_t i = 0; fits && i < 4; ++i)
    fits = input_shape_[i] < 0 ? s[i] < 0 : dim_matches(s[i], input_shape_[i]);
  if (!fits) {
    // Name the field at fault when it is the size.
    std::string field = "input";
    if (s.size() == 4) {
      const int64_t model_h = nchw ? s[2] : s[1], model_w = nchw ? s[3] : s[2];
      const int64_t model_c = nchw ? s[1] : s[3];
      if (!dim_matches(model_c, 3)) {
        field = "input.layout";
      } else if (config_.original_size) {
        field = "input.resize";
      } else if (!dim_matches(model_w, p.width)) {
        field = "input.width";
      } else if (!dim_matches(model_h, p.height)) {
        field = "input.height";
      }
    }
    const std::string wanted =
        config_.original_size ? "the image's own size (resize none, which needs a model with "
                                "dynamic height and width)"
                              : std::to_string(p.width) + "x" + std::to_string(p.height);
    throw_validation(field + ": the manifest (layout " + std::string(nchw ? "NCHW" : "NHWC") + ", " +
                     wanted + ") needs input '" + input.name + "' of shape " +
                     shape_string(input_shape_) + " but the model's is " + shape_string(s));
  }
  if (config_.original_size) {
    // A placeholder until the first image sets the real size (Session::reshape_input).
    input_shape_ = nchw ? std::vector<int64_t>{batch_, 3, 1, 1} : std::vector<int64_t>{batch_, 1, 1, 3};
  }

  if (config_.has_classification) {
    const TensorInfo& out = pick_tensor(session_->outputs(), config_.classification.output,
                                        "classification.output", "output");
    config_.classification.output = out.name;
    if (out.type != ElementType::Float32)
      throw_validation("classification.output: '" + out.name + "' is " + out.type_name + ", not float32");
    bool static_shape = true;
    for (int64_t d : out.shape) static_shape = static_shape && d > 0;
    const size_t n = element_count(out.shape) / static_cast<size_t>(batch_);
    if (static_shape && n != 1 && n != 2)
      throw_validation("classification.output: '" + out.name + "' has shape " + shape_string(out.shape) +
                       "; expected one score or two values [normal, anomalous]");
    if (static_shape && n == 1 && config_.classification.activation == ScoreActivation::Softmax)
      throw_validation("classification.activation: softmax needs two values, '" + out.name +
                       "' has one");
    if (static_shape && n == 2 && config_.classification.activation == ScoreActivation::Sigmoid)
      throw_validation("classification.activation: sigmoid takes one score; '" + out.name +
                       "' has two values [normal, anomalous] (use softmax or none)");
    output_names_.push_back(out.name);
  }

  if (config_.has_segmentation) {
    const SegmentationConfig& seg = config_.segmentation;
    const TensorInfo& out = pick_tensor(session_->outputs(), seg.output, "segmentation.output", "output");
    config_.segmentation.output = out.name;
    if (out.type != ElementType::Float32)
      throw_validation("segmentation.output: '" + out.name + "' is " + out.type_name + ", not float32");
    // Decide C from the shape: a one-channel map thresholds, C >= 2 channels argmax.
    const int labels = label_count();
    int channels = labels + 1;
    SegmentationSpec spec;
    if (segmentation_geometry(out.shape, 1, batch_, spec) && labels == 1 &&
        !segmentation_geometry(out.shape, 2, batch_, spec)) {
      channels = 1;
    }
    if (!segmentation_geometry(out.shape, channels, batch_, spec)) {
      throw_validation("segmentation.labels: output '" + out.name + "' has shape " +
                       shape_string(out.shape) + "; with " + std::to_string(labels) +
                       " label(s) it must be [1," + std::to_string(labels + 1) +
                       ",h,w] (background + labels)" +
                       (labels == 1 ? " or a one-channel anomaly map [1,1,h,w]" : ""));
    }
    segmentation_geometry(out.shape, channels, batch_, spec);
    spec.channels = channels;
    spec.threshold = seg.threshold;
    spec.upsample = seg.upsample;
    spec.activation = seg.activation;
    if (seg.activation_is_default)
      spec.activation = channels == 1 ? ScoreActivation::None : ScoreActivation::Softmax;
    if (channels == 1 && spec.activation == ScoreActivation::Softmax)
      throw_validation("segmentation.activation: a one-channel anomaly map takes none or sigmoid");
    if (channels >= 2 && spec.activation == ScoreActivation::Sigmoid)
      throw_validation("segmentation.activation: class scores take softmax (logits) or none (probabilities)");
    segmentation_spec_ = spec;
    palette_.push_back(Rgb{255, 255, 255});
    for (const Rgb& c : seg.label_colors) palette_.push_back(c);
    output_names_.push_back(out.name);
  }
}

std::unique_ptr<Worker> Pipeline::acquire() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      std::unique_ptr<Worker> w = std::move(pool_.back());
      pool_.pop_back();
      return w;
    }
  }
  auto w = std::make_unique<Worker>();
  w->io = session_->make_io(config_.input_name, input_shape_, output_names_);
  return w;
}

void Pipeline::release(std::unique_ptr<Worker> worker) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(worker));
}

Pipeline::Lease::Lease(const Pipeline* owner, std::unique_ptr<Worker> worker)
    : owner_(owner), worker_(std::move(worker)) {}
Pipeline::Lease::Lease(Lease&& other) noexcept
    : owner_(other.owner_), worker_(std::move(other.worker_)) {}
Pipeline::Lease::~Lease() {
  if (worker_) owner_->release(std::move(worker_));
}
const Detection& Pipeline::Lease::detection() const { return worker_->detection; }

Pipeline::Lease Pipeline::detect(const uint8_t* body, size_t size, ImageFormat format) const {
  Lease lease(this, acquire());
  Worker& w = *lease.worker_;
  JpegScaling scaling;
  if (config_.fast_jpeg_scaling) scaling = {config_.preprocess.width, config_.preprocess.height};
  w.decoder.decode(body, size, format, config_.limits, w.image, scaling);
  run(w, w.image.view(), w.image.source_width, w.image.source_height);
  return lease;
}

Pipeline::Lease Pipeline::detect_rgb(const RgbView& image) const {
  check_dimensions(image.width, image.height, config_.limits);
  Lease lease(this, acquire());
  run(*lease.worker_, image, image.width, image.height);
  return lease;
}

void Pipeline::run(Worker& w, const RgbView& image, int full_width, int full_height) const {
  if (config_.image_width > 0 &&
      (full_width != config_.image_width || full_height != config_.image_height)) {
    throw_validation("image is " + std::to_string(full_width) + "x" + std::to_string(full_height) +
                     " pixels but this model takes " + std::to_string(config_.image_width) + "x" +
                     std::to_string(config_.image_height) + " images (image_size in its manifest)");
  }
  if (config_.original_size) {
    PreprocessSpec spec = config_.preprocess;
    spec.width = image.width;
    spec.height = image.height;
    const bool nchw = spec.layout == Layout::NCHW;
    if (nchw) w.input_shape.assign({batch_, 3, spec.height, spec.width});
    else w.input_shape.assign({batch_, spec.height, spec.width, 3});
    session_->reshape_input(*w.io, w.input_shape);
    resize_normalize(image, spec, w.preprocess, w.io->input());
  } else {
    resize_normalize(image, config_.preprocess, w.preprocess, w.io->input());
  }
  if (batch_ > 1) {
    // Every slot of a fixed batch gets the same image; the first slot's outputs are read.
    const auto& shape = w.io->input_shape();
    const size_t item = static_cast<size_t>(shape[1] * shape[2] * shape[3]);
    for (int64_t b = 1; b < batch_; ++b)
      std::copy(w.io->input(), w.io->input() + item, w.io->input() + b * static_cast<int64_t>(item));
  }
  session_->run(*w.io);

  Detection& d = w.detection;
  d.has_segmentation = config_.has_segmentation;
  size_t next_output = 0;
  float score = 0.0f;
  if (config_.has_classification) {
    const size_t i = next_output++;
    const size_t n = element_count(w.io->output_shape(i)) / static_cast<size_t>(batch_);
    score = classification_score(w.io->output(i), n, config_.classification.activation);
  }
  if (config_.has_segmentation) {
    const size_t i = next_output++;
    SegmentationSpec spec = segmentation_spec_;
    if (!segmentation_geometry(w.io->output_shape(i), spec.channels, batch_, spec) || spec.width < 1 ||
        spec.height < 1) {
      throw_internal("segmentation output has shape " + shape_string(w.io->output_shape(i)) +
                     ", which does not fit the manifest");
    }
    segment(w.io->output(i), spec, full_width, full_height, w.segmentation, w.label_map);
    if (!config_.has_classification) score = w.label_map.score;
    d.total_pixels = static_cast<uint64_t>(full_width) * static_cast<uint64_t>(full_height);
    d.label_pixels.assign(palette_.size(), 0);
    for (size_t k = 0; k < w.label_map.counts.size() && k < d.label_pixels.size(); ++k)
      d.label_pixels[k] = w.label_map.counts[k];
    encode_mask_png(w.label_map.labels.data(), full_width, full_height, palette_.data(),
                    palette_.size(), w.mask, d.mask_png);
  }
  const float threshold = config_.has_classification ? config_.classification.threshold
                          : segmentation_spec_.channels == 1 ? config_.segmentation.threshold
                                                             : 0.5f;
  Verdict v = verdict_from_score(score, threshold);
  if (config_.has_segmentation && !config_.has_classification) {
    // The verdict is the mask's: anomalous exactly when a pixel carries a label. s and the mask
    // agree except on an exact tie (an argmax tie goes to the background while s = 0.5 >= 0.5),
    // where s sits on the threshold and the confidence is 0.5 either way.
    const bool has_label = d.label_pixels[0] < d.total_pixels;
    if (has_label != v.is_anomalous) v = {has_label, 0.5f, score};
  }
  d.is_anomalous = v.is_anomalous;
  d.confidence = v.confidence;
}

}  // namespace openlookout
