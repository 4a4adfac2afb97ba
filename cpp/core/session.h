// Stage 3: the ONNX Runtime session, through the C API. The library is not linked: it is
// dlopen()ed at run time from a path the caller gives (the one inside the installed onnxruntime
// Python package), so onnxruntime, onnxruntime-gpu and other builds work without rebuilding.
// The headers are ORT_API_VERSION 21; the C API is backward compatible, so newer libraries work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace openlookout {

// Loads the ONNX Runtime shared library once per process. Later calls with the same path are
// no-ops; a different path after a successful load throws (one ORT per process).
void load_onnxruntime(const std::string& library_path);
bool onnxruntime_loaded();
std::string onnxruntime_version();
std::vector<std::string> onnxruntime_providers();  // GetAvailableProviders

// An execution provider by ONNX Runtime's name, with its provider options (key, value).
struct ProviderSpec {
  std::string name;  // e.g. "CUDAExecutionProvider"
  std::vector<std::pair<std::string, std::string>> options;
};

// How Session::run hands tensors to ONNX Runtime.
//   Off:  OrtApi::Run with the worker's CPU tensors.
//   On:   an OrtIoBinding per worker (OrtApi::RunWithBinding). The input is bound after it is
//         filled, which is when ORT copies it to the device of the node that consumes it;
//         outputs are bound to CPU memory (our preallocated tensors when the shape is static),
//         so ORT copies results back to the host into them.
//   Auto: On exactly when the first provider keeps tensors in device memory
//         (provider_uses_device_memory), Off otherwise.
enum class IoBindingMode { Auto, On, Off };

struct SessionOptions {
  int intra_op_threads = 0;  // 0: ONNX Runtime's default (one per physical core)
  int inter_op_threads = 0;
  // In order of preference, e.g. CUDA then CPU. Empty: CPU only. CPU is always the fallback.
  // A provider the loaded library does not offer is a Validation error listing those it does
  // (no silent fallback to CPU).
  std::vector<ProviderSpec> providers;
  IoBindingMode io_binding = IoBindingMode::Auto;
};

// True for providers whose kernels read and write device memory (CUDA, TensorRT, ROCm,
// MIGraphX, DirectML, WebGPU): with them first, IoBindingMode::Auto binds.
bool provider_uses_device_memory(const std::string& provider_name);

enum class ElementType { Float32, Other };

struct TensorInfo {
  std::string name;
  ElementType type = ElementType::Other;
  std::string type_name;       // for messages, e.g. "float32", "int64"
  std::vector<int64_t> shape;  // -1 where the dimension is dynamic
};

// Buffers of one worker: the input tensor it fills and the outputs ORT writes, and with IO
// binding the worker's OrtIoBinding. Created by Session::make_io; reused for every call of that
// worker. Must be destroyed before the Session that made it.
class SessionIO {
 public:
  ~SessionIO();
  SessionIO(const SessionIO&) = delete;
  SessionIO& operator=(const SessionIO&) = delete;

  float* input() { return input_.data(); }
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  // After run(): the data and shape of output i (in the order given to make_io).
  const float* output(size_t i) const;
  const std::vector<int64_t>& output_shape(size_t i) const { return output_shapes_[i]; }

 private:
  friend class Session;
  SessionIO() = default;
  std::vector<float> input_;
  std::vector<int64_t> input_shape_;
  void* input_value_ = nullptr;  // OrtValue* over input_
  void* binding_ = nullptr;      // OrtIoBinding*, when the session binds
  void* cpu_memory_ = nullptr;   // OrtMemoryInfo* (CPU) that ORT-allocated outputs are bound to
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<const char*> input_name_ptrs_;
  std::vector<const char*> output_name_ptrs_;
  std::vector<void*> output_values_;  // OrtValue*; preallocated when the shape is static
  std::vector<std::vector<float>> output_storage_;
  std::vector<std::vector<int64_t>> output_shapes_;
  std::vector<bool> output_owned_by_ort_;
};

class Session {
 public:
  Session(const std::string& model_path, const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<TensorInfo>& inputs() const { return inputs_; }
  const std::vector<TensorInfo>& outputs() const { return outputs_; }

  // IO for feeding `input_shape` (fully static) to input `input_name` and reading `outputs`.
  std::unique_ptr<SessionIO> make_io(const std::string& input_name,
                                     const std::vector<int64_t>& input_shape,
                                     const std::vector<std::string>& outputs) const;

  // Gives io's input tensor a new (fully static) shape, for models fed at the image's own size.
  // No-op when the shape is unchanged; the buffer keeps its capacity.
  void reshape_input(SessionIO& io, const std::vector<int64_t>& shape) const;

  // Runs the model on io's input. Thread-safe: many workers may run one Session at once.
  void run(SessionIO& io) const;

  // Whether run() goes through IO binding (SessionOptions::io_binding resolved).
  bool io_binding() const { return io_binding_; }

 private:
  void run_plain(SessionIO& io) const;
  void run_bound(SessionIO& io) const;

  void* session_ = nullptr;  // OrtSession*
  bool io_binding_ = false;
  std::vector<TensorInfo> inputs_;
  std::vector<TensorInfo> outputs_;
};

}  // namespace openlookout
