// Caffe RoI max pooling on CPU (forward and backward).
// Semantics (py-faster-rcnn's roi_pooling_layer): start = round(x1 * s) with C rounding (half away
// from zero), roi extent = max(end - start + 1, 1), bin = extent / pooled (float); bin p covers
// [floor(p * bin), ceil((p + 1) * bin)) + start clipped to the map; empty bin -> 0 with argmax -1;
// ties keep the first max in row-major order. The arithmetic is done in the input dtype, as Caffe.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace frcnn {
namespace {

struct Bin {
  int hstart, hend, wstart, wend;
};

// Bins of one RoI, [ph * pooled_w + pw]. Returns the batch index.
template <typename scalar_t>
int64_t roi_bins(const scalar_t* roi, scalar_t scale, int64_t ph_n, int64_t pw_n, int64_t height,
                 int64_t width, int64_t batch_size, Bin* bins) {
  const int64_t b = static_cast<int64_t>(roi[0]);  // truncation, as Caffe's int cast
  TORCH_CHECK(b >= 0 && b < batch_size, "frcnn::roi_pool: roi batch index ", roi[0],
              " is out of range [0, ", batch_size, ")");
  const int start_w = static_cast<int>(std::round(roi[1] * scale));
  const int start_h = static_cast<int>(std::round(roi[2] * scale));
  const int end_w = static_cast<int>(std::round(roi[3] * scale));
  const int end_h = static_cast<int>(std::round(roi[4] * scale));
  const int roi_w = std::max(end_w - start_w + 1, 1);
  const int roi_h = std::max(end_h - start_h + 1, 1);
  const scalar_t bin_h = static_cast<scalar_t>(roi_h) / static_cast<scalar_t>(ph_n);
  const scalar_t bin_w = static_cast<scalar_t>(roi_w) / static_cast<scalar_t>(pw_n);
  const int H = static_cast<int>(height), W = static_cast<int>(width);
  for (int64_t ph = 0; ph < ph_n; ++ph) {
    int hs = static_cast<int>(std::floor(static_cast<scalar_t>(ph) * bin_h));
    int he = static_cast<int>(std::ceil(static_cast<scalar_t>(ph + 1) * bin_h));
    hs = std::min(std::max(hs + start_h, 0), H);
    he = std::min(std::max(he + start_h, 0), H);
    for (int64_t pw = 0; pw < pw_n; ++pw) {
      int ws = static_cast<int>(std::floor(static_cast<scalar_t>(pw) * bin_w));
      int we = static_cast<int>(std::ceil(static_cast<scalar_t>(pw + 1) * bin_w));
      ws = std::min(std::max(ws + start_w, 0), W);
      we = std::min(std::max(we + start_w, 0), W);
      bins[ph * pw_n + pw] = Bin{hs, he, ws, we};
    }
  }
  return b;
}

void check_rois(const at::Tensor& input, const at::Tensor& rois, const char* name) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), name,
              " (CPU): input and rois must be CPU tensors");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, name,
              ": rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got ", rois.sizes());
  TORCH_CHECK(input.scalar_type() == rois.scalar_type(), name,
              ": input and rois must have the same dtype, got ", input.scalar_type(), " and ",
              rois.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_height,
                                                int64_t pooled_width) {
  check_rois(input, rois, "frcnn::roi_pool");
  TORCH_CHECK(input.dim() == 4, "frcnn::roi_pool: input must be [B, C, H, W], got ",
              input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "frcnn::roi_pool: pooled size must be positive");
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t R = rois.size(0), P = pooled_height * pooled_width;
  auto output = at::empty({R, C, pooled_height, pooled_width}, input.options());
  auto argmax = at::empty({R, C, pooled_height, pooled_width}, input.options().dtype(at::kInt));
  if (R == 0 || C == 0) return {output, argmax};
  auto x = input.contiguous();
  auto r = rois.contiguous();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "frcnn_roi_pool_cpu", [&] {
    const scalar_t scale = static_cast<scalar_t>(spatial_scale);
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    const scalar_t* rd = r.const_data_ptr<scalar_t>();
    scalar_t* od = output.mutable_data_ptr<scalar_t>();
    int32_t* ad = argmax.mutable_data_ptr<int32_t>();
    // Bins once per RoI (serial: cheap, and the batch-index check may throw).
    std::vector<Bin> bins(R * P);
    std::vector<int64_t> bidx(R);
    for (int64_t i = 0; i < R; ++i)
      bidx[i] = roi_bins<scalar_t>(rd + i * 5, scale, pooled_height, pooled_width, H, W, B,
                                   bins.data() + i * P);
    // Each (roi, channel) plane is independent.
    at::parallel_for(0, R * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t rc = begin; rc < end; ++rc) {
        const int64_t i = rc / C, c = rc % C;
        const scalar_t* plane = xd + (bidx[i] * C + c) * H * W;
        const Bin* bb = bins.data() + i * P;
        scalar_t* o = od + rc * P;
        int32_t* a = ad + rc * P;
        for (int64_t p = 0; p < P; ++p) {
          const Bin& bn = bb[p];
          scalar_t best = std::numeric_limits<scalar_t>::lowest();
          int32_t arg = -1;
          for (int h = bn.hstart; h < bn.hend; ++h) {
            const scalar_t* row = plane + h * W;
            for (int w = bn.wstart; w < bn.wend; ++w) {
              if (row[w] > best) {
                best = row[w];
                arg = static_cast<int32_t>(h * W + w);
              }
            }
          }
          const bool empty = bn.hend <= bn.hstart || bn.wend <= bn.wstart;
          o[p] = empty ? scalar_t(0) : best;
          a[p] = empty ? -1 : arg;
        }
      }
    });
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
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
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (R == 0 || channels == 0) return grad_input;
  auto g = grad.contiguous();
  auto a = argmax.contiguous();
  auto r = rois.contiguous();
  const int64_t P = pooled_height * pooled_width, HW = height * width, C = channels;

  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "frcnn_roi_pool_backward_cpu", [&] {
    const scalar_t* gd = g.const_data_ptr<scalar_t>();
    const int32_t* ad = a.const_data_ptr<int32_t>();
    const scalar_t* rd = r.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    std::vector<int64_t> bidx(R);
    for (int64_t i = 0; i < R; ++i) {
      bidx[i] = static_cast<int64_t>(rd[i * 5]);
      TORCH_CHECK(bidx[i] >= 0 && bidx[i] < batch_size, "frcnn::roi_pool_backward: roi batch ",
                  "index ", rd[i * 5], " is out of range [0, ", batch_size, ")");
    }
    // Parallel over channels: RoIs of one image write the same planes, channels never do.
    // The fixed RoI order also makes the sums deterministic.
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t i = 0; i < R; ++i) {
          scalar_t* plane = gi + (bidx[i] * C + c) * HW;
          const scalar_t* gp = gd + (i * C + c) * P;
          const int32_t* ap = ad + (i * C + c) * P;
          for (int64_t p = 0; p < P; ++p) {
            const int32_t k = ap[p];
            if (k >= 0 && k < HW) plane[k] += gp[p];
          }
        }
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CPU, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_cpu));
  m.impl("roi_pool_backward", TORCH_FN(roi_pool_backward_cpu));
}

}  // namespace frcnn
