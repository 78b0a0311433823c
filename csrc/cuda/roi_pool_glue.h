// Host side of CUDA RoI pooling, shared by the CUDA glue (roi_pool_cuda.cpp) and the CUDA
// emulator's extension (csrc/emu/emu_ops.cpp), so the emulator tests exercise the same checks.
// Implements the RoI contract (docs/DESIGN.md): features float32/float64/float16/bfloat16;
// rois float32 or float64 whatever the feature dtype (rois of the features' half dtype are
// accepted and read as float32); bad RoIs and argmax values are host-side errors found by one
// small reduction on the device and one synchronisation.
#pragma once
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels.h"

namespace frcnn {
namespace glue {

inline cuda::Dtype feature_dtype(const at::Tensor& t, const char* op, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::kFloat32;
    case at::kDouble: return cuda::kFloat64;
    case at::kHalf: return cuda::kFloat16;
    case at::kBFloat16: return cuda::kBFloat16;
    default:
      TORCH_CHECK(false, op, " (", what, "): features must be float32, float64, float16 or ",
                  "bfloat16, got ", t.scalar_type());
  }
}

// The rois in their coordinate type: float64 stays, float32 stays, half/bfloat16 rois (only
// with features of the same dtype) become float32.
inline at::Tensor coordinate_rois(const at::Tensor& rois, const at::Tensor& x, const char* op) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got ", rois.sizes());
  const auto rt = rois.scalar_type();
  if (rt == at::kFloat || rt == at::kDouble) return rois.contiguous();
  TORCH_CHECK((rt == at::kHalf || rt == at::kBFloat16) && rt == x.scalar_type(), op,
              ": rois must be float32 or float64 (or the features' dtype), got ", rt,
              " with ", x.scalar_type(), " features");
  return rois.to(at::kFloat).contiguous();
}

// Index of the first bad entry of `bad` ([N] bool), or N: one reduction, no sync.
inline at::Tensor first_true(const at::Tensor& bad) {
  const int64_t n = bad.size(0);
  auto idx = at::arange(n, bad.options().dtype(at::kLong));
  return at::where(bad, idx, at::full({}, n, idx.options())).min();
}

inline at::Tensor first_bad_roi(const at::Tensor& rois, int64_t batch_size) {
  auto finite = at::isfinite(rois).all(1);
  auto b = rois.select(1, 0).trunc();  // Caffe's int cast truncates toward zero
  return first_true(finite.logical_not().logical_or(b.lt(0)).logical_or(b.ge(batch_size)));
}

[[noreturn]] inline void throw_bad_roi(const at::Tensor& rois, int64_t i, int64_t batch_size,
                                       const char* op) {
  auto row = rois.select(0, i).to(at::kCPU, at::kDouble).contiguous();
  const double* v = row.const_data_ptr<double>();
  for (int k = 0; k < 5; ++k)
    TORCH_CHECK(std::isfinite(v[k]), op, ": roi ", i, " has a non-finite coordinate");
  TORCH_CHECK(false, op, ": roi ", i, " has batch index ", v[0], " outside [0, ", batch_size,
              ")");
}

// Throws the contract's error for the first bad RoI (one reduction + one sync).
inline void check_rois(const at::Tensor& rois, int64_t batch_size, const char* op) {
  if (rois.size(0) == 0) return;
  const int64_t first = first_bad_roi(rois, batch_size).item<int64_t>();
  if (first < rois.size(0)) throw_bad_roi(rois, first, batch_size, op);
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> roi_pool_forward(const Backend& be, const at::Tensor& input,
                                                     const at::Tensor& rois, double spatial_scale,
                                                     int64_t pooled_height, int64_t pooled_width) {
  const char* op = "frcnn::roi_pool";
  TORCH_CHECK(input.device().type() == Backend::kDevice && rois.device() == input.device(), op,
              " (", Backend::kWhat, "): input and rois must be on the same ",
              c10::DeviceTypeName(Backend::kDevice), " device, got ", input.device(), " and ",
              rois.device());
  TORCH_CHECK(input.dim() == 4, op, ": input must be [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": pooled size must be positive");
  const auto dtype = feature_dtype(input, op, Backend::kWhat);
  auto r = coordinate_rois(rois, input, op);
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t R = r.size(0);
  check_rois(r, B, op);
  auto output = at::empty({R, C, pooled_height, pooled_width}, input.options());
  auto argmax = at::empty({R, C, pooled_height, pooled_width}, input.options().dtype(at::kInt));
  if (output.numel() == 0) return {output, argmax};
  auto x = input.contiguous();
  const cudaError_t err = cuda::roi_pool_forward_launch(
      dtype, r.scalar_type() == at::kDouble ? cuda::kFloat64 : cuda::kFloat32, x.const_data_ptr(),
      r.const_data_ptr(), R, C, H, W, pooled_height, pooled_width, spatial_scale,
      output.mutable_data_ptr(), argmax.mutable_data_ptr<int32_t>(), be.stream());
  be.check(err, op);
  return {output, argmax};
}

template <typename Backend>
at::Tensor roi_pool_backward(const Backend& be, const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double /*spatial_scale*/,
                             int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                             int64_t channels, int64_t height, int64_t width) {
  const char* op = "frcnn::roi_pool_backward";
  // A CPU argmax or rois would hand the kernel a host pointer.
  TORCH_CHECK(grad.device().type() == Backend::kDevice && rois.device() == grad.device() &&
                  argmax.device() == grad.device(),
              op, " (", Backend::kWhat, "): grad, rois and argmax must be on the same ",
              c10::DeviceTypeName(Backend::kDevice), " device, got ", grad.device(), ", ",
              rois.device(), " and ", argmax.device());
  const auto dtype = feature_dtype(grad, op, Backend::kWhat);
  auto r = coordinate_rois(rois, grad, op);
  const int64_t R = r.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == R && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must be [R, C, pooled_h, pooled_w] = [", R, ", ", channels, ", ",
              pooled_height, ", ", pooled_width, "], got ", grad.sizes());
  TORCH_CHECK(argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt, op,
              ": argmax must be int32 with the shape of grad, got ", argmax.scalar_type(), " ",
              argmax.sizes());
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": negative input size");
  const int64_t HW = height * width;
  auto a = argmax.contiguous();
  if (a.numel() > 0) {
    // One reduction per check, one sync for both.
    auto flat = a.view({-1});
    at::Tensor bad_arg = first_true(flat.lt(-1).logical_or(flat.ge(HW)));
    at::Tensor bad_roi = R > 0 ? first_bad_roi(r, batch_size) : bad_arg.new_zeros({});
    std::vector<at::Tensor> both;
    both.push_back(bad_roi);
    both.push_back(bad_arg);
    auto firsts = at::stack(both).to(at::kCPU);
    const int64_t* f = firsts.const_data_ptr<int64_t>();
    if (f[0] < R) throw_bad_roi(r, f[0], batch_size, op);
    if (f[1] < flat.size(0)) {
      const int64_t v = flat.select(0, f[1]).item<int64_t>();
      TORCH_CHECK(false, op, ": argmax value ", v, " at flat index ", f[1], " is outside [-1, ",
                  HW, ") (H * W = ", height, " * ", width, ")");
    }
  }
  // The kernel adds with atomics: the summation order varies from run to run.
  at::globalContext().alertNotDeterministic("frcnn::roi_pool_backward (CUDA)");
  // Half/bfloat16 gradients accumulate in float32, then round once.
  const bool low = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  auto acc = at::zeros({batch_size, channels, height, width},
                       grad.options().dtype(low ? at::kFloat : grad.scalar_type()));
  if (grad.numel() > 0 && HW > 0) {
    auto g = grad.contiguous();
    const cudaError_t err = cuda::roi_pool_backward_launch(
        dtype, r.scalar_type() == at::kDouble ? cuda::kFloat64 : cuda::kFloat32,
        g.const_data_ptr(), r.const_data_ptr(), a.const_data_ptr<int32_t>(), R, channels, height,
        width, pooled_height, pooled_width, acc.mutable_data_ptr(), be.stream());
    be.check(err, op);
  }
  return low ? acc.to(grad.scalar_type()) : acc;
}

}  // namespace glue
}  // namespace frcnn
