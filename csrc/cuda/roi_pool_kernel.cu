// Caffe RoI max pooling on CUDA: one thread per output element (forward) and per grad element
// (backward, atomics into the input gradient). Pure CUDA, no torch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "kernels.h"

namespace frcnn {
namespace cuda {
namespace {

// Values are compared in Acc<T> (float for half/bfloat16). The coordinate arithmetic is done
// in the RoIs' type C (float32 or float64), whatever the feature dtype (docs: RoI contract).
template <typename T> struct Acc { using type = T; };
template <> struct Acc<__half> { using type = float; };
template <> struct Acc<__nv_bfloat16> { using type = float; };

__device__ __forceinline__ float c_round(float v) { return roundf(v); }  // half away from zero
__device__ __forceinline__ double c_round(double v) { return round(v); }
__device__ __forceinline__ float c_floor(float v) { return floorf(v); }
__device__ __forceinline__ double c_floor(double v) { return floor(v); }
__device__ __forceinline__ float c_ceil(float v) { return ceilf(v); }
__device__ __forceinline__ double c_ceil(double v) { return ceil(v); }
__device__ __forceinline__ float lowest(float) { return -FLT_MAX; }
__device__ __forceinline__ double lowest(double) { return -DBL_MAX; }

template <typename T> __device__ __forceinline__ typename Acc<T>::type to_acc(T v) { return v; }
template <> __device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T> __device__ __forceinline__ T from_acc(typename Acc<T>::type v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

template <typename T, typename Co>
__global__ void roi_pool_forward_kernel(int64_t total, const T* __restrict__ input,
                                        const Co* __restrict__ rois, int C, int H, int W, int PH,
                                        int PW, Co scale, T* __restrict__ output,
                                        int32_t* __restrict__ argmax) {
  using A = typename Acc<T>::type;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int pw = idx % PW;
    const int ph = (idx / PW) % PH;
    const int c = (idx / PW / PH) % C;
    const int64_t r = idx / PW / PH / C;
    const Co* roi = rois + r * 5;
    const int64_t b = static_cast<int64_t>(roi[0]);  // truncation, as Caffe's int cast
    const int start_w = static_cast<int>(c_round(roi[1] * scale));
    const int start_h = static_cast<int>(c_round(roi[2] * scale));
    const int end_w = static_cast<int>(c_round(roi[3] * scale));
    const int end_h = static_cast<int>(c_round(roi[4] * scale));
    const int roi_w = max(end_w - start_w + 1, 1);
    const int roi_h = max(end_h - start_h + 1, 1);
    const Co bin_h = static_cast<Co>(roi_h) / static_cast<Co>(PH);
    const Co bin_w = static_cast<Co>(roi_w) / static_cast<Co>(PW);
    int hs = static_cast<int>(c_floor(static_cast<Co>(ph) * bin_h));
    int ws = static_cast<int>(c_floor(static_cast<Co>(pw) * bin_w));
    int he = static_cast<int>(c_ceil(static_cast<Co>(ph + 1) * bin_h));
    int we = static_cast<int>(c_ceil(static_cast<Co>(pw + 1) * bin_w));
    hs = min(max(hs + start_h, 0), H);
    he = min(max(he + start_h, 0), H);
    ws = min(max(ws + start_w, 0), W);
    we = min(max(we + start_w, 0), W);
    const bool empty = he <= hs || we <= ws;
    A best = lowest(A(0));
    int32_t arg = -1;
    const T* plane = input + (b * C + c) * static_cast<int64_t>(H) * W;
    for (int h = hs; h < he; ++h) {
      for (int w = ws; w < we; ++w) {
        const A v = to_acc(plane[h * W + w]);
        if (v > best) {  // strict: the first max in row-major order wins
          best = v;
          arg = h * W + w;
        }
      }
    }
    output[idx] = from_acc<T>(empty ? A(0) : best);
    argmax[idx] = empty ? -1 : arg;
  }
}

template <typename T, typename G, typename Co>
__global__ void roi_pool_backward_kernel(int64_t total, const T* __restrict__ grad,
                                         const Co* __restrict__ rois,
                                         const int32_t* __restrict__ argmax, int C, int H, int W,
                                         int PH, int PW, G* __restrict__ grad_input) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int32_t a = argmax[idx];
    if (a < 0) continue;
    const int c = (idx / PW / PH) % C;
    const int64_t r = idx / PW / PH / C;
    const int64_t b = static_cast<int64_t>(rois[r * 5]);
    atomicAdd(grad_input + (b * C + c) * static_cast<int64_t>(H) * W + a,
              static_cast<G>(to_acc(grad[idx])));
  }
}

inline int blocks_for(int64_t total, int threads) {
  const int64_t want = (total + threads - 1) / threads;
  return static_cast<int>(want < 65536 ? want : 65536);  // grid-stride loops cover the rest
}

template <typename T, typename Co>
cudaError_t forward_impl(const void* input, const void* rois, int64_t R, int64_t C, int64_t H,
                         int64_t W, int64_t PH, int64_t PW, double scale, void* output,
                         int32_t* argmax, cudaStream_t stream) {
  const int64_t total = R * C * PH * PW;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  FRCNN_LAUNCH(blocks_for(total, threads), threads, 0, stream, roi_pool_forward_kernel<T, Co>)(
      total, static_cast<const T*>(input), static_cast<const Co*>(rois), static_cast<int>(C),
      static_cast<int>(H), static_cast<int>(W), static_cast<int>(PH), static_cast<int>(PW),
      static_cast<Co>(scale), static_cast<T*>(output), argmax);
  return cudaGetLastError();
}

template <typename T, typename G, typename Co>
cudaError_t backward_impl(const void* grad, const void* rois, const int32_t* argmax, int64_t R,
                          int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                          void* grad_input, cudaStream_t stream) {
  const int64_t total = R * C * PH * PW;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  FRCNN_LAUNCH(blocks_for(total, threads), threads, 0, stream,
               roi_pool_backward_kernel<T, G, Co>)(
      total, static_cast<const T*>(grad), static_cast<const Co*>(rois), argmax,
      static_cast<int>(C), static_cast<int>(H), static_cast<int>(W), static_cast<int>(PH),
      static_cast<int>(PW), static_cast<G*>(grad_input));
  return cudaGetLastError();
}

template <typename Co>
cudaError_t forward_dtype(Dtype dtype, const void* input, const void* rois, int64_t R, int64_t C,
                          int64_t H, int64_t W, int64_t PH, int64_t PW, double scale,
                          void* output, int32_t* argmax, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32:
      return forward_impl<float, Co>(input, rois, R, C, H, W, PH, PW, scale, output, argmax,
                                     stream);
    case kFloat64:
      return forward_impl<double, Co>(input, rois, R, C, H, W, PH, PW, scale, output, argmax,
                                      stream);
    case kFloat16:
      return forward_impl<__half, Co>(input, rois, R, C, H, W, PH, PW, scale, output, argmax,
                                      stream);
    case kBFloat16:
      return forward_impl<__nv_bfloat16, Co>(input, rois, R, C, H, W, PH, PW, scale, output,
                                             argmax, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename Co>
cudaError_t backward_dtype(Dtype dtype, const void* grad, const void* rois, const int32_t* argmax,
                           int64_t R, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                           void* grad_input, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32:
      return backward_impl<float, float, Co>(grad, rois, argmax, R, C, H, W, PH, PW, grad_input,
                                             stream);
    case kFloat64:
      return backward_impl<double, double, Co>(grad, rois, argmax, R, C, H, W, PH, PW,
                                               grad_input, stream);
    case kFloat16:
      return backward_impl<__half, float, Co>(grad, rois, argmax, R, C, H, W, PH, PW, grad_input,
                                              stream);
    case kBFloat16:
      return backward_impl<__nv_bfloat16, float, Co>(grad, rois, argmax, R, C, H, W, PH, PW,
                                                     grad_input, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t roi_pool_forward_launch(Dtype dtype, Dtype roi_dtype, const void* input,
                                    const void* rois, int64_t R, int64_t C, int64_t H, int64_t W,
                                    int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                                    void* output, int32_t* argmax, cudaStream_t stream) {
  if (roi_dtype == kFloat32)
    return forward_dtype<float>(dtype, input, rois, R, C, H, W, pooled_h, pooled_w, spatial_scale,
                                output, argmax, stream);
  if (roi_dtype == kFloat64)
    return forward_dtype<double>(dtype, input, rois, R, C, H, W, pooled_h, pooled_w,
                                 spatial_scale, output, argmax, stream);
  return cudaErrorInvalidValue;
}

cudaError_t roi_pool_backward_launch(Dtype dtype, Dtype roi_dtype, const void* grad,
                                     const void* rois, const int32_t* argmax, int64_t R,
                                     int64_t C, int64_t H, int64_t W, int64_t pooled_h,
                                     int64_t pooled_w, void* grad_input, cudaStream_t stream) {
  if (roi_dtype == kFloat32)
    return backward_dtype<float>(dtype, grad, rois, argmax, R, C, H, W, pooled_h, pooled_w,
                                 grad_input, stream);
  if (roi_dtype == kFloat64)
    return backward_dtype<double>(dtype, grad, rois, argmax, R, C, H, W, pooled_h, pooled_w,
                                  grad_input, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace frcnn
