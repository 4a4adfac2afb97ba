// One bind_xxx per component of the core; module.cpp only calls them.
#pragma once

#include <pybind11/pybind11.h>

namespace openlookout::python {

void bind_errors(pybind11::module_& m);
void bind_runtime(pybind11::module_& m);
void bind_pipeline(pybind11::module_& m);

}  // namespace openlookout::python
