#include "session.h"

#include <dlfcn.h>

#include <mutex>
#include <sstream>

#include "errors.h"
#include "onnxruntime_c_api.h"

namespace openlookout {
namespace {

// Process-wide ONNX Runtime state: the dlopen()ed library, its API table and one OrtEnv.
struct Runtime {
  std::mutex mutex;
  std::string path;
  void* library = nullptr;
  const OrtApi* api = nullptr;
  OrtEnv* env = nullptr;
};

Runtime& runtime() {
  // Never destroyed: sessions may be released during interpreter shutdown, after static
  // destructors would have run, and unloading ORT under them would crash.
  static Runtime* r = new Runtime();
  return *r;
}

const OrtApi& api() {
  const OrtApi* a = runtime().api;
  if (a == nullptr) throw_internal("ONNX Runtime is not loaded (call load_onnxruntime first)");
  return *a;
}

// Turns an OrtStatus into an Error of `kind`, prefixed with what we were doing.
void check(OrtStatus* status, const char* what, ErrorKind kind = ErrorKind::InternalServer) {
  if (status == nullptr) return;
  std::string message = std::string(what) + ": " + api().GetErrorMessage(status);
  api().ReleaseStatus(status);
  throw Error(kind, message);
}

template <typename T, void (*OrtApi::*Release)(T*)>
struct OrtHandle {
  T* ptr = nullptr;
  OrtHandle() = default;
  OrtHandle(const OrtHandle&) = delete;
  OrtHandle& operator=(const OrtHandle&) = delete;
  ~OrtHandle() {
    if (ptr != nullptr) (api().*Release)(ptr);
  }
};

using SessionOptionsHandle = OrtHandle<OrtSessionOptions, &OrtApi::ReleaseSessionOptions>;
using TypeInfoHandle = OrtHandle<OrtTypeInfo, &OrtApi::ReleaseTypeInfo>;
using ShapeInfoHandle = OrtHandle<OrtTensorTypeAndShapeInfo, &OrtApi::ReleaseTensorTypeAndShapeInfo>;
using MemoryInfoHandle = OrtHandle<OrtMemoryInfo, &OrtApi::ReleaseMemoryInfo>;
using CudaOptionsHandle = OrtHandle<OrtCUDAProviderOptionsV2, &OrtApi::ReleaseCUDAProviderOptions>;
using TensorRtOptionsHandle =
    OrtHandle<OrtTensorRTProviderOptionsV2, &OrtApi::ReleaseTensorRTProviderOptions>;

OrtEnv* environment() {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.env == nullptr) {
    check(api().CreateEnv(ORT_LOGGING_LEVEL_ERROR, "openlookout", &r.env),
          "creating the ONNX Runtime environment");
  }
  return r.env;
}

std::string element_type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return "type " + std::to_string(static_cast<int>(t));
  }
}

TensorInfo describe(const OrtTypeInfo* type_info, std::string name) {
  TensorInfo info;
  info.name = std::move(name);
  ONNXType onnx_type;
  check(api().GetOnnxTypeFromTypeInfo(type_info, &onnx_type), "reading a model signature");
  if (onnx_type != ONNX_TYPE_TENSOR) {
    info.type_name = "non-tensor";
    return info;
  }
  const OrtTensorTypeAndShapeInfo* tensor = nullptr;
  check(api().CastTypeInfoToTensorInfo(type_info, &tensor), "reading a model signature");
  ONNXTensorElementDataType element;
  check(api().GetTensorElementType(tensor, &element), "reading a model signature");
  info.type = element == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? ElementType::Float32 : ElementType::Other;
  info.type_name = element_type_name(element);
  size_t rank = 0;
  check(api().GetDimensionsCount(tensor, &rank), "reading a model signature");
  info.shape.resize(rank);
  check(api().GetDimensions(tensor, info.shape.data(), rank), "reading a model signature");
  for (auto& d : info.shape) {
    if (d < 0) d = -1;  // symbolic or unknown
  }
  return info;
}

// Maps ONNX Runtime's provider names to the short names its generic append call takes.
const char* generic_provider_name(const std::string& name) {
  static const std::pair<const char*, const char*> table[] = {
      {"QNNExecutionProvider", "QNN"},         {"SNPEExecutionProvider", "SNPE"},
      {"XnnpackExecutionProvider", "XNNPACK"}, {"CoreMLExecutionProvider", "CoreML"},
      {"WebNNExecutionProvider", "WEBNN"},     {"AzureExecutionProvider", "AZURE"},
      {"VitisAIExecutionProvider", "VitisAI"}, {"OpenVINOExecutionProvider", "OpenVINO"},
      {"DmlExecutionProvider", "DML"},         {"WebGpuExecutionProvider", "WebGPU"},
      // The generic call takes it in newer libraries (1.32 does); older ones refuse it, with
      // their own message.
      {"MIGraphXExecutionProvider", "MIGraphX"},
  };
  for (const auto& [long_name, short_name] : table) {
    if (name == long_name) return short_name;
  }
  return nullptr;
}

void append_provider(OrtSessionOptions* options, const ProviderSpec& spec) {
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : spec.options) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  const std::string what = "enabling " + spec.name;
  if (spec.name == "CPUExecutionProvider") {
    return;  // always present, always last
  } else if (spec.name == "CUDAExecutionProvider") {
    CudaOptionsHandle cuda;
    check(api().CreateCUDAProviderOptions(&cuda.ptr), what.c_str(), ErrorKind::Validation);
    check(api().UpdateCUDAProviderOptions(cuda.ptr, keys.data(), values.data(), keys.size()),
          what.c_str(), ErrorKind::Validation);
    check(api().SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda.ptr), what.c_str(),
          ErrorKind::Validation);
  } else if (spec.name == "TensorrtExecutionProvider") {
    TensorRtOptionsHandle trt;
    check(api().CreateTensorRTProviderOptions(&trt.ptr), what.c_str(), ErrorKind::Validation);
    check(api().UpdateTensorRTProviderOptions(trt.ptr, keys.data(), values.data(), keys.size()),
          what.c_str(), ErrorKind::Validation);
    check(api().SessionOptionsAppendExecutionProvider_TensorRT_V2(options, trt.ptr), what.c_str(),
          ErrorKind::Validation);
  } else if (const char* short_name = generic_provider_name(spec.name)) {
    check(api().SessionOptionsAppendExecutionProvider(options, short_name, keys.data(),
                                                      values.data(), keys.size()),
          what.c_str(), ErrorKind::Validation);
  } else {
    throw_validation("providers: " + spec.name +
                     " cannot be enabled through openlookout (supported: CPU, CUDA, TensorRT, "
                     "OpenVINO, QNN, SNPE, XNNPACK, CoreML, WebNN, DML, VitisAI, Azure, WebGPU, "
                     "MIGraphX)");
  }
}

// Drops the ORT-allocated outputs of the previous call (static outputs are ours and stay).
void release_ort_outputs(std::vector<void*>& values, const std::vector<bool>& owned) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (owned[i] && values[i] != nullptr) {
      api().ReleaseValue(static_cast<OrtValue*>(values[i]));
      values[i] = nullptr;
    }
  }
}

}  // namespace

bool provider_uses_device_memory(const std::string& name) {
  static const char* const device_providers[] = {
      "CUDAExecutionProvider", "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider",
      "ROCMExecutionProvider", "MIGraphXExecutionProvider", "DmlExecutionProvider",
      "WebGpuExecutionProvider",
  };
  for (const char* p : device_providers) {
    if (name == p) return true;
  }
  return false;
}

void load_onnxruntime(const std::string& library_path) {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.api != nullptr) {
    if (library_path == r.path) return;
    throw Error(ErrorKind::Validation, "ONNX Runtime is already loaded from " + r.path +
                                           "; cannot load a second copy from " + library_path);
  }
  // RTLD_LOCAL: ORT's symbols stay private, so the onnxruntime Python module (which carries its
  // own copy) can live in the same process.
  void* library = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = dlerror();
    throw Error(ErrorKind::InternalServer, "cannot load ONNX Runtime from " + library_path + ": " +
                                               (reason ? reason : "unknown error"));
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBase>(dlsym(library, "OrtGetApiBase"));
  if (get_api_base == nullptr) {
    dlclose(library);
    throw Error(ErrorKind::InternalServer, library_path + " is not an ONNX Runtime library");
  }
  const OrtApiBase* base = get_api_base();
  const OrtApi* api_table = base->GetApi(ORT_API_VERSION);
  if (api_table == nullptr) {
    std::string version = base->GetVersionString();
    dlclose(library);
    throw Error(ErrorKind::InternalServer,
                "ONNX Runtime " + version + " at " + library_path + " does not provide C API version " +
                    std::to_string(ORT_API_VERSION) + " (ONNX Runtime 1.21 or newer is required)");
  }
  r.library = library;
  r.api = api_table;
  r.path = library_path;
}

bool onnxruntime_loaded() { return runtime().api != nullptr; }

std::string onnxruntime_version() {
  Runtime& r = runtime();
  if (r.library == nullptr) return "";
  using GetApiBase = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBase>(dlsym(r.library, "OrtGetApiBase"));
  return get_api_base()->GetVersionString();
}

std::vector<std::string> onnxruntime_providers() {
  char** names = nullptr;
  int count = 0;
  check(api().GetAvailableProviders(&names, &count), "listing execution providers");
  std::vector<std::string> result(names, names + count);
  check(api().ReleaseAvailableProviders(names, count), "listing execution providers");
  return result;
}

// ---------------------------------------------------------------------------------------------

SessionIO::~SessionIO() {
  if (!onnxruntime_loaded()) return;
  // The binding holds references to the values below: it goes first.
  if (binding_ != nullptr) api().ReleaseIoBinding(static_cast<OrtIoBinding*>(binding_));
  if (cpu_memory_ != nullptr) api().ReleaseMemoryInfo(static_cast<OrtMemoryInfo*>(cpu_memory_));
  if (input_value_ != nullptr) api().ReleaseValue(static_cast<OrtValue*>(input_value_));
  for (void* v : output_values_) {
    if (v != nullptr) api().ReleaseValue(static_cast<OrtValue*>(v));
  }
}

const float* SessionIO::output(size_t i) const {
  void* data = nullptr;
  check(api().GetTensorMutableData(static_cast<OrtValue*>(output_values_[i]), &data),
        "reading a model output");
  return static_cast<const float*>(data);
}

Session::Session(const std::string& model_path, const SessionOptions& options) {
  OrtEnv* env = environment();
  SessionOptionsHandle session_options;
  check(api().CreateSessionOptions(&session_options.ptr), "creating session options");
  check(api().SetIntraOpNumThreads(session_options.ptr, options.intra_op_threads),
        "setting intra_op_threads", ErrorKind::Validation);
  check(api().SetInterOpNumThreads(session_options.ptr, options.inter_op_threads),
        "setting inter_op_threads", ErrorKind::Validation);
  check(api().SetSessionGraphOptimizationLevel(session_options.ptr, ORT_ENABLE_ALL),
        "setting the graph optimization level");

  if (!options.providers.empty()) {
    const std::vector<std::string> available = onnxruntime_providers();
    for (const ProviderSpec& spec : options.providers) {
      bool found = false;
      for (const auto& a : available) found = found || a == spec.name;
      if (!found) {
        std::ostringstream message;
        message << "providers: " << spec.name << " is not available in ONNX Runtime "
                << onnxruntime_version() << " (available:";
        for (const auto& a : available) message << " " << a;
        message << ")";
        if (spec.name == "CUDAExecutionProvider" || spec.name == "TensorrtExecutionProvider")
          message << "; install onnxruntime-gpu in place of onnxruntime for " << spec.name;
        throw_validation(message.str());
      }
      append_provider(session_options.ptr, spec);
    }
  }
  switch (options.io_binding) {
    case IoBindingMode::On: io_binding_ = true; break;
    case IoBindingMode::Off: io_binding_ = false; break;
    case IoBindingMode::Auto:
      io_binding_ = !options.providers.empty() &&
                    provider_uses_device_memory(options.providers.front().name);
      break;
  }

  // A provider that cannot start (no device, CUDA libraries missing) fails here too: say which.
  std::string loading = "loading ONNX model " + model_path;
  if (!options.providers.empty()) {
    loading += " with providers";
    for (const ProviderSpec& spec : options.providers) loading += " " + spec.name;
  }
  OrtSession* session = nullptr;
  check(api().CreateSession(env, model_path.c_str(), session_options.ptr, &session),
        loading.c_str(), ErrorKind::Validation);
  session_ = session;

  OrtAllocator* allocator = nullptr;
  check(api().GetAllocatorWithDefaultOptions(&allocator), "getting the default allocator");
  auto read_signature = [&](bool inputs, std::vector<TensorInfo>& out) {
    size_t count = 0;
    check(inputs ? api().SessionGetInputCount(session, &count)
                 : api().SessionGetOutputCount(session, &count),
          "reading the model signature");
    for (size_t i = 0; i < count; ++i) {
      char* name = nullptr;
      check(inputs ? api().SessionGetInputName(session, i, allocator, &name)
                   : api().SessionGetOutputName(session, i, allocator, &name),
            "reading the model signature");
      std::string owned_name(name);
      check(api().AllocatorFree(allocator, name), "reading the model signature");
      TypeInfoHandle type_info;
      check(inputs ? api().SessionGetInputTypeInfo(session, i, &type_info.ptr)
                   : api().SessionGetOutputTypeInfo(session, i, &type_info.ptr),
            "reading the model signature");
      out.push_back(describe(type_info.ptr, std::move(owned_name)));
    }
  };
  try {
    read_signature(true, inputs_);
    read_signature(false, outputs_);
  } catch (...) {
    api().ReleaseSession(session);
    session_ = nullptr;
    throw;
  }
}

Session::~Session() {
  if (session_ != nullptr && onnxruntime_loaded()) api().ReleaseSession(static_cast<OrtSession*>(session_));
}

std::unique_ptr<SessionIO> Session::make_io(const std::string& input_name,
                                            const std::vector<int64_t>& input_shape,
                                            const std::vector<std::string>& outputs) const {
  std::unique_ptr<SessionIO> io(new SessionIO());
  MemoryInfoHandle cpu;
  check(api().CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu.ptr),
        "creating CPU memory info");

  reshape_input(*io, input_shape);
  io->input_names_.push_back(input_name);

  // Outputs whose shape is fully known are preallocated once, so ORT writes into our buffers and
  // a call allocates nothing; outputs with dynamic dimensions are left for ORT to allocate.
  for (const std::string& name : outputs) {
    const TensorInfo* info = nullptr;
    for (const auto& o : outputs_) {
      if (o.name == name) info = &o;
    }
    if (info == nullptr) throw_internal("make_io: unknown output " + name);
    io->output_names_.push_back(name);
    bool is_static = true;
    for (int64_t d : info->shape) is_static = is_static && d > 0;
    io->output_shapes_.push_back(info->shape);
    if (is_static) {
      size_t elements = 1;
      for (int64_t d : info->shape) elements *= static_cast<size_t>(d);
      io->output_storage_.emplace_back(elements, 0.0f);
      OrtValue* value = nullptr;
      check(api().CreateTensorWithDataAsOrtValue(
                cpu.ptr, io->output_storage_.back().data(), elements * sizeof(float),
                info->shape.data(), info->shape.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &value),
            "creating an output tensor");
      io->output_values_.push_back(value);
      io->output_owned_by_ort_.push_back(false);
    } else {
      io->output_storage_.emplace_back();
      io->output_values_.push_back(nullptr);
      io->output_owned_by_ort_.push_back(true);
    }
  }
  for (const auto& n : io->input_names_) io->input_name_ptrs_.push_back(n.c_str());
  for (const auto& n : io->output_names_) io->output_name_ptrs_.push_back(n.c_str());

  if (io_binding_) {
    // One binding per worker, for its lifetime. Outputs are bound here, in order (that order is
    // the order GetBoundOutputValues returns): a static output to our preallocated CPU tensor,
    // which ORT fills (copying back from the device when a device kernel produced it); a dynamic
    // one to CPU memory, where ORT allocates it at its run-time shape.
    OrtIoBinding* binding = nullptr;
    check(api().CreateIoBinding(static_cast<OrtSession*>(session_), &binding),
          "creating the IO binding");
    io->binding_ = binding;
    OrtMemoryInfo* cpu_memory = nullptr;
    check(api().CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu_memory),
          "creating CPU memory info");
    io->cpu_memory_ = cpu_memory;
    for (size_t i = 0; i < io->output_names_.size(); ++i) {
      const char* name = io->output_name_ptrs_[i];
      if (io->output_owned_by_ort_[i]) {
        check(api().BindOutputToDevice(binding, name, cpu_memory), "binding a model output");
      } else {
        check(api().BindOutput(binding, name, static_cast<const OrtValue*>(io->output_values_[i])),
              "binding a model output");
      }
    }
  }
  return io;
}

void Session::reshape_input(SessionIO& io, const std::vector<int64_t>& shape) const {
  if (shape == io.input_shape_ && io.input_value_ != nullptr) return;
  size_t elements = 1;
  for (int64_t d : shape) elements *= static_cast<size_t>(d);
  if (io.input_value_ != nullptr) {
    // The binding may still refer to the old tensor (and through it to input_'s old storage).
    if (io.binding_ != nullptr) api().ClearBoundInputs(static_cast<OrtIoBinding*>(io.binding_));
    api().ReleaseValue(static_cast<OrtValue*>(io.input_value_));
    io.input_value_ = nullptr;
  }
  io.input_.resize(elements);
  io.input_shape_ = shape;
  MemoryInfoHandle cpu;
  check(api().CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu.ptr),
        "creating CPU memory info");
  OrtValue* value = nullptr;
  check(api().CreateTensorWithDataAsOrtValue(cpu.ptr, io.input_.data(), elements * sizeof(float),
                                             shape.data(), shape.size(),
                                             ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &value),
        "creating the input tensor");
  io.input_value_ = value;
}

void Session::run(SessionIO& io) const {
  release_ort_outputs(io.output_values_, io.output_owned_by_ort_);
  if (io.binding_ != nullptr) {
    run_bound(io);
  } else {
    run_plain(io);
  }
  for (size_t i = 0; i < io.output_values_.size(); ++i) {
    if (!io.output_owned_by_ort_[i]) continue;
    OrtValue* value = static_cast<OrtValue*>(io.output_values_[i]);
    ShapeInfoHandle shape;
    check(api().GetTensorTypeAndShape(value, &shape.ptr), "reading a model output");
    ONNXTensorElementDataType element;
    check(api().GetTensorElementType(shape.ptr, &element), "reading a model output");
    if (element != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      throw_internal("model output " + io.output_names_[i] + " is " + element_type_name(element) +
                     ", not float32");
    }
    size_t rank = 0;
    check(api().GetDimensionsCount(shape.ptr, &rank), "reading a model output");
    io.output_shapes_[i].resize(rank);
    check(api().GetDimensions(shape.ptr, io.output_shapes_[i].data(), rank), "reading a model output");
  }
}

void Session::run_plain(SessionIO& io) const {
  const OrtValue* input = static_cast<const OrtValue*>(io.input_value_);
  check(api().Run(static_cast<OrtSession*>(session_), nullptr, io.input_name_ptrs_.data(), &input, 1,
                  io.output_name_ptrs_.data(), io.output_name_ptrs_.size(),
                  reinterpret_cast<OrtValue**>(io.output_values_.data())),
        "running the model");
}

void Session::run_bound(SessionIO& io) const {
  OrtIoBinding* binding = static_cast<OrtIoBinding*>(io.binding_);
  // Bound now, after the worker filled it: BindInput is where ORT copies a host tensor to the
  // device of the node that reads it (a CPU consumer takes it as is, without a copy).
  check(api().BindInput(binding, io.input_name_ptrs_[0], static_cast<const OrtValue*>(io.input_value_)),
        "binding the model input");
  // Waits for that copy where the provider copies asynchronously (CUDA: a device synchronize);
  // a no-op when every node runs on the CPU.
  check(api().SynchronizeBoundInputs(binding), "synchronizing the model input");
  bool any_dynamic = false;
  for (size_t i = 0; i < io.output_values_.size(); ++i) {
    if (!io.output_owned_by_ort_[i]) continue;
    // Re-bound every call: once run, the binding holds the previous call's tensor and would hand
    // it back to ORT as a preallocated output, of the previous call's shape.
    check(api().BindOutputToDevice(binding, io.output_name_ptrs_[i],
                                   static_cast<const OrtMemoryInfo*>(io.cpu_memory_)),
          "binding a model output");
    any_dynamic = true;
  }
  check(api().RunWithBinding(static_cast<OrtSession*>(session_), nullptr, binding),
        "running the model");
  // Every output is bound to host memory, and Run returns host outputs complete (as OrtApi::Run
  // does), so SynchronizeBoundOutputs, which would wait for the whole device, is not needed.
  if (!any_dynamic) return;
  OrtAllocator* allocator = nullptr;
  check(api().GetAllocatorWithDefaultOptions(&allocator), "getting the default allocator");
  OrtValue** values = nullptr;
  size_t count = 0;
  check(api().GetBoundOutputValues(binding, allocator, &values, &count), "reading the model outputs");
  // Take the ORT-allocated outputs; our own static ones come back as extra references: dropped.
  const bool matches = count == io.output_values_.size();
  for (size_t i = 0; i < count; ++i) {
    if (matches && io.output_owned_by_ort_[i]) {
      io.output_values_[i] = values[i];
    } else {
      api().ReleaseValue(values[i]);
    }
  }
  if (values != nullptr) check(api().AllocatorFree(allocator, values), "reading the model outputs");
  if (!matches) {
    release_ort_outputs(io.output_values_, io.output_owned_by_ort_);
    throw_internal("IO binding returned " + std::to_string(count) + " outputs, expected " +
                   std::to_string(io.output_values_.size()));
  }
}

}  // namespace openlookout
