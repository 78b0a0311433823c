// Launchers of the RoIAlign CUDA kernels (roi_align_kernel.cu). Plain C++ + CUDA runtime types,
// like kernels.h, so the .cu compiles with nvcc alone and on the CPU emulator.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace frcnn {
namespace cuda {

// RoIAlign forward. input [B, C, H, W] (dtype: float32/float64/float16/bfloat16), rois [R, 5]
// (roi_dtype kFloat32 or kFloat64: the coordinate arithmetic is done in it), output
// [R, C, pooled_h, pooled_w] in the input dtype. Batch indices must be in [0, B) and the
// coordinates finite (the glue checks). One thread per output element.
cudaError_t roi_align_forward_launch(Dtype dtype, Dtype roi_dtype, const void* input,
                                     const void* rois, int64_t R, int64_t C, int64_t H, int64_t W,
                                     int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                                     int64_t sampling_ratio, bool aligned, void* output,
                                     cudaStream_t stream);

// Backward: grad_input[b, c] += grad / count * bilinear weights (atomics). grad has the input
// dtype; grad_input is float32 for float16/bfloat16 grads (accumulate in float), else the same
// dtype. It must be zeroed.
cudaError_t roi_align_backward_launch(Dtype dtype, Dtype roi_dtype, const void* grad,
                                      const void* rois, int64_t R, int64_t C, int64_t H,
                                      int64_t W, int64_t pooled_h, int64_t pooled_w,
                                      double spatial_scale, int64_t sampling_ratio, bool aligned,
                                      void* grad_input, cudaStream_t stream);

}  // namespace cuda
}  // namespace frcnn
