// Launchers of the frcnn CUDA kernels. Plain C++ + CUDA runtime types only (no torch), so the
// .cu files compile with nvcc alone (make cuda-check) and the glue .cpp calls them.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace frcnn {
namespace cuda {

enum Dtype : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2 };

constexpr int kNmsBlock = 64;  // boxes per mask word

inline int64_t nms_col_blocks(int64_t n) { return (n + kNmsBlock - 1) / kNmsBlock; }

// Greedy NMS on boxes already sorted by descending score.
//   boxes: [n, 4] (float32 or float64), mask: [n, col_blocks] words (workspace),
//   removed: [col_blocks] words (workspace), keep: [n] bytes, set to 1 for kept boxes
//   (must be zeroed by the caller). Suppress when IoU > iou_threshold.
cudaError_t nms_launch(Dtype dtype, const void* boxes, int64_t n, double iou_threshold, int offset,
                       unsigned long long* mask, unsigned long long* removed, uint8_t* keep,
                       cudaStream_t stream);

// Caffe RoI max pooling forward. input [B, C, H, W], rois [R, 5], output/argmax [R, C, ph, pw].
cudaError_t roi_pool_forward_launch(Dtype dtype, const void* input, const void* rois, int64_t R,
                                    int64_t C, int64_t H, int64_t W, int64_t pooled_h,
                                    int64_t pooled_w, double spatial_scale, void* output,
                                    int32_t* argmax, cudaStream_t stream);

// Backward: grad_input[b, c, argmax] += grad (atomics). grad has the input dtype; grad_input
// is float32 for float16 grads (accumulate in float), else the same dtype. It must be zeroed.
cudaError_t roi_pool_backward_launch(Dtype dtype, const void* grad, const void* rois,
                                     const int32_t* argmax, int64_t R, int64_t C, int64_t H,
                                     int64_t W, int64_t pooled_h, int64_t pooled_w,
                                     void* grad_input, cudaStream_t stream);

}  // namespace cuda
}  // namespace frcnn
