#include <array>
#include <cstring>
#include <optional>

#include "../core/errors.h"
#include "../core/pipeline.h"
#include "bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

namespace py = pybind11;

namespace openlookout::python {
namespace {

// Holds a contiguous read-only view of any buffer-protocol object for the length of a call.
class BorrowedBytes {
 public:
  explicit BorrowedBytes(const py::object& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  }
  ~BorrowedBytes() { PyBuffer_Release(&view_); }
  BorrowedBytes(const BorrowedBytes&) = delete;
  BorrowedBytes& operator=(const BorrowedBytes&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

// (is_anomalous, confidence, label_pixels or None, total_pixels, mask_png or None)
using RawDetection = py::typing::Tuple<bool, float, py::typing::Optional<py::typing::List<int>>, int,
                                       py::typing::Optional<py::bytes>>;

RawDetection to_python(const Detection& d) {
  if (!d.has_segmentation) {
    return RawDetection(py::make_tuple(d.is_anomalous, static_cast<double>(d.confidence), py::none(),
                                       0, py::none()));
  }
  py::bytes mask(reinterpret_cast<const char*>(d.mask_png.data()), d.mask_png.size());
  return RawDetection(py::make_tuple(d.is_anomalous, static_cast<double>(d.confidence),
                                     d.label_pixels, d.total_pixels, std::move(mask)));
}

}  // namespace

void bind_pipeline(py::module_& m) {
  py::enum_<ResizeMode>(m, "ResizeMode")
      .value("bilinear", ResizeMode::Bilinear)
      .value("area", ResizeMode::Area)
      .value("nearest", ResizeMode::Nearest);
  py::enum_<Layout>(m, "Layout").value("NCHW", Layout::NCHW).value("NHWC", Layout::NHWC);
  py::enum_<ColorOrder>(m, "ColorOrder").value("RGB", ColorOrder::RGB).value("BGR", ColorOrder::BGR);
  py::enum_<ScoreActivation>(m, "ScoreActivation")
      .value("none", ScoreActivation::None)
      .value("sigmoid", ScoreActivation::Sigmoid)
      .value("softmax", ScoreActivation::Softmax);
  py::enum_<Task>(m, "Task")
      .value("classification", Task::Classification)
      .value("segmentation", Task::Segmentation);
  py::enum_<IoBindingMode>(m, "IoBindingMode")
      .value("auto", IoBindingMode::Auto)
      .value("on", IoBindingMode::On)
      .value("off", IoBindingMode::Off);

  // Field for field DecodeLimits (decode.h); the defaults live there alone.
  py::class_<DecodeLimits>(m, "DecodeLimits")
      .def(py::init<>())
      .def_readwrite("min_side", &DecodeLimits::min_side)
      .def_readwrite("max_side", &DecodeLimits::max_side)
      .def_readwrite("max_body_bytes", &DecodeLimits::max_body_bytes)
      .def_readwrite("png_max_chunk_bytes", &DecodeLimits::png_max_chunk_bytes)
      .def_readwrite("png_max_ancillary_bytes", &DecodeLimits::png_max_ancillary_bytes)
      .def_readwrite("jpeg_max_markers", &DecodeLimits::jpeg_max_markers)
      .def_readwrite("jpeg_max_scans", &DecodeLimits::jpeg_max_scans)
      .def_readwrite("jpeg_max_scan_pixels", &DecodeLimits::jpeg_max_scan_pixels);

  py::class_<PipelineConfig>(m, "PipelineConfig")
      .def(py::init<>())
      .def_readwrite("model_path", &PipelineConfig::model_path)
      .def_readwrite("task", &PipelineConfig::task)
      .def_readwrite("input_name", &PipelineConfig::input_name)
      .def_readwrite("image_width", &PipelineConfig::image_width)
      .def_readwrite("image_height", &PipelineConfig::image_height)
      .def_readwrite("has_classification", &PipelineConfig::has_classification)
      .def_readwrite("has_segmentation", &PipelineConfig::has_segmentation)
      .def_readwrite("fast_jpeg_scaling", &PipelineConfig::fast_jpeg_scaling)
      .def_readwrite("original_size", &PipelineConfig::original_size)
      .def_property("io_binding", [](const PipelineConfig& c) { return c.session.io_binding; },
                    [](PipelineConfig& c, IoBindingMode mode) { c.session.io_binding = mode; })
      // Flattened setters: the nested structs are plain data, set field by field from Python.
      .def("set_input", [](PipelineConfig& c, int width, int height, Layout layout, ColorOrder color,
                           ResizeMode resize, float scale, std::array<float, 3> mean,
                           std::array<float, 3> std) {
        PreprocessSpec& p = c.preprocess;
        p.width = width; p.height = height; p.layout = layout; p.color = color; p.resize = resize;
        p.scale = scale;
        for (int i = 0; i < 3; ++i) { p.mean[i] = mean[i]; p.std[i] = std[i]; }
      }, py::arg("width"), py::arg("height"), py::arg("layout"), py::arg("color"), py::arg("resize"),
         py::arg("scale"), py::arg("mean"), py::arg("std"))
      .def("set_classification", [](PipelineConfig& c, std::string output, ScoreActivation activation,
                                     float threshold) {
        c.has_classification = true;
        c.classification = {std::move(output), activation, threshold};
      }, py::arg("output"), py::arg("activation"), py::arg("threshold"))
      .def("set_segmentation", [](PipelineConfig& c, std::string output, ScoreActivation activation,
                                  float threshold, ResizeMode upsample,
                                  std::vector<std::array<uint8_t, 3>> colors, bool activation_is_default) {
        c.has_segmentation = true;
        c.segmentation = {std::move(output), activation, activation_is_default, threshold, upsample,
                          std::move(colors)};
      }, py::arg("output"), py::arg("activation"), py::arg("threshold"), py::arg("upsample"),
         py::arg("label_colors"), py::arg("activation_is_default"))
      .def_readwrite("limits", &PipelineConfig::limits)
      .def("set_session", [](PipelineConfig& c, int intra_op_threads, int inter_op_threads,
                             std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>> providers) {
        c.session.intra_op_threads = intra_op_threads;
        c.session.inter_op_threads = inter_op_threads;
        c.session.providers.clear();
        for (auto& [name, options] : providers) c.session.providers.push_back({name, options});
      }, py::arg("intra_op_threads"), py::arg("inter_op_threads"), py::arg("providers"));

  py::class_<Pipeline>(m, "Pipeline")
      .def(py::init<PipelineConfig>(), py::arg("config"), py::call_guard<py::gil_scoped_release>())
      .def("detect", [](const Pipeline& p, const py::object& body, const std::string& content_type) {
        BorrowedBytes bytes(body);
        std::optional<Pipeline::Lease> lease;
        {
          py::gil_scoped_release release;
          lease.emplace(p.detect(bytes.data(), bytes.size(), parse_content_type(content_type)));
        }
        return to_python(lease->detection());
      }, py::arg("body"), py::arg("content_type"),
         "Decode and run; returns (is_anomalous, confidence, label_pixels, total_pixels, mask_png)")
      .def("detect_rgb", [](const Pipeline& p, const py::array_t<uint8_t, 0>& rgb) {
        // The Python layer hands over HxWx3 uint8 with packed pixels; checked here again because
        // a wrong stride would read out of bounds.
        if (rgb.ndim() != 3 || rgb.shape(2) != 3 || rgb.strides(2) != 1 || rgb.strides(1) != 3 ||
            rgb.strides(0) < 3 * rgb.shape(1)) {
          throw Error(ErrorKind::Validation, "rgb must be an HxWx3 uint8 array with packed pixels");
        }
        RgbView view{rgb.data(), static_cast<int>(rgb.shape(1)), static_cast<int>(rgb.shape(0)),
                     static_cast<size_t>(rgb.strides(0))};
        std::optional<Pipeline::Lease> lease;
        {
          py::gil_scoped_release release;
          lease.emplace(p.detect_rgb(view));
        }
        return to_python(lease->detection());
      }, py::arg("rgb"))
      .def_property_readonly("label_count", &Pipeline::label_count)
      .def_property_readonly("io_binding", [](const Pipeline& p) { return p.session().io_binding(); },
                             "Whether runs go through an ONNX Runtime IO binding")
      .def_property_readonly("input_name", [](const Pipeline& p) { return p.config().input_name; })
      .def_property_readonly("output_names", [](const Pipeline& p) {
        std::vector<std::string> names;
        if (p.config().has_classification) names.push_back(p.config().classification.output);
        if (p.config().has_segmentation) names.push_back(p.config().segmentation.output);
        return names;
      });
}

}  // namespace openlookout::python
