// Small kernels that test the emulator itself (built only into the emulator, never by nvcc).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace frcnn_emu {
// name: "count" (out[0] += 1 per thread), "index" (out[global linear id] = that id, for a
// grid-of-blocks layout check), "reverse" (each block reverses its thread ids through static
// __shared__ with a barrier), "garbage" (out[t] = byte t of dynamic shared memory), "diverge"
// (half the threads wait at one __syncthreads, half at another). Returns the launch error.
cudaError_t selftest_launch(const char* name, dim3 grid, dim3 block, size_t shared, int* out);
}  // namespace frcnn_emu
