// How the shim's C functions pass libtorch objects: a tensor is an
// `at::Tensor *` (tch's `C_tensor`), borrowed for the call; a new tensor
// for the caller is allocated with `new` and owned by it (tch frees it).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

typedef at::Tensor *tensor;

// The tensors of a pointer array of n handles, as libtorch's list arguments take them.
inline std::vector<at::Tensor> kiln_list(tensor *ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}
