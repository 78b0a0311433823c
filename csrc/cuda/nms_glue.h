// Host side of CUDA NMS, shared by the CUDA glue (nms_cuda.cpp) and the CUDA emulator's
// extension (csrc/emu/emu_ops.cpp), so the emulator tests exercise the same checks.
// Backend: kDevice (c10::DeviceType), kWhat ("CUDA"), stream(), check(err, op) (throws with
// the launch error), mask_budget(device) (bytes the mask may take).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "kernels.h"

namespace frcnn {
namespace glue {

template <typename Backend>
at::Tensor nms(const Backend& be, const at::Tensor& boxes, const at::Tensor& scores,
               double iou_threshold, int64_t offset, int64_t shared_limit) {
  TORCH_CHECK(boxes.device().type() == Backend::kDevice && boxes.device() == scores.device(),
              "frcnn::nms (", Backend::kWhat, "): boxes and scores must be on the same ",
              c10::DeviceTypeName(Backend::kDevice), " device, got ", boxes.device(), " and ",
              scores.device());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "frcnn::nms: boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "frcnn::nms: scores must be [N] with N = boxes.size(0), got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(),
              "frcnn::nms: boxes and scores must have the same dtype, got ", boxes.scalar_type(),
              " and ", scores.scalar_type());
  TORCH_CHECK(offset == 0 || offset == 1, "frcnn::nms: offset must be 0 or 1, got ", offset);
  const auto st = boxes.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "frcnn::nms (", Backend::kWhat, "): float32, float64, float16 or bfloat16 boxes, got ",
              st);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // Limits, checked before anything is allocated.
  const int64_t col_blocks = cuda::nms_col_blocks(n);
  TORCH_CHECK(col_blocks <= cuda::kMaxGridYZ, "frcnn::nms (", Backend::kWhat, "): ", n,
              " boxes need ", col_blocks, " blocks of ", cuda::kNmsBlock,
              " boxes, more than CUDA's grid.y limit of ", cuda::kMaxGridYZ, " (at most ",
              cuda::kNmsMaxBoxes, " boxes); keep the top-k scores first or run NMS on CPU");
  const int64_t mask_bytes = n * col_blocks * static_cast<int64_t>(sizeof(uint64_t));
  const int64_t budget = be.mask_budget(boxes.device());
  TORCH_CHECK(mask_bytes <= budget, "frcnn::nms (", Backend::kWhat, "): the suppression mask for ",
              n, " boxes takes ", mask_bytes, " bytes (N x ceil(N/64) x 8), more than the ",
              budget, " bytes of ", boxes.device(),
              "; keep the top-k scores first or run NMS on CPU");
  // Half/bfloat16 boxes are compared in float32 (exact conversion).
  const auto b = (st == at::kHalf || st == at::kBFloat16) ? boxes.to(at::kFloat) : boxes;
  auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto sorted = b.index_select(0, order).contiguous();
  auto mask = at::empty({n * col_blocks}, boxes.options().dtype(at::kLong));
  auto removed = at::empty({col_blocks}, boxes.options().dtype(at::kLong));
  auto keep = at::zeros({n}, boxes.options().dtype(at::kByte));
  const auto dtype = sorted.scalar_type() == at::kDouble ? cuda::kFloat64 : cuda::kFloat32;
  const cudaError_t err = cuda::nms_launch(
      dtype, sorted.const_data_ptr(), n, iou_threshold, static_cast<int>(offset),
      reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()),
      reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
      keep.mutable_data_ptr<uint8_t>(), be.stream(), shared_limit);
  be.check(err, "frcnn::nms");
  return at::masked_select(order, keep.to(at::kBool));
}

}  // namespace glue
}  // namespace frcnn
