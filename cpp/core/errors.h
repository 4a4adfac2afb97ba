// Typed errors of the core. The binding maps each kind to the Python exception named after
// Lookout for Vision's error of the same name; nothing in the core knows about Python.
#pragma once

#include <stdexcept>
#include <string>

namespace openlookout {

enum class ErrorKind {
  Validation,        // bad input: body, content type, image, manifest, options (HTTP 400)
  ResourceNotFound,  // a model package or file that is not there (HTTP 404)
  Conflict,          // the resource is in a state that does not allow the call (HTTP 409)
  Throttling,        // transient overload; the caller may retry (HTTP 429)
  InternalServer,    // a fault of ours or of ONNX Runtime (HTTP 500)
  AccessDenied,      // not authorized (HTTP 403)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] inline void throw_validation(const std::string& message) {
  throw Error(ErrorKind::Validation, message);
}
[[noreturn]] inline void throw_internal(const std::string& message) {
  throw Error(ErrorKind::InternalServer, message);
}

}  // namespace openlookout
