// kiln's TorchScript shim: load, run, train and save a `torch::jit::Module`
// (what `torch.jit.save(torch.jit.script(model))` writes). tch 0.24 has a
// CModule, but it hides its module pointer, renames parameters (`.` -> `_`)
// and has no buffers, so kiln keeps its own handle here.
//
// Kept in its own file: <torch/script.h> is heavy, and only this file needs it.
#include "error.h"
#include "handles.h"

#include <torch/script.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

typedef torch::jit::Module *jit_module;

static c10::Device kiln_jit_device(int device_type, int64_t index) {
  if (device_type == 1) return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  return c10::Device(c10::DeviceType::CPU);
}

extern "C" {

// torch.jit.load(io.BytesIO(data), map_location=device)
char *kiln_jit_load(const char *data, size_t len, int device_type, int64_t index, jit_module *out) {
  KILN_TRY({
    std::istringstream stream(std::string(data, len));
    *out = new torch::jit::Module(torch::jit::load(stream, kiln_jit_device(device_type, index)));
  })
}

void kiln_jit_free(jit_module m) { delete m; }

// out = module(input) when the result is a tensor; otherwise *kind receives
// the result's kind (Tuple, GenericDict…) and *out stays NULL. The graph
// executor's optimisations are off for the call (see jit.rs).
char *kiln_jit_forward(jit_module m, tensor input, tensor *out, char **kind) {
  KILN_TRY({
    torch::jit::GraphOptimizerEnabledGuard no_optimizations(false);
    std::vector<torch::jit::IValue> inputs{*input};
    torch::jit::IValue result = m->forward(std::move(inputs));
    if (result.isTensor()) {
      *out = new at::Tensor(result.toTensor());
    } else {
      *kind = kiln::error_message(result.tagKind());
    }
  })
}

// module.train(on) (module.eval() for on == 0), recursively.
char *kiln_jit_train(jit_module m, int on) {
  KILN_TRY(m->train(on != 0))
}

// module.training
char *kiln_jit_is_training(jit_module m, int *out) {
  KILN_TRY(*out = m->is_training() ? 1 : 0)
}

// module.named_parameters() (buffers == 0) or module.named_buffers(), in
// PyTorch's order; each tensor handle shares storage and grad with the module's.
char *kiln_jit_named_tensors(jit_module m, int buffers, void *data,
                             void (*f)(void *, const char *, tensor)) {
  KILN_TRY({
    if (buffers != 0) {
      for (const auto &b : m->named_buffers(/*recurse=*/true)) f(data, b.name.c_str(), new at::Tensor(b.value));
    } else {
      for (const auto &p : m->named_parameters(/*recurse=*/true)) f(data, p.name.c_str(), new at::Tensor(p.value));
    }
  })
}

// torch.jit.save(module, buffer): the bytes, malloc'd (freed with kiln_free_error).
char *kiln_jit_save(jit_module m, char **bytes, size_t *len) {
  KILN_TRY({
    std::ostringstream stream;
    m->save(stream);
    std::string s = stream.str();
    *bytes = static_cast<char *>(std::malloc(s.size() == 0 ? 1 : s.size()));
    if (*bytes == nullptr) throw std::bad_alloc();
    std::memcpy(*bytes, s.data(), s.size());
    *len = s.size();
  })
}

}  // extern "C"
