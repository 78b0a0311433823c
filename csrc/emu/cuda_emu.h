// CUDA execution emulator: compiles the unchanged kernel sources csrc/cuda/*.cu with a host C++
// compiler and runs them on the CPU, so the kernels are executed (and sanitized) without a GPU.
// Force-included before a .cu file (g++ -x c++ -include csrc/emu/cuda_emu.h foo.cu); never
// seen by nvcc. See docs/CUDA_TESTING.md.
//
// Model (what a kernel can observe):
// - threadIdx/blockIdx/blockDim/gridDim are thread-local; blocks run one after another; the
//   threads of a block run either as one OS thread each (mode kThreads: real concurrency, the
//   mode ThreadSanitizer checks) or as fibers on the calling thread (mode kFibers: fast,
//   deterministic; the threads of a block run in turn from one __syncthreads to the next,
//   alternately in forward and reverse order so that a missing barrier changes results).
//   The default is kFibers (env FRCNN_CUDA_EMU_MODE=threads changes it); a ThreadSanitizer
//   build always uses kThreads; AddressSanitizer builds support both (stack switches are
//   annotated for ASan).
// - `__shared__` arrays are `static`: one copy, which the threads of the running block share.
//   Dynamic shared memory (FRCNN_DYNAMIC_SHARED) is a fresh heap buffer per block of exactly
//   the launch's size (AddressSanitizer sees overruns), filled with the byte 0xA5 (garbage).
// - __syncthreads() is a barrier over the block's threads that have not returned (threads that
//   return drop out); a barrier reached from different source lines is reported as divergence.
// - atomicAdd is std::atomic_ref<T>::fetch_add; device min/max follow CUDA (fminf/fmaxf for
//   floating point); half/bfloat16 are the toolkit's host implementations (cuda_fp16.h).
// - A launch checks CUDA's limits (<= 1024 threads a block, block.z <= 64, grid.x < 2^31,
//   grid.y/z <= 65535, dynamic shared memory <= 48 KiB) and reports a violation, a divergent
//   barrier or a bad configuration through cudaGetLastError(), which this header redirects to
//   frcnn_emu::get_last_error (the message: frcnn_emu::last_error_message()).
// Not modelled: warps (no warp-synchronous code is allowed in the kernels), the GPU memory
// model, code generation, speed, and static __shared__ being garbage at block start.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emu.h is for host compilers only; nvcc builds the .cu files natively"
#endif

#define FRCNN_CUDA_EMU 1

// Defined before the toolkit headers, which keep existing definitions of these.
#define __global__
#define __device__
#define __host__
#define __shared__ static

#include <cuda_runtime_api.h>  // types only (dim3, cudaError_t, cudaStream_t); no libcudart

#include <math.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

#include "emu_api.h"

#undef __launch_bounds__
#define __launch_bounds__(...)

// Built-ins: thread-local, set by the emulator before a CUDA thread runs.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace frcnn_emu {

// The kernel body of one CUDA thread: fn(ctx) runs the kernel with the launch's arguments.
struct KernelBody {
  void (*fn)(const void* ctx);
  const void* ctx;
};

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  const char* kernel;  // source text of the kernel expression, for messages
  const char* file;
  int line;
};

// Runs all blocks (or records an error without running). Never throws.
void run(const LaunchConfig& cfg, KernelBody body);

void syncthreads(const char* file, int line);
void* dynamic_shared();

// Launch object: FRCNN_LAUNCH(grid, block, shmem, stream, kernel)(args...).
template <typename... P>
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t /*stream: one stream, in order*/,
         const char* name, const char* file, int line, void (*kernel)(P...))
      : cfg_{grid, block, shmem, name, file, line}, kernel_(kernel) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong argument count");
    // Converted once to the parameter types, as a real launch does; every thread reads them.
    const Ctx ctx{kernel_, std::tuple<P...>(static_cast<P>(std::forward<A>(args))...)};
    run(cfg_, KernelBody{&Launch::call, &ctx});
  }

 private:
  struct Ctx {
    void (*kernel)(P...);
    std::tuple<P...> args;
  };
  static void call(const void* p) {
    const Ctx* c = static_cast<const Ctx*>(p);
    std::apply(c->kernel, c->args);
  }
  LaunchConfig cfg_;
  void (*kernel_)(P...);
};

template <typename... P>
Launch(dim3, dim3, size_t, cudaStream_t, const char*, const char*, int, void (*)(P...))
    -> Launch<P...>;

}  // namespace frcnn_emu

#define FRCNN_LAUNCH(grid, block, shmem, stream, ...)                                    \
  ::frcnn_emu::Launch(dim3(grid), dim3(block), static_cast<size_t>(shmem), stream,       \
                      #__VA_ARGS__, __FILE__, __LINE__, __VA_ARGS__)
#define FRCNN_DYNAMIC_SHARED(type, name) \
  type* const name = static_cast<type*>(::frcnn_emu::dynamic_shared())

#define __syncthreads() ::frcnn_emu::syncthreads(__FILE__, __LINE__)
#define cudaGetLastError ::frcnn_emu::get_last_error
#define cudaPeekAtLastError ::frcnn_emu::peek_last_error
#define cudaGetErrorString ::frcnn_emu::error_string

// Device atomics (relaxed, like CUDA's); the old value is returned.
template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}
template <typename T>
inline T atomicMax(T* address, T value) {
  std::atomic_ref<T> a(*address);
  T old = a.load(std::memory_order_relaxed);
  while (old < value && !a.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}

// Device min/max overloads as in CUDA's math headers (floating point: fminf/fmaxf semantics,
// i.e. a NaN operand yields the other one).
inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return b < a ? b : a; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long min(long a, long b) { return b < a ? b : a; }
inline long max(long a, long b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return b < a ? b : a; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return b < a ? b : a; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
