// Stage floors of the C++ core, and its heap allocations per call in steady state.
//
//   stage_bench --ort LIB --model MODEL.onnx --task classification|segmentation
//               --input WxH [--labels N] [--upsample nearest|bilinear] [--resize MODE]
//               [--iterations N] IMAGE...
//
// For each image prints one JSON object: the fastest of --iterations calls, in milliseconds, of
// decode, resize_normalize, session.run, postprocess (score / segment), mask encode, the sum of the non-model stages, the
// whole Pipeline::detect, and the number of heap allocations (malloc/calloc/realloc/new) one
// steady-state call makes: in our stages alone and in the whole call (ONNX Runtime included).
// The benchmarks/ harness runs it beside the Python baselines and renders the results.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "decode.h"
#include "mask_png.h"
#include "pipeline.h"
#include "postprocess.h"
#include "preprocess.h"
#include "session.h"

// ---- counting allocator: every malloc-family call in the process goes through here ----------
extern "C" void* __libc_malloc(size_t);
extern "C" void* __libc_calloc(size_t, size_t);
extern "C" void* __libc_realloc(void*, size_t);
extern "C" void* __libc_memalign(size_t, size_t);
extern "C" void __libc_free(void*);

static std::atomic<long> g_allocations{0};

extern "C" void* malloc(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
extern "C" void* calloc(size_t a, size_t b) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(a, b);
}
extern "C" void* realloc(void* p, size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
extern "C" void free(void* p) { __libc_free(p); }
extern "C" int posix_memalign(void** out, size_t alignment, size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return 12;  // ENOMEM
  *out = p;
  return 0;
}
extern "C" void* aligned_alloc(size_t alignment, size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, n);
}
extern "C" void* memalign(size_t alignment, size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, n);
}
// operator new/delete default to malloc/free in libstdc++, so they are counted above.

namespace ol = openlookout;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string ort, model, task = "segmentation", upsample = "bilinear", resize = "bilinear";
  int width = 256, height = 256, labels = 2, iterations = 15;
  // The manifest's normalisation: with another input the model scores another mask, and the
  // post-processing and mask floors would be timed on work the pipeline never does.
  float mean[3] = {0.0f, 0.0f, 0.0f};
  float std[3] = {1.0f, 1.0f, 1.0f};
  std::vector<std::string> images;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: stage_bench --ort LIB --model MODEL.onnx --task classification|segmentation "
               "--input WxH [--mean R,G,B] [--std R,G,B] [--labels N] [--upsample M] [--resize M] "
               "[--iterations N] IMAGE...\n");
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> std::string { if (++i >= argc) usage(); return argv[i]; };
    if (k == "--ort") a.ort = value();
    else if (k == "--model") a.model = value();
    else if (k == "--task") a.task = value();
    else if (k == "--labels") a.labels = std::atoi(value().c_str());
    else if (k == "--upsample") a.upsample = value();
    else if (k == "--resize") a.resize = value();
    else if (k == "--iterations") a.iterations = std::atoi(value().c_str());
    else if (k == "--mean" || k == "--std") {
      float* v = k == "--mean" ? a.mean : a.std;
      if (std::sscanf(value().c_str(), "%f,%f,%f", &v[0], &v[1], &v[2]) != 3) usage();
    }
    else if (k == "--input") {
      std::string v = value();
      if (std::sscanf(v.c_str(), "%dx%d", &a.width, &a.height) != 2) usage();
    } else if (!k.empty() && k[0] == '-') usage();
    else a.images.push_back(k);
  }
  if (a.ort.empty() || a.model.empty() || a.images.empty()) usage();
  return a;
}

ol::ResizeMode mode_of(const std::string& s) {
  return s == "area" ? ol::ResizeMode::Area : s == "nearest" ? ol::ResizeMode::Nearest : ol::ResizeMode::Bilinear;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// The fastest of `iterations` calls of fn, in milliseconds (after one warm-up call): other
// tenants of a shared machine only ever add time, so the fastest call is the floor's estimate
// (benchmarks/render.py takes the fastest round of the Python benchmarks alike).
template <typename Fn>
double fastest_ms(int iterations, Fn&& fn) {
  fn();
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < iterations; ++i) {
    auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

// Heap allocations one call of fn makes once warm (the minimum over a few calls, so that a
// one-off growth somewhere does not count as per-call).
template <typename Fn>
long allocations_per_call(Fn&& fn) {
  fn();
  fn();
  long best = -1;
  for (int i = 0; i < 5; ++i) {
    long before = g_allocations.load();
    fn();
    long n = g_allocations.load() - before;
    best = best < 0 ? n : std::min(best, n);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  ol::load_onnxruntime(a.ort);

  ol::PipelineConfig config;
  config.model_path = a.model;
  config.preprocess.width = a.width;
  config.preprocess.height = a.height;
  config.preprocess.resize = mode_of(a.resize);
  for (int c = 0; c < 3; ++c) {
    config.preprocess.mean[c] = a.mean[c];
    config.preprocess.std[c] = a.std[c];
  }
  config.limits = {1, 16384, size_t{256} << 20};
  config.session.intra_op_threads = 1;
  const bool segmentation = a.task == "segmentation";
  config.task = segmentation ? ol::Task::Segmentation : ol::Task::Classification;
  if (segmentation) {
    config.has_segmentation = true;
    config.segmentation.upsample = mode_of(a.upsample);
    config.segmentation.activation = ol::ScoreActivation::Softmax;
    for (int k = 0; k < a.labels; ++k)
      config.segmentation.label_colors.push_back({static_cast<uint8_t>(40 * k + 30), 200, static_cast<uint8_t>(90 + 50 * k)});
  } else {
    config.has_classification = true;
    config.classification.activation = ol::ScoreActivation::Sigmoid;
  }
  ol::Pipeline pipeline(config);

  // The stages alone, driven the way Pipeline::run drives them, each with its own scratch.
  ol::Session session(a.model, config.session);
  const std::string input_name = session.inputs()[0].name;
  const std::string output_name = session.outputs()[0].name;
  auto io = session.make_io(input_name, {1, 3, a.height, a.width}, {output_name});
  ol::Decoder decoder;
  ol::RgbImage image;
  ol::PreprocessScratch pre;
  ol::SegmentationScratch seg;
  ol::LabelMap labels;
  ol::MaskEncoderScratch mask_scratch;
  std::vector<uint8_t> mask;
  std::vector<ol::Rgb> palette{{255, 255, 255}};
  for (const auto& c : config.segmentation.label_colors) palette.push_back(c);

  for (const std::string& path : a.images) {
    const std::vector<uint8_t> body = read_file(path);
    const ol::ImageFormat format = body.size() > 4 && body[0] == 0x89 ? ol::ImageFormat::Png : ol::ImageFormat::Jpeg;
    auto decode = [&] { decoder.decode(body.data(), body.size(), format, config.limits, image); };
    auto preprocess = [&] { ol::resize_normalize(image.view(), config.preprocess, pre, io->input()); };
    auto run = [&] { session.run(*io); };
    decode();
    preprocess();
    run();
    ol::SegmentationSpec spec;
    if (segmentation) {
      const auto& shape = io->output_shape(0);
      spec.channels = static_cast<int>(shape[1]);
      spec.height = static_cast<int>(shape[2]);
      spec.width = static_cast<int>(shape[3]);
      spec.upsample = config.segmentation.upsample;
      spec.activation = ol::ScoreActivation::Softmax;
    }
    auto postprocess = [&] {
      if (segmentation) ol::segment(io->output(0), spec, image.width, image.height, seg, labels);
      else (void)ol::classification_score(io->output(0), 1, ol::ScoreActivation::Sigmoid);
    };
    postprocess();
    auto encode = [&] {
      if (segmentation)
        ol::encode_mask_png(labels.labels.data(), image.width, image.height, palette.data(), palette.size(), mask_scratch, mask);
    };
    auto ours = [&] { decode(); preprocess(); postprocess(); encode(); };
    auto whole = [&] { auto lease = pipeline.detect(body.data(), body.size(), format); };

    const double t_decode = fastest_ms(a.iterations, decode);
    const double t_pre = fastest_ms(a.iterations, preprocess);
    const double t_run = fastest_ms(a.iterations, run);
    const double t_post = fastest_ms(a.iterations, postprocess);
    const double t_mask = fastest_ms(a.iterations, encode);
    const double t_whole = fastest_ms(a.iterations, whole);
    const long alloc_decode = allocations_per_call(decode);
    const long alloc_pre = allocations_per_call(preprocess);
    const long alloc_post = allocations_per_call(postprocess);
    const long alloc_mask = allocations_per_call(encode);
    const long alloc_ours = allocations_per_call(ours);
    const long alloc_whole = allocations_per_call(whole);
    const long alloc_run = allocations_per_call(run);
    std::printf(
        "{\"image\": \"%s\", \"width\": %d, \"height\": %d, \"decode_ms\": %.4f, \"preprocess_ms\": %.4f, "
        "\"run_ms\": %.4f, \"postprocess_ms\": %.4f, \"mask_ms\": %.4f, \"stages_ms\": %.4f, "
        "\"detect_ms\": %.4f, \"allocations_decode\": %ld, \"allocations_preprocess\": %ld, "
        "\"allocations_postprocess\": %ld, \"allocations_mask\": %ld, \"allocations_ours\": %ld, "
        "\"allocations_run\": %ld, \"allocations_detect\": %ld}\n",
        path.c_str(), image.width, image.height, t_decode, t_pre, t_run, t_post, t_mask,
        t_decode + t_pre + t_post + t_mask, t_whole, alloc_decode, alloc_pre, alloc_post, alloc_mask,
        alloc_ours, alloc_run, alloc_whole);
    std::fflush(stdout);
  }
  return 0;
}
