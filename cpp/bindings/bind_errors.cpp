#include "../core/errors.h"
#include "bindings.h"

namespace py = pybind11;

namespace openlookout::python {
namespace {

const char* exception_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Validation: return "ValidationException";
    case ErrorKind::ResourceNotFound: return "ResourceNotFoundException";
    case ErrorKind::Conflict: return "ConflictException";
    case ErrorKind::Throttling: return "ThrottlingException";
    case ErrorKind::AccessDenied: return "AccessDeniedException";
    case ErrorKind::InternalServer: break;
  }
  return "InternalServerException";
}

// Raises openlookout.errors.<name>(message). The classes are defined in Python (so that they can
// also subclass builtins such as ValueError); they are looked up when an error happens.
void raise(const char* name, const char* message) {
  py::object cls = py::module_::import("openlookout.errors").attr(name);
  PyErr_SetObject(cls.ptr(), py::str(message).ptr());
}

}  // namespace

void bind_errors(py::module_&) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      raise(exception_name(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
      throw;  // pybind11 maps it to MemoryError
    } catch (const py::error_already_set&) {
      throw;
    } catch (const py::builtin_exception&) {
      throw;
    } catch (const std::exception& e) {
      raise("InternalServerException", e.what());
    }
  });
}

}  // namespace openlookout::python
