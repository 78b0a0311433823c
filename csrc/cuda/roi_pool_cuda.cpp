// Torch glue for the CUDA RoI pooling kernels (built only with CUDA); the host logic (RoI
// contract checks, dtypes, determinism alert) is in roi_pool_glue.h.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_backend.h"
#include "roi_pool_glue.h"

namespace frcnn {
namespace {

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_height,
                                                 int64_t pooled_width) {
  TORCH_CHECK(input.is_cuda(), "frcnn::roi_pool (CUDA): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  return glue::roi_pool_forward(glue::CudaBackend{}, input, rois, spatial_scale, pooled_height,
                                pooled_width);
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width) {
  TORCH_CHECK(grad.is_cuda(), "frcnn::roi_pool_backward (CUDA): grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  return glue::roi_pool_backward(glue::CudaBackend{}, grad, rois, argmax, spatial_scale,
                                 pooled_height, pooled_width, batch_size, channels, height,
                                 width);
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CUDA, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_cuda));
  m.impl("roi_pool_backward", TORCH_FN(roi_pool_backward_cuda));
}

}  // namespace frcnn
