// libFuzzer target: the whole bytes-to-result path, Pipeline::detect (decode, resize/normalize,
// ONNX Runtime, classification and segmentation postprocessing, mask PNG) on tiny models.
//
// Input: byte 0 picks the content type (bit 0: PNG or JPEG) and one of four pipelines (bits 1-2,
// see kPipelines); the rest is the body. Environment (scripts/fuzz.sh sets both):
//   OPENLOOKOUT_ORT_LIBRARY   the ONNX Runtime shared library to dlopen
//   OPENLOOKOUT_FUZZ_MODELS   directory with fixed.onnx and dynamic.onnx (make_fuzz_model.py);
//                             default: the directory holding this executable
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "pipeline.h"
#include "session.h"

namespace {

using namespace openlookout;

struct PipelineChoice {
  const char* model;
  ResizeMode resize;
  ResizeMode upsample;
  bool fast_jpeg_scaling;
  bool original_size;
  bool classification_only;
};

// fixed.onnx: input image [1,3,32,32], outputs cls [1,1] and seg [1,3,8,8].
// dynamic.onnx: input image [1,3,H,W], outputs cls [1,1] and seg [1,3,ceil(H/2),ceil(W/2)].
const PipelineChoice kPipelines[4] = {
    {"fixed.onnx", ResizeMode::Area, ResizeMode::Nearest, false, false, false},
    {"fixed.onnx", ResizeMode::Bilinear, ResizeMode::Bilinear, true, false, false},
    {"dynamic.onnx", ResizeMode::Nearest, ResizeMode::Bilinear, false, true, false},
    {"fixed.onnx", ResizeMode::Nearest, ResizeMode::Nearest, false, false, true},
};

std::string model_dir;
std::vector<std::unique_ptr<Pipeline>> pipelines;

std::unique_ptr<Pipeline> make_pipeline(const PipelineChoice& c) {
  PipelineConfig config;
  config.model_path = model_dir + "/" + c.model;
  config.task = c.classification_only ? Task::Classification : Task::Segmentation;
  config.preprocess.width = 32;
  config.preprocess.height = 32;
  config.preprocess.resize = c.resize;
  config.original_size = c.original_size;
  config.fast_jpeg_scaling = c.fast_jpeg_scaling;
  config.has_classification = true;
  config.classification = {"cls", ScoreActivation::Sigmoid, 0.5f};
  if (!c.classification_only) {
    config.has_segmentation = true;
    config.segmentation.output = "seg";
    config.segmentation.activation = ScoreActivation::Softmax;
    config.segmentation.upsample = c.upsample;
    config.segmentation.label_colors = {Rgb{126, 211, 33}, Rgb{77, 216, 255}};
  }
  config.limits.min_side = 1;
  // Smaller than the default 4096 so that each run stays fast; the decoders' own targets fuzz
  // up to 4096.
  config.limits.max_side = 1024;
  config.session.intra_op_threads = 1;
  config.session.inter_op_threads = 1;
  return std::make_unique<Pipeline>(std::move(config));
}

std::string directory_of(const char* path) {
  std::string p(path);
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const char* ort = std::getenv("OPENLOOKOUT_ORT_LIBRARY");
  if (ort == nullptr || *ort == '\0')
    openlookout_fuzz::fail("setup", "set OPENLOOKOUT_ORT_LIBRARY to libonnxruntime.so");
  const char* models = std::getenv("OPENLOOKOUT_FUZZ_MODELS");
  model_dir = (models != nullptr && *models != '\0') ? models : directory_of((*argv)[0]);
  (void)argc;
  try {
    load_onnxruntime(ort);
    for (const PipelineChoice& c : kPipelines) pipelines.push_back(make_pipeline(c));
  } catch (const std::exception& e) {
    openlookout_fuzz::fail("setup", e.what());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace openlookout;
  if (size < 1) return 0;
  const ImageFormat format = (data[0] & 1) ? ImageFormat::Jpeg : ImageFormat::Png;
  const Pipeline& pipeline = *pipelines[(data[0] >> 1) & 3];
  openlookout_fuzz::expect_ok_or_validation([&] {
    Pipeline::Lease lease = pipeline.detect(data + 1, size - 1, format);
    const Detection& d = lease.detection();
    if (!(d.confidence >= 0.5f && d.confidence <= 1.0f))
      openlookout_fuzz::fail("confidence outside [0.5, 1]", std::to_string(d.confidence).c_str());
    if (d.has_segmentation) {
      uint64_t sum = 0;
      for (uint64_t n : d.label_pixels) sum += n;
      if (sum != d.total_pixels || d.total_pixels == 0)
        openlookout_fuzz::fail("label pixel counts do not add up to the image", "");
      static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
      if (d.mask_png.size() < 8 || !std::equal(kPng, kPng + 8, d.mask_png.begin()))
        openlookout_fuzz::fail("mask is not a PNG", "");
    }
  });
  return 0;
}
