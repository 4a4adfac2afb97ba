// Tests of the whole Pipeline (decode -> preprocess -> ONNX Runtime -> postprocess -> mask PNG)
// under the sanitizers: every code path, the error paths included, must leave nothing behind
// (LeakSanitizer runs at exit) and touch no memory it does not own (ASan/UBSan), with threads.
//
// They need ONNX Runtime and the tiny models of cpp/fuzz/make_fuzz_model.py, named by
// OPENLOOKOUT_ORT_LIBRARY and OPENLOOKOUT_TEST_MODELS (scripts/test.sh sets both). Without them
// the tests say so and pass, so core_tests still runs on a machine without onnxruntime.
#include <spng.h>
#include <turbojpeg.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../core/pipeline.h"
#include "../core/session.h"
#include "check.h"

namespace {

using namespace openlookout;
using Bytes = std::vector<uint8_t>;

// The models directory, or empty (with a note) when the environment does not provide ORT.
std::string models_dir() {
  const char* ort = std::getenv("OPENLOOKOUT_ORT_LIBRARY");
  const char* models = std::getenv("OPENLOOKOUT_TEST_MODELS");
  if (ort == nullptr || *ort == '\0' || models == nullptr || *models == '\0') {
    static bool noted = false;
    if (!noted) std::printf("  (pipeline tests skipped: OPENLOOKOUT_ORT_LIBRARY/_TEST_MODELS unset)\n");
    noted = true;
    return "";
  }
  load_onnxruntime(ort);
  return models;
}

Bytes gradient_rgb(int width, int height, int seed) {
  Bytes rgb(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>((x * (3 + c) + y * (5 - c) + seed * 17 + ((x * y) % 29)) & 0xff);
  return rgb;
}

Bytes encode_png_rgb(const Bytes& rgb, int width, int height) {
  spng_ctx* ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(width);
  ihdr.height = static_cast<uint32_t>(height);
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  spng_set_ihdr(ctx, &ihdr);
  Bytes png;
  if (spng_encode_image(ctx, rgb.data(), rgb.size(), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE) == 0) {
    size_t size = 0;
    int error = 0;
    void* buffer = spng_get_png_buffer(ctx, &size, &error);
    if (buffer != nullptr) {
      png.assign(static_cast<uint8_t*>(buffer), static_cast<uint8_t*>(buffer) + size);
      std::free(buffer);
    }
  }
  spng_ctx_free(ctx);
  return png;
}

Bytes encode_jpeg_rgb(const Bytes& rgb, int width, int height, bool progressive) {
  tjhandle tj = tjInitCompress();
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  Bytes jpeg;
  if (tjCompress2(tj, rgb.data(), width, width * 3, height, TJPF_RGB, &buffer, &size, TJSAMP_420,
                  90, progressive ? TJFLAG_PROGRESSIVE : 0) == 0)
    jpeg.assign(buffer, buffer + size);
  tjFree(buffer);
  tjDestroy(tj);
  return jpeg;
}

PipelineConfig segmentation_config(const std::string& dir) {
  PipelineConfig config;
  config.model_path = dir + "/fixed.onnx";
  config.task = Task::Segmentation;
  config.preprocess.width = 32;
  config.preprocess.height = 32;
  config.preprocess.resize = ResizeMode::Area;
  config.has_classification = true;
  config.classification = {"cls", ScoreActivation::Sigmoid, 0.5f};
  config.has_segmentation = true;
  config.segmentation.output = "seg";
  config.segmentation.activation = ScoreActivation::Softmax;
  config.segmentation.upsample = ResizeMode::Bilinear;
  config.segmentation.label_colors = {Rgb{126, 211, 33}, Rgb{77, 216, 255}};
  config.limits.min_side = 1;
  config.session.intra_op_threads = 1;
  return config;
}

bool same(const Detection& a, const Detection& b) {
  return a.is_anomalous == b.is_anomalous && a.confidence == b.confidence &&
         a.label_pixels == b.label_pixels && a.total_pixels == b.total_pixels &&
         a.mask_png == b.mask_png;
}

// detect() of `body`; Validation errors are returned as an empty detection with confidence -1.
Detection detect_copy(const Pipeline& pipeline, const Bytes& body, ImageFormat format) {
  try {
    Pipeline::Lease lease = pipeline.detect(body.data(), body.size(), format);
    return lease.detection();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Validation) olt::fail(__FILE__, __LINE__, e.what());
    Detection failed;
    failed.confidence = -1.0f;
    return failed;
  }
}

struct Inputs {
  std::vector<std::pair<Bytes, ImageFormat>> bodies;
  size_t good = 0;  // the first `good` bodies decode; the rest must fail with Validation
};

Inputs make_inputs() {
  Inputs in;
  const int sizes[][2] = {{97, 71}, {64, 64}, {1, 1}, {130, 9}};
  for (int i = 0; i < 4; ++i) {
    const int w = sizes[i][0], h = sizes[i][1];
    const Bytes rgb = gradient_rgb(w, h, i);
    in.bodies.push_back({encode_png_rgb(rgb, w, h), ImageFormat::Png});
    in.bodies.push_back({encode_jpeg_rgb(rgb, w, h, i % 2 == 1), ImageFormat::Jpeg});
  }
  in.good = in.bodies.size();
  const Bytes png = in.bodies[0].first, jpeg = in.bodies[1].first;
  in.bodies.push_back({Bytes{}, ImageFormat::Png});                                   // empty
  in.bodies.push_back({Bytes(png.begin(), png.begin() + png.size() / 2), ImageFormat::Png});
  in.bodies.push_back({Bytes(jpeg.begin(), jpeg.begin() + jpeg.size() / 2), ImageFormat::Jpeg});
  in.bodies.push_back({png, ImageFormat::Jpeg});                                      // mismatch
  in.bodies.push_back({jpeg, ImageFormat::Png});
  Bytes flipped = png;
  flipped[flipped.size() / 2] ^= 0x40;                                                // bad CRC
  in.bodies.push_back({flipped, ImageFormat::Png});
  Bytes huge = png;
  const uint8_t side[4] = {0x00, 0x01, 0x86, 0xa0};                                   // 100000
  std::memcpy(huge.data() + 16, side, 4);
  std::memcpy(huge.data() + 20, side, 4);
  in.bodies.push_back({huge, ImageFormat::Png});
  return in;
}

TEST(pipeline_config_errors_release_everything) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  auto expect = [&](PipelineConfig config, ErrorKind kind) {
    CHECK_THROWS_KIND(Pipeline(std::move(config)), kind);
  };
  PipelineConfig c = segmentation_config(dir);
  c.model_path = dir + "/missing.onnx";
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.preprocess.width = 0;
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.preprocess.width = 48;  // the model's input is 32x32: fails after the session is created
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.segmentation.label_colors.push_back(Rgb{1, 2, 3});  // 4 classes for a 3-channel output
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.classification.output = "nope";
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.session.providers.push_back({"NoSuchExecutionProvider", {}});
  expect(c, ErrorKind::Validation);
  c = segmentation_config(dir);
  c.limits.max_side = 0;
  expect(c, ErrorKind::Validation);
  // A file that is not an ONNX model.
  const std::string bogus = dir + "/not_a_model.onnx";
  if (FILE* f = std::fopen(bogus.c_str(), "wb")) {
    std::fputs("this is not an onnx model", f);
    std::fclose(f);
  }
  c = segmentation_config(dir);
  c.model_path = bogus;
  expect(c, ErrorKind::Validation);
  std::remove(bogus.c_str());
}

TEST(pipeline_good_and_bad_inputs_every_pipeline) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  std::vector<PipelineConfig> configs;
  configs.push_back(segmentation_config(dir));
  PipelineConfig fast = segmentation_config(dir);
  fast.fast_jpeg_scaling = true;
  fast.preprocess.resize = ResizeMode::Bilinear;
  fast.segmentation.upsample = ResizeMode::Nearest;
  configs.push_back(fast);
  PipelineConfig dynamic = segmentation_config(dir);
  dynamic.model_path = dir + "/dynamic.onnx";
  dynamic.original_size = true;
  configs.push_back(dynamic);
  PipelineConfig classification = segmentation_config(dir);
  classification.task = Task::Classification;
  classification.has_segmentation = false;
  classification.preprocess.resize = ResizeMode::Nearest;
  configs.push_back(classification);
  PipelineConfig sized = segmentation_config(dir);
  sized.image_width = 97;
  sized.image_height = 71;
  configs.push_back(sized);

  const Inputs in = make_inputs();
  for (size_t k = 0; k < configs.size(); ++k) {
    Pipeline pipeline(configs[k]);
    std::vector<Detection> first;
    for (size_t i = 0; i < in.bodies.size(); ++i) {
      first.push_back(detect_copy(pipeline, in.bodies[i].first, in.bodies[i].second));
      const bool must_decode = i < in.good && (configs[k].image_width == 0 || i < 2);
      if (must_decode != (first.back().confidence >= 0.5f))
        olt::fail(__FILE__, __LINE__, "pipeline " + std::to_string(k) + ", body " +
                                          std::to_string(i) + ": unexpected outcome");
    }
    // Again, in reverse: the same answers whatever ran before (buffers reused, errors between).
    for (size_t i = in.bodies.size(); i-- > 0;) {
      if (!same(first[i], detect_copy(pipeline, in.bodies[i].first, in.bodies[i].second)))
        olt::fail(__FILE__, __LINE__, "pipeline " + std::to_string(k) + ", body " +
                                          std::to_string(i) + ": different on the second run");
    }
    // Raw RGB, including sizes outside the limits.
    const Bytes rgb = gradient_rgb(97, 71, 0);
    RgbView view{rgb.data(), 97, 71, 97 * 3};
    {
      Pipeline::Lease lease = pipeline.detect_rgb(view);
      CHECK(lease.detection().confidence >= 0.5f);
    }
    view.width = 5000;
    CHECK_THROWS_KIND(pipeline.detect_rgb(view), ErrorKind::Validation);
    view.width = 0;
    CHECK_THROWS_KIND(pipeline.detect_rgb(view), ErrorKind::Validation);
  }
}

TEST(pipeline_threads_match_serial) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  const Inputs in = make_inputs();
  PipelineConfig dynamic = segmentation_config(dir);
  dynamic.model_path = dir + "/dynamic.onnx";
  dynamic.original_size = true;
  const Pipeline a(segmentation_config(dir));
  const Pipeline b(dynamic);
  std::vector<Detection> serial_a, serial_b;
  for (const auto& [body, format] : in.bodies) {
    serial_a.push_back(detect_copy(a, body, format));
    serial_b.push_back(detect_copy(b, body, format));
  }
  constexpr int kThreads = 6, kRounds = 12;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const Pipeline& p = t % 2 ? b : a;
      const std::vector<Detection>& serial = t % 2 ? serial_b : serial_a;
      for (int r = 0; r < kRounds; ++r) {
        const size_t i = static_cast<size_t>(t * 3 + r) % in.bodies.size();
        if (!same(detect_copy(p, in.bodies[i].first, in.bodies[i].second), serial[i]))
          ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK_EQ(mismatches[t], 0);
}

// ---- IO binding and providers (SessionOptions::io_binding, SessionOptions::providers) ---------

TEST(io_binding_mode_resolves) {
  CHECK(provider_uses_device_memory("CUDAExecutionProvider"));
  CHECK(provider_uses_device_memory("TensorrtExecutionProvider"));
  CHECK(provider_uses_device_memory("DmlExecutionProvider"));
  CHECK(!provider_uses_device_memory("CPUExecutionProvider"));
  CHECK(!provider_uses_device_memory("OpenVINOExecutionProvider"));
  const std::string dir = models_dir();
  if (dir.empty()) return;
  SessionOptions options;
  options.intra_op_threads = 1;
  CHECK(!Session(dir + "/fixed.onnx", options).io_binding());  // Auto, no providers: CPU
  options.providers = {{"CPUExecutionProvider", {}}};
  CHECK(!Session(dir + "/fixed.onnx", options).io_binding());  // Auto, CPU first
  options.io_binding = IoBindingMode::On;
  CHECK(Session(dir + "/fixed.onnx", options).io_binding());
  options.io_binding = IoBindingMode::Off;
  CHECK(!Session(dir + "/fixed.onnx", options).io_binding());
}

// Every pipeline shape the core has (static outputs, dynamic outputs at the image's own size,
// classification only, the exact-size rule) gives the same bytes with IO binding as with Run,
// on the CPU provider, serially, in reverse (buffers reused) and from several threads.
TEST(io_binding_matches_plain_run) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  std::vector<PipelineConfig> configs;
  configs.push_back(segmentation_config(dir));
  PipelineConfig dynamic = segmentation_config(dir);
  dynamic.model_path = dir + "/dynamic.onnx";
  dynamic.original_size = true;
  configs.push_back(dynamic);
  PipelineConfig classification = segmentation_config(dir);
  classification.task = Task::Classification;
  classification.has_segmentation = false;
  configs.push_back(classification);
  PipelineConfig sized = segmentation_config(dir);
  sized.image_width = 97;
  sized.image_height = 71;
  configs.push_back(sized);
  const Inputs in = make_inputs();
  for (size_t k = 0; k < configs.size(); ++k) {
    PipelineConfig off = configs[k], on = configs[k];
    off.session.io_binding = IoBindingMode::Off;
    on.session.providers = {{"CPUExecutionProvider", {}}};
    on.session.io_binding = IoBindingMode::On;
    const Pipeline plain(off), bound(on);
    CHECK(!plain.session().io_binding());
    CHECK(bound.session().io_binding());
    std::vector<Detection> expected;
    for (const auto& [body, format] : in.bodies) expected.push_back(detect_copy(plain, body, format));
    for (int round = 0; round < 2; ++round) {
      for (size_t j = 0; j < in.bodies.size(); ++j) {
        const size_t i = round == 0 ? j : in.bodies.size() - 1 - j;
        if (!same(expected[i], detect_copy(bound, in.bodies[i].first, in.bodies[i].second)))
          olt::fail(__FILE__, __LINE__, "pipeline " + std::to_string(k) + ", body " +
                                            std::to_string(i) + ": IO binding differs from Run");
      }
    }
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int r = 0; r < 10; ++r) {
          const size_t i = static_cast<size_t>(t * 5 + r) % in.good;
          if (!same(detect_copy(bound, in.bodies[i].first, in.bodies[i].second), expected[i]))
            ++mismatches[t];
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) CHECK_EQ(mismatches[t], 0);
  }
}

// The CPU onnxruntime build has no CUDA: asking for it is a Validation error that lists what the
// library offers and says which package to install, before any session is created.
TEST(unavailable_provider_is_a_clear_validation_error) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  const std::vector<std::string> available = onnxruntime_providers();
  bool has_cuda = false;
  for (const auto& a : available) has_cuda = has_cuda || a == "CUDAExecutionProvider";
  if (has_cuda) return;  // a GPU build: nothing to refuse
  PipelineConfig c = segmentation_config(dir);
  c.session.providers = {{"CUDAExecutionProvider", {{"device_id", "0"}}}, {"CPUExecutionProvider", {}}};
  try {
    Pipeline p(c);
    olt::fail(__FILE__, __LINE__, "CUDAExecutionProvider was accepted by a CPU-only build");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Validation);
    const std::string m = e.what();
    CHECK(m.find("CUDAExecutionProvider is not available") != std::string::npos);
    CHECK(m.find("CPUExecutionProvider") != std::string::npos);
    CHECK(m.find("onnxruntime-gpu") != std::string::npos);
  }
}

}  // namespace
