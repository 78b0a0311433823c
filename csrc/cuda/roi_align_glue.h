// Host side of CUDA RoIAlign, written once for a Backend (glue::CudaBackend in
// roi_align_cuda.cpp, the CUDA emulator's EmuBackend in csrc/emu/emu_ops.cpp): RoI contract
// checks (shared with RoI pooling, roi_pool_glue.h), dtypes, output allocation, launches.
// RoI contract: features float32/float64/float16/bfloat16; rois float32 or float64 whatever the
// feature dtype (rois of the features' half dtype are read as float32); a bad batch index or a
// non-finite coordinate is the same host-side error as on CPU, found by one small reduction on
// the device and one synchronisation.
#pragma once
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "roi_align_kernel.h"
#include "roi_pool_glue.h"

namespace frcnn {
namespace glue {

inline cuda::Dtype align_roi_dtype(const at::Tensor& r) {
  return r.scalar_type() == at::kDouble ? cuda::kFloat64 : cuda::kFloat32;
}

template <typename Backend>
at::Tensor roi_align_forward(const Backend& be, const at::Tensor& input, const at::Tensor& rois,
                             double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                             int64_t sampling_ratio, bool aligned) {
  const char* op = "frcnn::roi_align";
  TORCH_CHECK(input.device().type() == Backend::kDevice && rois.device() == input.device(), op,
              " (", Backend::kWhat, "): features and rois must be on the same device, got ",
              input.device(), " and ", rois.device());
  TORCH_CHECK(input.dim() == 4, op, ": features must be [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": pooled size must be positive, got ",
              pooled_height, " x ", pooled_width);
  const auto dtype = feature_dtype(input, op, Backend::kWhat);
  auto r = coordinate_rois(rois, input, op);
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t R = r.size(0);
  check_rois(r, B, op);
  auto output = at::zeros({R, C, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0 || H == 0 || W == 0) return output;
  auto x = input.contiguous();
  be.check(cuda::roi_align_forward_launch(dtype, align_roi_dtype(r), x.const_data_ptr(),
                                          r.const_data_ptr(), R, C, H, W, pooled_height,
                                          pooled_width, spatial_scale, sampling_ratio, aligned,
                                          output.mutable_data_ptr(), be.stream()),
           op);
  return output;
}

template <typename Backend>
at::Tensor roi_align_backward(const Backend& be, const at::Tensor& grad, const at::Tensor& rois,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                              int64_t batch_size, int64_t channels, int64_t height,
                              int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "frcnn::roi_align_backward";
  TORCH_CHECK(grad.device().type() == Backend::kDevice && rois.device() == grad.device(), op,
              " (", Backend::kWhat, "): grad and rois must be on the same device, got ",
              grad.device(), " and ", rois.device());
  const auto dtype = feature_dtype(grad, op, Backend::kWhat);
  auto r = coordinate_rois(rois, grad, op);
  const int64_t R = r.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == R && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must be [R, C, pooled_h, pooled_w] = [", R, ", ", channels, ", ",
              pooled_height, ", ", pooled_width, "], got ", grad.sizes());
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": negative input size");
  check_rois(r, batch_size, op);
  // The kernel adds with atomics: the summation order varies from run to run.
  at::globalContext().alertNotDeterministic("frcnn::roi_align_backward (CUDA)");
  // Half/bfloat16 gradients accumulate in float32, then round once.
  const bool low = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  auto acc = at::zeros({batch_size, channels, height, width},
                       grad.options().dtype(low ? at::kFloat : grad.scalar_type()));
  if (grad.numel() > 0 && height * width > 0) {
    auto g = grad.contiguous();
    be.check(cuda::roi_align_backward_launch(dtype, align_roi_dtype(r), g.const_data_ptr(),
                                             r.const_data_ptr(), R, channels, height, width,
                                             pooled_height, pooled_width, spatial_scale,
                                             sampling_ratio, aligned, acc.mutable_data_ptr(),
                                             be.stream()),
             op);
  }
  return low ? acc.to(grad.scalar_type()) : acc;
}

}  // namespace glue
}  // namespace frcnn
