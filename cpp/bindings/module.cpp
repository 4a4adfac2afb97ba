// openlookout._core: the thin Python face of the C++ core. Argument normalisation and the
// L4V-shaped result dict live in the Python package; this module only converts types, releases
// the GIL around native work and maps core errors to openlookout's exception classes.
#include "bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "openlookout's native core (private; use the openlookout package)";
  openlookout::python::bind_errors(m);
  openlookout::python::bind_runtime(m);
  openlookout::python::bind_pipeline(m);
}
