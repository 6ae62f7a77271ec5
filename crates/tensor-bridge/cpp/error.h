// kiln's error convention for every C function of the shim: it catches C++
// exceptions and returns the message as a malloc'd string (NULL on success),
// which the Rust side turns into `Error::Torch` and frees with
// `kiln_free_error`.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace kiln {

// A malloc'd copy of `msg` (NULL if memory ran out).
inline char *error_message(const char *msg) {
  size_t n = std::strlen(msg);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, msg, n + 1);
  return out;
}

inline char *error_message(const std::string &msg) { return error_message(msg.c_str()); }

}  // namespace kiln

// The body of a C function: runs `body`, returns NULL, or the message of the
// exception it threw (libtorch's without its C++ backtrace).
#define KILN_TRY(body)                                                   \
  try {                                                                  \
    body;                                                                \
    return nullptr;                                                      \
  } catch (const c10::Error &e) {                                        \
    return kiln::error_message(e.what_without_backtrace());              \
  } catch (const std::exception &e) {                                    \
    return kiln::error_message(e.what());                                \
  } catch (...) {                                                        \
    return kiln::error_message("unknown C++ exception in libtorch");     \
  }
