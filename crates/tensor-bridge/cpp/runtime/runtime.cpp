// Runtime: libtorch's process-wide settings kiln changes (OpenMP threads,
// the default dtype, deterministic algorithms) and generators
// (torch.Generator), plus the one function that frees the shim's messages.
// (The CUDA libraries are loaded by src/cuda.rs.)
#include "../error.h"
#include "../handles.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>
#include <c10/core/DefaultDtype.h>

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

extern "C" {

// Frees a message (or the bytes of kiln_jit_save) the shim returned.
void kiln_free_error(char *err) { std::free(err); }

// The OpenMP thread count of the calling thread (`omp_set_num_threads`,
// the count ATen's own parallel kernels read through at::get_num_threads()),
// leaving MKL's thread-local count (mkl_set_num_threads_local, which
// at::set_num_threads also sets and MKL's GEMMs read first) as it is.
// libtorch's OpenMP runtime is found by symbol (the wheel ships its own
// libgomp under another file name); `*previous` gets the count before, or
// -1 when libtorch runs without OpenMP (then nothing changes).
char *kiln_set_omp_threads(int threads, int *previous) {
  KILN_TRY({
    // First use on this thread: let ATen apply its own count before ours.
    (void)at::get_num_threads();
    using get_fn = int (*)();
    using set_fn = void (*)(int);
    auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    auto set = reinterpret_cast<set_fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (get == nullptr || set == nullptr) {
      *previous = -1;
    } else {
      *previous = get();
      set(threads);
    }
  })
}

// torch.use_deterministic_algorithms(on); torch.backends.cudnn.deterministic = on;
// torch.backends.cudnn.benchmark = not on. For comparing runs on GPUs
// (`kiln train --deterministic`).
char *kiln_set_deterministic(int on) {
  KILN_TRY({
    at::globalContext().setDeterministicAlgorithms(on != 0, false);
    at::globalContext().setDeterministicCuDNN(on != 0);
    at::globalContext().setBenchmarkCuDNN(on == 0 ? at::globalContext().benchmarkCuDNN() : false);
  })
}

// torch.set_default_dtype(like.dtype)
char *kiln_set_default_dtype(tensor like) {
  KILN_TRY(c10::set_default_dtype(like->dtype()))
}

// out = torch.empty(0) in torch.get_default_dtype() (the caller reads its dtype).
char *kiln_default_dtype(tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::empty({0}, at::TensorOptions().dtype(c10::get_default_dtype()))))
}
}  // extern "C"

// ===========================================================================
// Generators: `at::Generator` handles (torch.Generator). A handle shares its
// generator (an intrusive pointer): the default CPU and CUDA generators are
// handed out as handles too. Draws call libtorch's own functions with the
// generator, whose kernels take `gen.mutex()` themselves; seeding and state
// take it here, as PyTorch's Python bindings do (THPGenerator_*).
// ===========================================================================

typedef at::Generator *generator;

static at::TensorOptions kiln_options(int dtype) {
  TORCH_CHECK(dtype >= 0 && dtype < static_cast<int>(c10::ScalarType::NumOptions),
              "not a c10::ScalarType: ", dtype);
  return at::TensorOptions().dtype(static_cast<c10::ScalarType>(dtype));
}

extern "C" {

// torch.Generator().manual_seed(seed)
char *kiln_generator_new(uint64_t seed, generator *out) {
  KILN_TRY(*out = new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed)))
}

// A handle to the default generator of the CPU (device_type 0: what
// torch.rand() uses without generator=) or of CUDA device `index` (1).
char *kiln_generator_default(int device_type, int64_t index, generator *out) {
  KILN_TRY({
    TORCH_CHECK(device_type == 0 || device_type == 1,
                "kiln generators are on cpu (0) or cuda (1), got ", device_type);
    if (device_type == 0) {
      *out = new at::Generator(at::detail::getDefaultCPUGenerator());
    } else {
      *out = new at::Generator(at::globalContext().defaultGenerator(
          c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index))));
    }
  })
}

void kiln_generator_free(generator g) { delete g; }

// g.manual_seed(seed)
char *kiln_generator_manual_seed(generator g, uint64_t seed) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    g->set_current_seed(seed);
  })
}

// g.initial_seed()
char *kiln_generator_initial_seed(generator g, uint64_t *out) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    *out = g->current_seed();
  })
}

// g.get_state(): a uint8 tensor.
char *kiln_generator_get_state(generator g, tensor *out) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    *out = new at::Tensor(g->get_state());
  })
}

// g.set_state(state)
char *kiln_generator_set_state(generator g, tensor state) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    g->set_state(*state);
  })
}

// torch.rand(size, generator=g, dtype=dtype)
char *kiln_generator_rand(generator g, const int64_t *size, int64_t ndim, int dtype, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::rand(at::IntArrayRef(size, ndim), *g, kiln_options(dtype))))
}

// torch.randn(size, generator=g, dtype=dtype)
char *kiln_generator_randn(generator g, const int64_t *size, int64_t ndim, int dtype, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randn(at::IntArrayRef(size, ndim), *g, kiln_options(dtype))))
}

// torch.randint(low, high, size, generator=g) (int64)
char *kiln_generator_randint(generator g, int64_t low, int64_t high, const int64_t *size,
                             int64_t ndim, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randint(low, high, at::IntArrayRef(size, ndim), *g,
                                             at::TensorOptions().dtype(at::kLong))))
}

// torch.randperm(n, generator=g) (int64)
char *kiln_generator_randperm(generator g, int64_t n, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randperm(n, *g, at::TensorOptions().dtype(at::kLong))))
}

// self.uniform_(from, to, generator=g)
char *kiln_generator_uniform_(generator g, tensor self, double from, double to) {
  KILN_TRY(self->uniform_(from, to, *g))
}

// self.normal_(mean, std, generator=g)
char *kiln_generator_normal_(generator g, tensor self, double mean, double std) {
  KILN_TRY(self->normal_(mean, std, *g))
}

// self.random_(generator=g)
char *kiln_generator_random_(generator g, tensor self) {
  KILN_TRY(self->random_(*g))
}

// self.bernoulli_(p, generator=g)
char *kiln_generator_bernoulli_(generator g, tensor self, double p) {
  KILN_TRY(self->bernoulli_(p, *g))
}

// torch.multinomial(probs, num_samples, replacement, generator=g)
char *kiln_generator_multinomial(generator g, tensor probs, int64_t num_samples, int replacement,
                                 tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::multinomial(*probs, num_samples, replacement != 0, *g)))
}

}  // extern "C"
