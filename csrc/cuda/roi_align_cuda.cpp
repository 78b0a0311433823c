// Torch glue for the CUDA RoIAlign kernels (built only with CUDA); the host logic (RoI contract
// checks, dtypes, determinism alert) is in roi_align_glue.h.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_backend.h"
#include "roi_align_glue.h"

namespace frcnn {
namespace {

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                          bool aligned) {
  TORCH_CHECK(input.is_cuda(), "frcnn::roi_align (CUDA): features must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  return glue::roi_align_forward(glue::CudaBackend{}, input, rois, spatial_scale,
                                       pooled_height, pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  TORCH_CHECK(grad.is_cuda(), "frcnn::roi_align_backward (CUDA): grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  return glue::roi_align_backward(glue::CudaBackend{}, grad, rois, spatial_scale,
                                        pooled_height, pooled_width, batch_size, channels,
                                        height, width, sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CUDA, m) {
  m.impl("roi_align", TORCH_FN(roi_align_cuda));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace frcnn
