// Torch glue for the CUDA RoI pooling kernels (built only with CUDA).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "kernels.h"

namespace frcnn {
namespace {

cuda::Dtype to_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::kFloat32;
    case at::kDouble: return cuda::kFloat64;
    case at::kHalf: return cuda::kFloat16;
    default: TORCH_CHECK(false, name, " (CUDA): float32, float64 or float16, got ", t.scalar_type());
  }
}

void check_rois(const at::Tensor& x, const at::Tensor& rois, const char* name) {
  TORCH_CHECK(x.is_cuda() && rois.is_cuda() && x.device() == rois.device(), name,
              " (CUDA): tensors must be on the same CUDA device");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, name,
              ": rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got ", rois.sizes());
  TORCH_CHECK(x.scalar_type() == rois.scalar_type(), name,
              ": input and rois must have the same dtype");
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_height,
                                                 int64_t pooled_width) {
  check_rois(input, rois, "frcnn::roi_pool");
  TORCH_CHECK(input.dim() == 4, "frcnn::roi_pool: input must be [B, C, H, W], got ",
              input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "frcnn::roi_pool: pooled size must be positive");
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3), R = rois.size(0);
  auto output = at::empty({R, C, pooled_height, pooled_width}, input.options());
  auto argmax = at::empty({R, C, pooled_height, pooled_width}, input.options().dtype(at::kInt));
  if (output.numel() == 0) return {output, argmax};
  auto x = input.contiguous();
  auto r = rois.contiguous();
  // Batch indices are not range-checked here (that would synchronise); the CPU kernel checks.
  const cudaError_t err = cuda::roi_pool_forward_launch(
      to_dtype(x, "frcnn::roi_pool"), x.const_data_ptr(), r.const_data_ptr(), R, C, H, W,
      pooled_height, pooled_width, spatial_scale, output.mutable_data_ptr(),
      argmax.mutable_data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "frcnn::roi_pool (CUDA): ", cudaGetErrorString(err));
  return {output, argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width) {
  check_rois(grad, rois, "frcnn::roi_pool_backward");
  const int64_t R = rois.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == R && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "frcnn::roi_pool_backward: grad must be [R, C, pooled_h, pooled_w], got ",
              grad.sizes());
  TORCH_CHECK(argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt,
              "frcnn::roi_pool_backward: argmax must be int32 with the shape of grad");
  const c10::cuda::CUDAGuard guard(grad.device());
  // Half gradients accumulate in float32, then round once.
  const bool half = grad.scalar_type() == at::kHalf;
  auto acc = at::zeros({batch_size, channels, height, width},
                       grad.options().dtype(half ? at::kFloat : grad.scalar_type()));
  if (grad.numel() == 0) return half ? acc.to(at::kHalf) : acc;
  auto g = grad.contiguous();
  auto a = argmax.contiguous();
  auto r = rois.contiguous();
  const cudaError_t err = cuda::roi_pool_backward_launch(
      to_dtype(g, "frcnn::roi_pool_backward"), g.const_data_ptr(), r.const_data_ptr(),
      a.const_data_ptr<int32_t>(), R, channels, height, width, pooled_height, pooled_width,
      acc.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "frcnn::roi_pool_backward (CUDA): ", cudaGetErrorString(err));
  return half ? acc.to(at::kHalf) : acc;
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CUDA, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_cuda));
  m.impl("roi_pool_backward", TORCH_FN(roi_pool_backward_cuda));
}

}  // namespace frcnn
