#include "../core/session.h"
#include "bindings.h"

#include <pybind11/stl.h>

namespace py = pybind11;

namespace openlookout::python {

void bind_runtime(py::module_& m) {
  m.def("load_onnxruntime", &load_onnxruntime, py::arg("library_path"),
        py::call_guard<py::gil_scoped_release>(),
        "dlopen the ONNX Runtime shared library (once per process)");
  m.def("onnxruntime_loaded", &onnxruntime_loaded);
  m.def("onnxruntime_version", &onnxruntime_version);
  m.def("onnxruntime_providers", &onnxruntime_providers,
        "Execution providers the loaded ONNX Runtime library offers");
}

}  // namespace openlookout::python
