// Launchers of the frcnn CUDA kernels. Plain C++ + CUDA runtime types only (no torch), so the
// .cu files compile with nvcc alone (make cuda-check), the glue .cpp calls them, and the CUDA
// emulator (csrc/emu, docs/CUDA_TESTING.md) builds the same .cu files for the CPU.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

// One kernel source for nvcc and the emulator: launches and dynamic shared memory go through
// these macros (the kernel comes last, so template arguments with commas need no parentheses):
//   FRCNN_LAUNCH(grid, block, shared_bytes, stream, kernel<T, G>)(args...);
//   FRCNN_DYNAMIC_SHARED(unsigned long long, name);  // extern __shared__ ... name[]
// csrc/emu/cuda_emu.h defines them for host compilers.
#if defined(__CUDACC__)
#define FRCNN_LAUNCH(grid, block, shmem, stream, ...) __VA_ARGS__<<<grid, block, shmem, stream>>>
#define FRCNN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace frcnn {
namespace cuda {

enum Dtype : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

constexpr int kNmsBlock = 64;  // boxes per mask word
constexpr int64_t kMaxGridYZ = 65535;  // CUDA's limit on grid.y (the NMS mask's row blocks)
constexpr int64_t kNmsMaxBoxes = kMaxGridYZ * kNmsBlock;
// removed[] of the reduce kernel lives in shared memory up to this size (bytes), else global.
constexpr int64_t kNmsSharedLimit = 48 * 1024;

inline int64_t nms_col_blocks(int64_t n) { return (n + kNmsBlock - 1) / kNmsBlock; }

// Greedy NMS on boxes already sorted by descending score.
//   boxes: [n, 4] (float32 or float64), mask: [n, col_blocks] words (workspace),
//   removed: [col_blocks] words (workspace), keep: [n] bytes, set to 1 for kept boxes
//   (must be zeroed by the caller). Suppress when IoU > iou_threshold.
//   shared_limit: largest removed[] (bytes) kept in shared memory (tests lower it to 0 to
//   reach the global-memory path). Requires n <= kNmsMaxBoxes (else cudaErrorInvalidValue).
cudaError_t nms_launch(Dtype dtype, const void* boxes, int64_t n, double iou_threshold, int offset,
                       unsigned long long* mask, unsigned long long* removed, uint8_t* keep,
                       cudaStream_t stream, int64_t shared_limit = kNmsSharedLimit);

// Caffe RoI max pooling forward. input [B, C, H, W] (dtype: any), rois [R, 5] (roi_dtype:
// kFloat32 or kFloat64; the coordinate arithmetic is done in it), output/argmax [R, C, ph, pw].
// Batch indices must be in [0, B) and coordinates finite (the glue checks).
cudaError_t roi_pool_forward_launch(Dtype dtype, Dtype roi_dtype, const void* input,
                                    const void* rois, int64_t R, int64_t C, int64_t H, int64_t W,
                                    int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                                    void* output, int32_t* argmax, cudaStream_t stream);

// Backward: grad_input[b, c, argmax] += grad (atomics). grad has the input dtype; grad_input
// is float32 for float16/bfloat16 grads (accumulate in float), else the same dtype. It must be
// zeroed. argmax values must be in [-1, H*W) (the glue checks).
cudaError_t roi_pool_backward_launch(Dtype dtype, Dtype roi_dtype, const void* grad,
                                     const void* rois, const int32_t* argmax, int64_t R,
                                     int64_t C, int64_t H, int64_t W, int64_t pooled_h,
                                     int64_t pooled_w, void* grad_input, cudaStream_t stream);

}  // namespace cuda
}  // namespace frcnn
