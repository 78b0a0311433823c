// Kernels that test the CUDA emulator itself (tests/test_cuda_emu.py); CUDA dialect, built only
// for the emulator.
#include <cstring>

#include "../cuda/kernels.h"
#include "selftest.h"

namespace frcnn_emu {
namespace {

__global__ void count_kernel(int* out) { atomicAdd(out, 1); }

__global__ void index_kernel(int* out) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned id = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
  out[id] = static_cast<int>(id);
}

__global__ void reverse_kernel(int* out) {
  __shared__ int s[1024];
  const unsigned n = blockDim.x;
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * n + threadIdx.x] = s[n - 1 - threadIdx.x];
}

__global__ void garbage_kernel(int* out) {
  FRCNN_DYNAMIC_SHARED(unsigned char, s);
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void diverge_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

}  // namespace

cudaError_t selftest_launch(const char* name, dim3 grid, dim3 block, size_t shared, int* out) {
  if (std::strcmp(name, "count") == 0) {
    FRCNN_LAUNCH(grid, block, shared, nullptr, count_kernel)(out);
  } else if (std::strcmp(name, "index") == 0) {
    FRCNN_LAUNCH(grid, block, shared, nullptr, index_kernel)(out);
  } else if (std::strcmp(name, "reverse") == 0) {
    FRCNN_LAUNCH(grid, block, shared, nullptr, reverse_kernel)(out);
  } else if (std::strcmp(name, "garbage") == 0) {
    FRCNN_LAUNCH(grid, block, shared, nullptr, garbage_kernel)(out);
  } else if (std::strcmp(name, "diverge") == 0) {
    FRCNN_LAUNCH(grid, block, shared, nullptr, diverge_kernel)(out);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace frcnn_emu
