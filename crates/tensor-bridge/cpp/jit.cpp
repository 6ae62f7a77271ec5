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

// What a forward returned, as `output=` selects from it: the whole result
// (index < 0, key NULL), element `index` of a tuple or list, or entry `key`
// of a dict with string keys. A tensor goes to *out; anything else leaves
// *out NULL and puts a one-line explanation in *kind (malloc'd).
static void kiln_jit_select(const torch::jit::IValue &result, int64_t index, const char *key,
                            tensor *out, char **kind) {
  auto tag = [](const torch::jit::IValue &v) {
    return v.isGenericDict() ? std::string("dict") : std::string(v.tagKind());
  };
  std::string selector = key != nullptr ? std::string("output=") + key
                                        : "output=" + std::to_string(index);
  if (index < 0 && key == nullptr) {
    if (result.isTensor()) {
      *out = new at::Tensor(result.toTensor());
      return;
    }
    std::string hint = result.isGenericDict() ? "output=KEY" : "output=INDEX";
    *kind = kiln::error_message("the TorchScript module's forward returned a " + tag(result) +
                                ", not a tensor; pick the tensor to train on with " + hint);
    return;
  }
  torch::jit::IValue picked;
  if (result.isTuple() || result.isList()) {
    std::vector<torch::jit::IValue> items;
    if (result.isTuple()) {
      for (const auto &v : result.toTupleRef().elements()) items.push_back(v);
    } else {
      for (const auto &v : result.toListRef()) items.push_back(v);
    }
    if (key != nullptr || index >= static_cast<int64_t>(items.size())) {
      *kind = kiln::error_message(selector + ": the TorchScript module returns a " + tag(result) +
                                  " of " + std::to_string(items.size()) +
                                  " elements; pick one with output=0.." +
                                  std::to_string(static_cast<int64_t>(items.size()) - 1));
      return;
    }
    picked = items[static_cast<size_t>(index)];
  } else if (result.isGenericDict()) {
    std::string keys;
    bool found = false;
    for (const auto &entry : result.toGenericDict()) {
      std::string name = entry.key().isString() ? entry.key().toStringRef()
                                                : entry.key().tagKind();
      keys += (keys.empty() ? "" : ", ") + name;
      if (key != nullptr && entry.key().isString() && entry.key().toStringRef() == key) {
        picked = entry.value();
        found = true;
      }
    }
    if (!found) {
      *kind = kiln::error_message(selector + ": the TorchScript module returns a dict with keys " +
                                  (keys.empty() ? std::string("(none)") : keys) +
                                  "; pick one with output=KEY");
      return;
    }
  } else {
    *kind = kiln::error_message(selector + ": the TorchScript module returns a " + tag(result) +
                                ", not a tuple, list or dict; drop output=");
    return;
  }
  if (!picked.isTensor()) {
    *kind = kiln::error_message(selector + " of the TorchScript module's output is a " +
                                tag(picked) + ", not a tensor");
    return;
  }
  *out = new at::Tensor(picked.toTensor());
}

// out = module(*inputs) (n inputs, in order), or the part of its result
// that `index`/`key` select (see kiln_jit_select); otherwise *kind explains
// what it returned and *out stays NULL. The graph executor's optimisations
// are off for the call (see jit.rs).
char *kiln_jit_forward(jit_module m, tensor *inputs, size_t n, int64_t index, const char *key,
                       tensor *out, char **kind) {
  KILN_TRY({
    torch::jit::GraphOptimizerEnabledGuard no_optimizations(false);
    std::vector<torch::jit::IValue> args;
    args.reserve(n);
    for (size_t i = 0; i < n; ++i) args.emplace_back(*inputs[i]);
    kiln_jit_select(m->forward(std::move(args)), index, key, out, kind);
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
