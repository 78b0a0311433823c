// Torch glue for the CUDA NMS kernel (built only with CUDA): sort, launch, gather the kept.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "kernels.h"

namespace frcnn {
namespace {

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                    int64_t offset) {
  TORCH_CHECK(boxes.is_cuda() && scores.is_cuda() && boxes.device() == scores.device(),
              "frcnn::nms (CUDA): boxes and scores must be on the same CUDA device");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "frcnn::nms: boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "frcnn::nms: scores must be [N] with N = boxes.size(0), got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(),
              "frcnn::nms: boxes and scores must have the same dtype");
  TORCH_CHECK(offset == 0 || offset == 1, "frcnn::nms: offset must be 0 or 1, got ", offset);
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble ||
                  boxes.scalar_type() == at::kHalf,
              "frcnn::nms (CUDA): float32, float64 or float16 boxes, got ", boxes.scalar_type());
  // Half boxes are compared in float32.
  const auto b = boxes.scalar_type() == at::kHalf ? boxes.to(at::kFloat) : boxes;
  auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto sorted = b.index_select(0, order).contiguous();
  const int64_t col_blocks = cuda::nms_col_blocks(n);
  auto mask = at::empty({n * col_blocks}, boxes.options().dtype(at::kLong));
  auto removed = at::empty({col_blocks}, boxes.options().dtype(at::kLong));
  auto keep = at::zeros({n}, boxes.options().dtype(at::kByte));
  const auto dtype = sorted.scalar_type() == at::kDouble ? cuda::kFloat64 : cuda::kFloat32;
  const cudaError_t err = cuda::nms_launch(
      dtype, sorted.const_data_ptr(), n, iou_threshold, static_cast<int>(offset),
      reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()),
      reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
      keep.mutable_data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "frcnn::nms (CUDA): ", cudaGetErrorString(err));
  return at::masked_select(order, keep.to(at::kBool));
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CUDA, m) { m.impl("nms", TORCH_FN(nms_cuda)); }

}  // namespace frcnn
