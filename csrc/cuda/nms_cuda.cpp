// Torch glue for the CUDA NMS kernel (built only with CUDA); the host logic is in nms_glue.h.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_backend.h"
#include "nms_glue.h"

namespace frcnn {
namespace {

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                    int64_t offset) {
  TORCH_CHECK(boxes.is_cuda(), "frcnn::nms (CUDA): boxes must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(boxes.device());
  return glue::nms(glue::CudaBackend{}, boxes, scores, iou_threshold, offset,
                   cuda::kNmsSharedLimit);
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CUDA, m) { m.impl("nms", TORCH_FN(nms_cuda)); }

}  // namespace frcnn
