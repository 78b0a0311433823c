// RoIAlign on CUDA: one thread per output element (forward: its bin's bilinear samples) and per
// grad element (backward: atomics into the input gradient). Pure CUDA, no torch. Semantics and
// arithmetic order are those of the CPU kernel (csrc/cpu/roi_align_cpu.cpp), so with
// --fmad=false the forward results are bit-identical to it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math.h>

#include "roi_align_kernel.h"

namespace frcnn {
namespace cuda {
namespace {

// Values accumulate in AlignAcc<T> (float for half/bfloat16). Coordinates are in Co (the rois'
// float32 or float64), whatever the feature dtype (RoI contract).
template <typename T> struct AlignAcc { using type = T; };
template <> struct AlignAcc<__half> { using type = float; };
template <> struct AlignAcc<__nv_bfloat16> { using type = float; };

template <typename T> __device__ __forceinline__ typename AlignAcc<T>::type align_load(T v) {
  return v;
}
template <> __device__ __forceinline__ float align_load<__half>(__half v) {
  return __half2float(v);
}
template <> __device__ __forceinline__ float align_load<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T> __device__ __forceinline__ T align_store(typename AlignAcc<T>::type v) {
  return v;
}
template <> __device__ __forceinline__ __half align_store<__half>(float v) {
  return __float2half(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 align_store<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

__device__ __forceinline__ float align_ceil(float v) { return ceilf(v); }
__device__ __forceinline__ double align_ceil(double v) { return ceil(v); }

// One RoI's sampling grid, as in the CPU kernel's geometry().
template <typename Co>
struct AlignGeom {
  int64_t b;
  Co start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
};

template <typename Co>
__device__ __forceinline__ AlignGeom<Co> align_geometry(const Co* roi, Co scale, bool aligned,
                                                        int PH, int PW, int sampling_ratio) {
  AlignGeom<Co> g;
  g.b = static_cast<int64_t>(roi[0]);
  const Co offset = aligned ? Co(0.5) : Co(0);
  g.start_w = roi[1] * scale - offset;
  g.start_h = roi[2] * scale - offset;
  const Co end_w = roi[3] * scale - offset;
  const Co end_h = roi[4] * scale - offset;
  Co roi_w = end_w - g.start_w, roi_h = end_h - g.start_h;
  if (!aligned) {
    roi_w = roi_w > Co(1) ? roi_w : Co(1);
    roi_h = roi_h > Co(1) ? roi_h : Co(1);
  }
  g.bin_h = roi_h / static_cast<Co>(PH);
  g.bin_w = roi_w / static_cast<Co>(PW);
  if (sampling_ratio > 0) {
    g.grid_h = g.grid_w = sampling_ratio;
  } else {
    const int gh = static_cast<int>(align_ceil(roi_h / static_cast<Co>(PH)));
    const int gw = static_cast<int>(align_ceil(roi_w / static_cast<Co>(PW)));
    g.grid_h = gh > 0 ? gh : 0;
    g.grid_w = gw > 0 ? gw : 0;
  }
  return g;
}

// Bilinear corners (plane offsets) and weights of the sample at (y, x); false: outside the map.
template <typename Co, typename A>
__device__ __forceinline__ bool align_bilinear(Co y, Co x, int H, int W, int64_t o[4], A w[4]) {
  if (y < Co(-1) || y > static_cast<Co>(H) || x < Co(-1) || x > static_cast<Co>(W)) return false;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y0 = static_cast<int>(y), x0 = static_cast<int>(x), y1, x1;
  if (y0 >= H - 1) {
    y0 = y1 = H - 1;
    y = static_cast<Co>(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= W - 1) {
    x0 = x1 = W - 1;
    x = static_cast<Co>(x0);
  } else {
    x1 = x0 + 1;
  }
  const Co ly = y - static_cast<Co>(y0), lx = x - static_cast<Co>(x0);
  const Co hy = Co(1) - ly, hx = Co(1) - lx;
  o[0] = static_cast<int64_t>(y0) * W + x0;
  o[1] = static_cast<int64_t>(y0) * W + x1;
  o[2] = static_cast<int64_t>(y1) * W + x0;
  o[3] = static_cast<int64_t>(y1) * W + x1;
  w[0] = static_cast<A>(hy * hx);
  w[1] = static_cast<A>(hy * lx);
  w[2] = static_cast<A>(ly * hx);
  w[3] = static_cast<A>(ly * lx);
  return true;
}

template <typename Co>
__device__ __forceinline__ Co align_sample_y(const AlignGeom<Co>& g, int ph, int iy) {
  return g.start_h + static_cast<Co>(ph) * g.bin_h +
         (static_cast<Co>(iy) + Co(0.5)) * g.bin_h / static_cast<Co>(g.grid_h);
}
template <typename Co>
__device__ __forceinline__ Co align_sample_x(const AlignGeom<Co>& g, int pw, int ix) {
  return g.start_w + static_cast<Co>(pw) * g.bin_w +
         (static_cast<Co>(ix) + Co(0.5)) * g.bin_w / static_cast<Co>(g.grid_w);
}

template <typename T, typename Co>
__global__ void roi_align_forward_kernel(int64_t total, const T* __restrict__ input,
                                         const Co* __restrict__ rois, int C, int H, int W, int PH,
                                         int PW, Co scale, int sampling_ratio, bool aligned,
                                         T* __restrict__ output) {
  using A = typename AlignAcc<T>::type;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = idx % PW;
    const int ph = (idx / PW) % PH;
    const int c = (idx / PW / PH) % C;
    const int64_t r = idx / PW / PH / C;
    const AlignGeom<Co> g = align_geometry<Co>(rois + r * 5, scale, aligned, PH, PW,
                                               sampling_ratio);
    const T* plane = input + (g.b * C + c) * static_cast<int64_t>(H) * W;
    A val = 0;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const Co y = align_sample_y(g, ph, iy);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        int64_t o[4];
        A w[4];
        if (!align_bilinear<Co, A>(y, align_sample_x(g, pw, ix), H, W, o, w)) continue;
        val += w[0] * align_load(plane[o[0]]) + w[1] * align_load(plane[o[1]]) +
               w[2] * align_load(plane[o[2]]) + w[3] * align_load(plane[o[3]]);
      }
    }
    const int count = g.grid_h * g.grid_w;
    output[idx] = align_store<T>(count > 0 ? val / static_cast<A>(count) : A(0));
  }
}

template <typename T, typename Co, typename G>
__global__ void roi_align_backward_kernel(int64_t total, const T* __restrict__ grad,
                                          const Co* __restrict__ rois, int C, int H, int W,
                                          int PH, int PW, Co scale, int sampling_ratio,
                                          bool aligned, G* __restrict__ grad_input) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = idx % PW;
    const int ph = (idx / PW) % PH;
    const int c = (idx / PW / PH) % C;
    const int64_t r = idx / PW / PH / C;
    const AlignGeom<Co> g = align_geometry<Co>(rois + r * 5, scale, aligned, PH, PW,
                                               sampling_ratio);
    const int count = g.grid_h * g.grid_w;
    if (count <= 0) continue;
    G* plane = grad_input + (g.b * C + c) * static_cast<int64_t>(H) * W;
    const G gv = static_cast<G>(align_load(grad[idx])) / static_cast<G>(count);
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const Co y = align_sample_y(g, ph, iy);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        int64_t o[4];
        G w[4];
        if (!align_bilinear<Co, G>(y, align_sample_x(g, pw, ix), H, W, o, w)) continue;
        for (int q = 0; q < 4; ++q) atomicAdd(plane + o[q], gv * w[q]);
      }
    }
  }
}

inline int align_blocks_for(int64_t total, int threads) {
  const int64_t want = (total + threads - 1) / threads;
  return static_cast<int>(want < 65536 ? want : 65536);  // grid-stride loops cover the rest
}

template <typename T, typename Co>
cudaError_t forward_impl(const void* input, const void* rois, int64_t R, int64_t C, int64_t H,
                         int64_t W, int64_t PH, int64_t PW, double scale, int64_t sampling_ratio,
                         bool aligned, void* output, cudaStream_t stream) {
  const int64_t total = R * C * PH * PW;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  FRCNN_LAUNCH(align_blocks_for(total, threads), threads, 0, stream,
               roi_align_forward_kernel<T, Co>)(
      total, static_cast<const T*>(input), static_cast<const Co*>(rois), static_cast<int>(C),
      static_cast<int>(H), static_cast<int>(W), static_cast<int>(PH), static_cast<int>(PW),
      static_cast<Co>(scale), static_cast<int>(sampling_ratio), aligned, static_cast<T*>(output));
  return cudaGetLastError();
}

template <typename T, typename Co, typename G>
cudaError_t backward_impl(const void* grad, const void* rois, int64_t R, int64_t C, int64_t H,
                          int64_t W, int64_t PH, int64_t PW, double scale, int64_t sampling_ratio,
                          bool aligned, void* grad_input, cudaStream_t stream) {
  const int64_t total = R * C * PH * PW;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  FRCNN_LAUNCH(align_blocks_for(total, threads), threads, 0, stream,
               roi_align_backward_kernel<T, Co, G>)(
      total, static_cast<const T*>(grad), static_cast<const Co*>(rois), static_cast<int>(C),
      static_cast<int>(H), static_cast<int>(W), static_cast<int>(PH), static_cast<int>(PW),
      static_cast<Co>(scale), static_cast<int>(sampling_ratio), aligned,
      static_cast<G*>(grad_input));
  return cudaGetLastError();
}

template <typename Co>
cudaError_t forward_dtype(Dtype dtype, const void* input, const void* rois, int64_t R, int64_t C,
                          int64_t H, int64_t W, int64_t PH, int64_t PW, double scale,
                          int64_t sr, bool aligned, void* output, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32:
      return forward_impl<float, Co>(input, rois, R, C, H, W, PH, PW, scale, sr, aligned, output,
                                     stream);
    case kFloat64:
      return forward_impl<double, Co>(input, rois, R, C, H, W, PH, PW, scale, sr, aligned,
                                      output, stream);
    case kFloat16:
      return forward_impl<__half, Co>(input, rois, R, C, H, W, PH, PW, scale, sr, aligned,
                                      output, stream);
    case kBFloat16:
      return forward_impl<__nv_bfloat16, Co>(input, rois, R, C, H, W, PH, PW, scale, sr, aligned,
                                             output, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename Co>
cudaError_t backward_dtype(Dtype dtype, const void* grad, const void* rois, int64_t R, int64_t C,
                           int64_t H, int64_t W, int64_t PH, int64_t PW, double scale,
                           int64_t sr, bool aligned, void* grad_input, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32:
      return backward_impl<float, Co, float>(grad, rois, R, C, H, W, PH, PW, scale, sr, aligned,
                                             grad_input, stream);
    case kFloat64:
      return backward_impl<double, Co, double>(grad, rois, R, C, H, W, PH, PW, scale, sr,
                                               aligned, grad_input, stream);
    case kFloat16:
      return backward_impl<__half, Co, float>(grad, rois, R, C, H, W, PH, PW, scale, sr, aligned,
                                              grad_input, stream);
    case kBFloat16:
      return backward_impl<__nv_bfloat16, Co, float>(grad, rois, R, C, H, W, PH, PW, scale, sr,
                                                     aligned, grad_input, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t roi_align_forward_launch(Dtype dtype, Dtype roi_dtype, const void* input,
                                     const void* rois, int64_t R, int64_t C, int64_t H, int64_t W,
                                     int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                                     int64_t sampling_ratio, bool aligned, void* output,
                                     cudaStream_t stream) {
  if (roi_dtype == kFloat64)
    return forward_dtype<double>(dtype, input, rois, R, C, H, W, pooled_h, pooled_w,
                                 spatial_scale, sampling_ratio, aligned, output, stream);
  if (roi_dtype == kFloat32)
    return forward_dtype<float>(dtype, input, rois, R, C, H, W, pooled_h, pooled_w,
                                spatial_scale, sampling_ratio, aligned, output, stream);
  return cudaErrorInvalidValue;
}

cudaError_t roi_align_backward_launch(Dtype dtype, Dtype roi_dtype, const void* grad,
                                      const void* rois, int64_t R, int64_t C, int64_t H,
                                      int64_t W, int64_t pooled_h, int64_t pooled_w,
                                      double spatial_scale, int64_t sampling_ratio, bool aligned,
                                      void* grad_input, cudaStream_t stream) {
  if (roi_dtype == kFloat64)
    return backward_dtype<double>(dtype, grad, rois, R, C, H, W, pooled_h, pooled_w,
                                  spatial_scale, sampling_ratio, aligned, grad_input, stream);
  if (roi_dtype == kFloat32)
    return backward_dtype<float>(dtype, grad, rois, R, C, H, W, pooled_h, pooled_w,
                                 spatial_scale, sampling_ratio, aligned, grad_input, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace frcnn
