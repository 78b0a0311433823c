// RoIAlign (Mask R-CNN) on CPU, forward and backward.
// Semantics (those of torchvision / detectron2's ROIAlign): a RoI starts at x1 * scale (minus 0.5
// when aligned) and spans (x2 - x1) * scale, at least 1 when not aligned; each of the
// pooled_h x pooled_w bins averages grid_h x grid_w bilinear samples at the centres of a regular
// sub-grid (grid = sampling_ratio, or ceil(roi_size / pooled) when sampling_ratio <= 0). A
// sample outside [-1, H] x [-1, W] counts as 0 (it is still counted in the average); otherwise
// it is clamped to [0, H-1] x [0, W-1] before interpolation.
// Dtypes (docs: notes ROI_CONTRACT): coordinates in double for float64 rois, else in float;
// values accumulate in the features' dtype, in float for half / bfloat16.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace frcnn {

// Host-side RoI check shared by the CPU and CUDA roi_align (rois: CPU, [R, 5], float32/64).
// The first bad RoI in order decides the message.
void roi_align_check_rois_host(const at::Tensor& rois_cpu, int64_t batch_size, const char* op) {
  auto r = rois_cpu.to(at::kDouble).contiguous();
  const double* rd = r.const_data_ptr<double>();
  for (int64_t i = 0; i < r.size(0); ++i) {
    const double* roi = rd + i * 5;
    for (int k = 0; k < 5; ++k)
      TORCH_CHECK(std::isfinite(roi[k]), op, ": roi ", i, " has a non-finite coordinate");
    const double b = std::trunc(roi[0]);  // toward zero, as Caffe's int cast
    TORCH_CHECK(b >= 0 && b < static_cast<double>(batch_size), op, ": roi ", i,
                " has batch index ", roi[0], " outside [0, ", batch_size, ")");
  }
}

namespace {

// Where one RoI's samples lie. cd_t: coordinate type (float or double).
template <typename cd_t>
struct Geometry {
  int64_t b;
  cd_t start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;  // samples per bin along y / x (0: the bin is empty -> 0)
};

template <typename cd_t>
Geometry<cd_t> geometry(const cd_t* roi, cd_t scale, bool aligned, int64_t PH, int64_t PW,
                        int64_t sampling_ratio) {
  Geometry<cd_t> g;
  g.b = static_cast<int64_t>(roi[0]);
  const cd_t offset = aligned ? cd_t(0.5) : cd_t(0);
  g.start_w = roi[1] * scale - offset;
  g.start_h = roi[2] * scale - offset;
  const cd_t end_w = roi[3] * scale - offset;
  const cd_t end_h = roi[4] * scale - offset;
  cd_t roi_w = end_w - g.start_w, roi_h = end_h - g.start_h;
  if (!aligned) {  // legacy (Detectron) behaviour: a RoI is at least 1 x 1
    roi_w = std::max(roi_w, cd_t(1));
    roi_h = std::max(roi_h, cd_t(1));
  }
  g.bin_h = roi_h / static_cast<cd_t>(PH);
  g.bin_w = roi_w / static_cast<cd_t>(PW);
  if (sampling_ratio > 0) {
    g.grid_h = g.grid_w = static_cast<int>(sampling_ratio);
  } else {  // adaptive; an aligned RoI with x2 < x1 gets <= 0 samples -> empty bins
    g.grid_h = std::max(static_cast<int>(std::ceil(roi_h / static_cast<cd_t>(PH))), 0);
    g.grid_w = std::max(static_cast<int>(std::ceil(roi_w / static_cast<cd_t>(PW))), 0);
  }
  return g;
}

// One bilinear sample: 4 plane offsets (o[0] < 0: outside the map, contributes nothing) and
// their weights (top-left, top-right, bottom-left, bottom-right).
template <typename acc_t>
struct Sample {
  int32_t o[4];
  acc_t w[4];
};

template <typename cd_t, typename acc_t>
Sample<acc_t> bilinear(cd_t y, cd_t x, int H, int W) {
  Sample<acc_t> s;
  if (y < cd_t(-1) || y > static_cast<cd_t>(H) || x < cd_t(-1) || x > static_cast<cd_t>(W)) {
    s.o[0] = s.o[1] = s.o[2] = s.o[3] = -1;
    s.w[0] = s.w[1] = s.w[2] = s.w[3] = acc_t(0);
    return s;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y0 = static_cast<int>(y), x0 = static_cast<int>(x), y1, x1;
  if (y0 >= H - 1) {
    y0 = y1 = H - 1;
    y = static_cast<cd_t>(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= W - 1) {
    x0 = x1 = W - 1;
    x = static_cast<cd_t>(x0);
  } else {
    x1 = x0 + 1;
  }
  const cd_t ly = y - static_cast<cd_t>(y0), lx = x - static_cast<cd_t>(x0);
  const cd_t hy = cd_t(1) - ly, hx = cd_t(1) - lx;
  s.o[0] = y0 * W + x0;
  s.o[1] = y0 * W + x1;
  s.o[2] = y1 * W + x0;
  s.o[3] = y1 * W + x1;
  s.w[0] = static_cast<acc_t>(hy * hx);
  s.w[1] = static_cast<acc_t>(hy * lx);
  s.w[2] = static_cast<acc_t>(ly * hx);
  s.w[3] = static_cast<acc_t>(ly * lx);
  return s;
}

// All samples of one RoI, bin-major: [(ph * PW + pw) * grid_h * grid_w + iy * grid_w + ix].
// Computed once per RoI and shared by every channel.
template <typename cd_t, typename acc_t>
void fill_samples(const Geometry<cd_t>& g, int64_t PH, int64_t PW, int H, int W,
                  Sample<acc_t>* out) {
  const cd_t gh = static_cast<cd_t>(g.grid_h), gw = static_cast<cd_t>(g.grid_w);
  for (int64_t ph = 0; ph < PH; ++ph) {
    for (int64_t pw = 0; pw < PW; ++pw) {
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const cd_t y = g.start_h + static_cast<cd_t>(ph) * g.bin_h +
                       (static_cast<cd_t>(iy) + cd_t(0.5)) * g.bin_h / gh;
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const cd_t x = g.start_w + static_cast<cd_t>(pw) * g.bin_w +
                         (static_cast<cd_t>(ix) + cd_t(0.5)) * g.bin_w / gw;
          *out++ = bilinear<cd_t, acc_t>(y, x, H, W);
        }
      }
    }
  }
}

// Bin averages of N consecutive channel planes (plane stride HW) into out (stride P).
template <int64_t N, typename scalar_t, typename acc_t>
inline void bin_sums(const scalar_t* planes, int64_t HW, const Sample<acc_t>* s, int64_t P,
                     int64_t S, acc_t count, scalar_t* out) {
  for (int64_t p = 0; p < P; ++p) {
    acc_t val[N];
    for (int64_t j = 0; j < N; ++j) val[j] = acc_t(0);
    for (int64_t k = 0; k < S; ++k, ++s) {
      if (s->o[0] < 0) continue;
      const int64_t o0 = s->o[0], o1 = s->o[1], o2 = s->o[2], o3 = s->o[3];
      const acc_t w0 = s->w[0], w1 = s->w[1], w2 = s->w[2], w3 = s->w[3];
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t* plane = planes + j * HW;
        val[j] += w0 * static_cast<acc_t>(plane[o0]) + w1 * static_cast<acc_t>(plane[o1]) +
                  w2 * static_cast<acc_t>(plane[o2]) + w3 * static_cast<acc_t>(plane[o3]);
      }
    }
    for (int64_t j = 0; j < N; ++j) out[j * P + p] = static_cast<scalar_t>(val[j] / count);
  }
}

void check_args(const at::Tensor& x, const at::Tensor& rois, int64_t PH, int64_t PW,
                const char* op) {
  TORCH_CHECK(x.device().is_cpu() && rois.device().is_cpu(), op,
              " (CPU): features and rois must be CPU tensors");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got ", rois.sizes());
  const auto rt = rois.scalar_type();
  TORCH_CHECK(rt == at::kFloat || rt == at::kDouble ||
                  ((rt == at::kHalf || rt == at::kBFloat16) && rt == x.scalar_type()),
              op, ": rois must be float32 or float64 (or the features' dtype), got ", rt,
              " with ", x.scalar_type(), " features");
  TORCH_CHECK(PH > 0 && PW > 0, op, ": pooled size must be positive, got ", PH, " x ", PW);
}

// float64 rois keep double coordinates; float32 stay; half / bfloat16 rois (accepted with
// features of the same dtype, for compatibility) are read as float32, exactly.
at::Tensor coords(const at::Tensor& rois) {
  return rois.scalar_type() == at::kDouble ? rois.contiguous()
                                           : rois.to(at::kFloat).contiguous();
}

template <typename F>
void dispatch_coords(const at::Tensor& r, F&& f) {
  if (r.scalar_type() == at::kDouble)
    f(double(0));
  else
    f(float(0));
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                         bool aligned) {
  const char* op = "frcnn::roi_align";
  check_args(input, rois, pooled_height, pooled_width, op);
  TORCH_CHECK(input.dim() == 4, op, ": features must be [B, C, H, W], got ", input.sizes());
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t R = rois.size(0), PH = pooled_height, PW = pooled_width, P = PH * PW;
  TORCH_CHECK(H * W < (int64_t(1) << 31), op, ": feature map too large (H * W >= 2^31)");
  auto r = coords(rois);
  roi_align_check_rois_host(r, B, op);
  auto output = at::zeros({R, C, PH, PW}, input.options());
  if (R == 0 || C == 0 || H == 0 || W == 0) return output;
  auto x = input.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "frcnn_roi_align_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_coords(r, [&](auto cd_zero) {
      using cd_t = decltype(cd_zero);
      const scalar_t* xd = x.const_data_ptr<scalar_t>();
      const cd_t* rd = r.const_data_ptr<cd_t>();
      scalar_t* od = output.mutable_data_ptr<scalar_t>();
      const cd_t scale = static_cast<cd_t>(spatial_scale);
      // Parallel over RoIs: each computes its samples once, then runs over all channels.
      at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
        std::vector<Sample<acc_t>> samples;
        for (int64_t i = begin; i < end; ++i) {
          const auto g = geometry<cd_t>(rd + i * 5, scale, aligned, PH, PW, sampling_ratio);
          const int64_t S = int64_t(g.grid_h) * g.grid_w;
          if (S == 0) continue;  // output stays 0
          samples.resize(P * S);
          fill_samples<cd_t, acc_t>(g, PH, PW, static_cast<int>(H), static_cast<int>(W),
                                    samples.data());
          const acc_t count = static_cast<acc_t>(S);
          // kBlock channels at a time: each sample's offsets and weights are read once for
          // all of them, and the independent sums overlap. Per channel the additions are in
          // the same order as one channel at a time (results do not depend on the block).
          constexpr int64_t kBlock = 8;
          int64_t c = 0;
          for (; c + kBlock <= C; c += kBlock)
            bin_sums<kBlock>(xd + (g.b * C + c) * H * W, H * W, samples.data(), P, S, count,
                             od + (i * C + c) * P);
          for (; c < C; ++c)
            bin_sums<1>(xd + (g.b * C + c) * H * W, H * W, samples.data(), P, S, count,
                        od + (i * C + c) * P);
        }
      });
    });
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  const char* op = "frcnn::roi_align_backward";
  check_args(grad, rois, pooled_height, pooled_width, op);
  const int64_t R = rois.size(0), C = channels, H = height, W = width;
  const int64_t PH = pooled_height, PW = pooled_width, P = PH * PW;
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == R && grad.size(1) == C && grad.size(2) == PH &&
                  grad.size(3) == PW,
              op, ": grad must be [R, C, pooled_h, pooled_w] = [", R, ", ", C, ", ", PH, ", ", PW,
              "], got ", grad.sizes());
  TORCH_CHECK(H * W < (int64_t(1) << 31), op, ": feature map too large (H * W >= 2^31)");
  auto r = coords(rois);
  roi_align_check_rois_host(r, batch_size, op);
  // Half / bfloat16 gradients accumulate in float32, rounded once at the end.
  const bool low = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  auto acc = at::zeros({batch_size, C, H, W}, grad.options().dtype(low ? at::kFloat
                                                                      : grad.scalar_type()));
  if (R == 0 || C == 0 || H == 0 || W == 0) return low ? acc.to(grad.scalar_type()) : acc;
  auto g = grad.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(),
                                  "frcnn_roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_coords(r, [&](auto cd_zero) {
      using cd_t = decltype(cd_zero);
      const scalar_t* gd = g.const_data_ptr<scalar_t>();
      const cd_t* rd = r.const_data_ptr<cd_t>();
      acc_t* gi = acc.mutable_data_ptr<acc_t>();
      const cd_t scale = static_cast<cd_t>(spatial_scale);
      // Samples of every RoI once (parallel over RoIs), then parallel over channels: RoIs of
      // one image write the same planes, channels never do, and the fixed order of RoIs makes
      // the sums deterministic.
      std::vector<Geometry<cd_t>> geo(R);
      std::vector<int64_t> first(R + 1, 0);
      for (int64_t i = 0; i < R; ++i) {
        geo[i] = geometry<cd_t>(rd + i * 5, scale, aligned, PH, PW, sampling_ratio);
        first[i + 1] = first[i] + P * int64_t(geo[i].grid_h) * geo[i].grid_w;
      }
      std::vector<Sample<acc_t>> samples(first[R]);
      at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          fill_samples<cd_t, acc_t>(geo[i], PH, PW, static_cast<int>(H), static_cast<int>(W),
                                    samples.data() + first[i]);
      });
      at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          for (int64_t i = 0; i < R; ++i) {
            const int64_t S = int64_t(geo[i].grid_h) * geo[i].grid_w;
            if (S == 0) continue;
            const acc_t count = static_cast<acc_t>(S);
            acc_t* plane = gi + (geo[i].b * C + c) * H * W;
            const scalar_t* gp = gd + (i * C + c) * P;
            const Sample<acc_t>* s = samples.data() + first[i];
            for (int64_t p = 0; p < P; ++p) {
              const acc_t gv = static_cast<acc_t>(gp[p]) / count;
              for (int64_t k = 0; k < S; ++k, ++s) {
                if (s->o[0] < 0) continue;
                for (int q = 0; q < 4; ++q) plane[s->o[q]] += gv * s->w[q];
              }
            }
          }
        }
      });
    });
  });
  return low ? acc.to(grad.scalar_type()) : acc;
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_cpu));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cpu));
}

}  // namespace frcnn
