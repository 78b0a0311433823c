// Caffe RoI max pooling on CPU (forward and backward).
// Semantics (py-faster-rcnn's roi_pooling_layer): start = round(x1 * s) with C rounding (half away
// from zero), roi extent = max(end - start + 1, 1), bin = extent / pooled (float); bin p covers
// [floor(p * bin), ceil((p + 1) * bin)) + start clipped to the map; empty bin -> 0 with argmax -1;
// ties keep the first max in row-major order. A bin whose values are all NaN (NaN never compares
// greater) outputs the dtype's lowest value with argmax -1, as the plane-walking kernel did.
//
// The RoI contract shared with the CUDA kernels: features float32/float64/bfloat16/float16, rois
// float32 or float64 whatever the features' dtype (rois of a reduced feature dtype are upcast to
// float32); bin arithmetic in double for float64 rois, else float32. Bad RoIs throw before any
// work. Backward: gradients of half/bf16 accumulate in float32; argmax outside [-1, H*W) throws.
//
// Speed: the forward reads a channels-last copy of the map, so each bin's pixels are read once
// for a block of 32 channels held in AVX2 registers (compare + blend keeps the first max and
// ignores NaN exactly as `v > best`); the result is transposed per block into [C, ph, pw].
// The AVX2 path is picked at run time (no -march flags); other CPUs and float64 take a scalar
// loop over the same layout. The backward accumulates blocks of channel planes that stay in
// cache, in the fixed RoI order, so sums are deterministic and equal to the plane-walking order.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FRCNN_X86_DISPATCH 1
#else
#define FRCNN_X86_DISPATCH 0
#endif

namespace frcnn {
namespace {

struct Bin {
  int hstart, hend, wstart, wend;
};

// Bins of one RoI, [ph * pooled_w + pw], in the coordinate type coord_t (float or double).
template <typename coord_t>
void roi_bins(const coord_t* roi, coord_t scale, int64_t ph_n, int64_t pw_n, int64_t height,
              int64_t width, Bin* bins) {
  const int start_w = static_cast<int>(std::round(roi[1] * scale));
  const int start_h = static_cast<int>(std::round(roi[2] * scale));
  const int end_w = static_cast<int>(std::round(roi[3] * scale));
  const int end_h = static_cast<int>(std::round(roi[4] * scale));
  const int roi_w = std::max(end_w - start_w + 1, 1);
  const int roi_h = std::max(end_h - start_h + 1, 1);
  const coord_t bin_h = static_cast<coord_t>(roi_h) / static_cast<coord_t>(ph_n);
  const coord_t bin_w = static_cast<coord_t>(roi_w) / static_cast<coord_t>(pw_n);
  const int H = static_cast<int>(height), W = static_cast<int>(width);
  for (int64_t ph = 0; ph < ph_n; ++ph) {
    int hs = static_cast<int>(std::floor(static_cast<coord_t>(ph) * bin_h));
    int he = static_cast<int>(std::ceil(static_cast<coord_t>(ph + 1) * bin_h));
    hs = std::min(std::max(hs + start_h, 0), H);
    he = std::min(std::max(he + start_h, 0), H);
    for (int64_t pw = 0; pw < pw_n; ++pw) {
      int ws = static_cast<int>(std::floor(static_cast<coord_t>(pw) * bin_w));
      int we = static_cast<int>(std::ceil(static_cast<coord_t>(pw + 1) * bin_w));
      ws = std::min(std::max(ws + start_w, 0), W);
      we = std::min(std::max(we + start_w, 0), W);
      bins[ph * pw_n + pw] = Bin{hs, he, ws, we};
    }
  }
}

// The RoI contract's host-side check (identical messages on CPU and CUDA). Returns the batch
// index of each RoI (truncated toward zero, as Caffe's int cast).
template <typename coord_t>
std::vector<int64_t> checked_batch_indices(const coord_t* rd, int64_t R, int64_t batch_size,
                                           const char* op) {
  std::vector<int64_t> bidx(R);
  for (int64_t i = 0; i < R; ++i) {
    const coord_t* roi = rd + i * 5;
    for (int k = 0; k < 5; ++k)
      TORCH_CHECK(std::isfinite(static_cast<double>(roi[k])), op, ": roi ", i,
                  " has a non-finite coordinate");
    const double b = std::trunc(static_cast<double>(roi[0]));
    TORCH_CHECK(b >= 0 && b < static_cast<double>(batch_size), op, ": roi ", i,
                " has batch index ", roi[0], " outside [0, ", batch_size, ")");
    bidx[i] = static_cast<int64_t>(b);
  }
  return bidx;
}

// rois as float32 (from float32/half/bf16) or float64, contiguous.
at::Tensor coord_rois(const at::Tensor& rois, const char* op) {
  TORCH_CHECK(rois.device().is_cpu(), op, " (CPU): rois must be a CPU tensor");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got ", rois.sizes());
  const auto t = rois.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, op,
              ": rois must be float32 or float64 (or the features' dtype), got ", t);
  return (t == at::kDouble ? rois : rois.to(at::kFloat)).contiguous();
}

// Runs body(item, slot) for item in [0, n), handing out chunks of items from a shared counter:
// a thread that is descheduled (a busy machine) or gets the large RoIs does not hold the others
// up at the end, as at::parallel_for's equal static ranges would. slot < number of threads.
template <typename F>
void parallel_items(int64_t n, int64_t chunk, const F& body) {
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  if (nt <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < n; ++i) body(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot)
      for (int64_t i0 = next.fetch_add(chunk); i0 < n; i0 = next.fetch_add(chunk))
        for (int64_t i = i0; i < std::min(n, i0 + chunk); ++i) body(i, slot);
  });
}

template <typename T> using acc_type_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T> inline acc_type_t<T> to_acc(T v) { return static_cast<acc_type_t<T>>(v); }

// The max of a bin is one of the inputs, so converting it back is exact.
template <typename T> inline T from_acc(acc_type_t<T> v) { return static_cast<T>(v); }

// Moves a block of channels from [P][cb] scratch into out[c][p] (the [C, ph, pw] layout).
template <typename T>
void store_block(const acc_type_t<T>* tv, const int32_t* ta, int64_t cb, int64_t P, T* o,
                 int32_t* a) {
  for (int64_t c = 0; c < cb; ++c)
    for (int64_t p = 0; p < P; ++p) {
      o[c * P + p] = from_acc<T>(tv[p * cb + c]);
      a[c * P + p] = ta[p * cb + c];
    }
}

constexpr int64_t kBlock = 32;  // channels per block: 4 AVX2 registers of best + 4 of argmax

// Portable path: one RoI, channels [0, cb) of a channels-last image (pixel stride C).
template <typename T>
void pool_block_scalar(const T* img, int64_t W, int64_t C, int64_t cb, const Bin* bins,
                       int64_t P, acc_type_t<T>* tv, int32_t* ta) {
  using acc_t = acc_type_t<T>;
  const acc_t lowest = static_cast<acc_t>(std::numeric_limits<T>::lowest());
  for (int64_t p = 0; p < P; ++p) {
    const Bin bn = bins[p];
    acc_t* best = tv + p * cb;
    int32_t* arg = ta + p * cb;
    const bool empty = bn.hend <= bn.hstart || bn.wend <= bn.wstart;
    for (int64_t c = 0; c < cb; ++c) {
      best[c] = empty ? acc_t(0) : lowest;
      arg[c] = -1;
    }
    for (int h = bn.hstart; h < bn.hend; ++h)
      for (int w = bn.wstart; w < bn.wend; ++w) {
        const T* px = img + (static_cast<int64_t>(h) * W + w) * C;
        const int32_t idx = static_cast<int32_t>(h * W + w);
        for (int64_t c = 0; c < cb; ++c) {
          const acc_t v = to_acc(px[c]);
          const bool gt = v > best[c];  // NaN is never greater: ignored, as before
          best[c] = gt ? v : best[c];
          arg[c] = gt ? idx : arg[c];
        }
      }
  }
}

#if FRCNN_X86_DISPATCH
#define FRCNN_AVX2 __attribute__((target("avx2,f16c")))

FRCNN_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
FRCNN_AVX2 inline __m256 load8(const c10::BFloat16* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
FRCNN_AVX2 inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// NV registers of 8 channels: best and argmax of every bin, written to tv/ta as [P][cb].
template <int NV, typename T>
FRCNN_AVX2 void pool_block_avx2(const T* img, int64_t W, int64_t C, int64_t cb, const Bin* bins,
                                int64_t P, float* tv, int32_t* ta) {
  const __m256 lowest = _mm256_set1_ps(static_cast<float>(std::numeric_limits<T>::lowest()));
  const __m256 none = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int64_t p = 0; p < P; ++p) {
    const Bin bn = bins[p];
    __m256 best[NV], arg[NV];
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) {
      best[k] = lowest;
      arg[k] = none;
    }
    for (int h = bn.hstart; h < bn.hend; ++h) {
      const T* row = img + static_cast<int64_t>(h) * W * C;
      for (int w = bn.wstart; w < bn.wend; ++w) {
        const T* px = row + static_cast<int64_t>(w) * C;
        const __m256 idx = _mm256_castsi256_ps(_mm256_set1_epi32(h * static_cast<int>(W) + w));
#pragma GCC unroll 4
        for (int k = 0; k < NV; ++k) {
          const __m256 v = load8(px + 8 * k);
          const __m256 gt = _mm256_cmp_ps(v, best[k], _CMP_GT_OQ);  // false on NaN, as `>`
          best[k] = _mm256_blendv_ps(best[k], v, gt);
          arg[k] = _mm256_blendv_ps(arg[k], idx, gt);
        }
      }
    }
    if (bn.hend <= bn.hstart || bn.wend <= bn.wstart) {
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k) best[k] = _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) {
      _mm256_storeu_ps(tv + p * cb + 8 * k, best[k]);
      _mm256_storeu_ps(reinterpret_cast<float*>(ta + p * cb + 8 * k), arg[k]);
    }
  }
}

FRCNN_AVX2 inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
// The values are bf16 values (maxima of bf16 inputs, 0 or lowest): the high half is exact.
FRCNN_AVX2 inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i hi = _mm256_srli_epi32(_mm256_castps_si256(v), 16);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
FRCNN_AVX2 inline void store8(c10::Half* p, __m256 v) {  // exact: the values are half values
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

FRCNN_AVX2 inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// store_block with 8x8 register transposes (cb a multiple of 8).
template <typename T>
FRCNN_AVX2 void store_block_avx2(const float* tv, const int32_t* ta, int64_t cb, int64_t P, T* o,
                                 int32_t* a) {
  const float* taf = reinterpret_cast<const float*>(ta);
  float* af = reinterpret_cast<float*>(a);
  const int64_t P8 = P - P % 8;
  for (int64_t c = 0; c < cb; c += 8) {
    for (int64_t p = 0; p < P8; p += 8) {
      __m256 v[8], k[8];
      for (int j = 0; j < 8; ++j) {
        v[j] = _mm256_loadu_ps(tv + (p + j) * cb + c);
        k[j] = _mm256_loadu_ps(taf + (p + j) * cb + c);
      }
      transpose8(v);
      transpose8(k);
      for (int j = 0; j < 8; ++j) {
        store8(o + (c + j) * P + p, v[j]);
        _mm256_storeu_ps(af + (c + j) * P + p, k[j]);
      }
    }
    for (int64_t j = 0; j < 8; ++j)
      for (int64_t p = P8; p < P; ++p) {
        o[(c + j) * P + p] = static_cast<T>(tv[p * cb + c + j]);
        a[(c + j) * P + p] = ta[p * cb + c + j];
      }
  }
}

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return ok;
}
#endif

// One RoI, channels [c0, c0 + cb): scratch tv/ta hold [P][cb].
template <typename T>
void pool_block(const T* img, int64_t W, int64_t C, int64_t cb, const Bin* bins, int64_t P,
                acc_type_t<T>* tv, int32_t* ta) {
#if FRCNN_X86_DISPATCH
  if constexpr (!std::is_same_v<T, double>) {
    if (cpu_has_avx2() && cb % 8 == 0) {
      if (cb == 32) return pool_block_avx2<4>(img, W, C, cb, bins, P, tv, ta);
      if (cb == 16) return pool_block_avx2<2>(img, W, C, cb, bins, P, tv, ta);
      if (cb == 8) return pool_block_avx2<1>(img, W, C, cb, bins, P, tv, ta);
      if (cb == 24) return pool_block_avx2<3>(img, W, C, cb, bins, P, tv, ta);
    }
  }
#endif
  pool_block_scalar<T>(img, W, C, cb, bins, P, tv, ta);
}

template <typename T>
void store_block_any(const acc_type_t<T>* tv, const int32_t* ta, int64_t cb, int64_t P, T* o,
                     int32_t* a) {
#if FRCNN_X86_DISPATCH
  if constexpr (!std::is_same_v<T, double>) {
    if (cpu_has_avx2() && cb % 8 == 0) return store_block_avx2<T>(tv, ta, cb, P, o, a);
  }
#endif
  store_block<T>(tv, ta, cb, P, o, a);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_height,
                                                int64_t pooled_width) {
  const char* op = "frcnn::roi_pool";
  TORCH_CHECK(input.device().is_cpu(), op, " (CPU): input must be a CPU tensor");
  TORCH_CHECK(input.dim() == 4, op, ": input must be [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": pooled size must be positive");
  auto r = coord_rois(rois, op);
  const int64_t B = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  TORCH_CHECK(H * W <= std::numeric_limits<int32_t>::max(), op,
              ": H * W must fit the int32 argmax, got ", H, " x ", W);
  const int64_t R = r.size(0), P = pooled_height * pooled_width;
  auto output = at::empty({R, C, pooled_height, pooled_width}, input.options());
  auto argmax = at::empty({R, C, pooled_height, pooled_width}, input.options().dtype(at::kInt));

  // Bins once per RoI (serial: cheap, and the contract's check throws before any work).
  std::vector<Bin> bins(R * P);
  std::vector<int64_t> bidx;
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "frcnn_roi_pool_bins", [&] {
    const scalar_t* rd = r.const_data_ptr<scalar_t>();
    bidx = checked_batch_indices<scalar_t>(rd, R, B, op);
    for (int64_t i = 0; i < R; ++i)
      roi_bins<scalar_t>(rd + i * 5, static_cast<scalar_t>(spatial_scale), pooled_height,
                         pooled_width, H, W, bins.data() + i * P);
  });
  if (R == 0 || C == 0) return {output, argmax};
  // [B, H, W, C] in memory: a no-op when the map already is channels-last.
  auto x = input.contiguous(at::MemoryFormat::ChannelsLast);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "frcnn_roi_pool_cpu",
                                  [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    scalar_t* od = output.mutable_data_ptr<scalar_t>();
    int32_t* ad = argmax.mutable_data_ptr<int32_t>();
    const int64_t nblk = (C + kBlock - 1) / kBlock;
    // Work items are (RoI, channel block): small enough to balance two threads.
    const int64_t nslots = std::max<int64_t>(1, at::get_num_threads());
    std::vector<acc_t> tv_all(nslots * P * kBlock);
    std::vector<int32_t> ta_all(nslots * P * kBlock);
    parallel_items(R * nblk, 4, [&](int64_t item, int64_t slot) {
      acc_t* tv = tv_all.data() + slot * P * kBlock;
      int32_t* ta = ta_all.data() + slot * P * kBlock;
      const int64_t i = item / nblk, c0 = (item % nblk) * kBlock;
      const int64_t cb = std::min(kBlock, C - c0);
      const scalar_t* img = xd + bidx[i] * H * W * C + c0;
      const Bin* bb = bins.data() + i * P;
      scalar_t* o = od + (i * C + c0) * P;
      int32_t* a = ad + (i * C + c0) * P;
      // A tail block that is not a multiple of 8: full vectors, then the rest scalar.
      const int64_t cv = cb >= 8 ? cb - cb % 8 : 0;
      if (cv > 0) {
        pool_block<scalar_t>(img, W, C, cv, bb, P, tv, ta);
        store_block_any<scalar_t>(tv, ta, cv, P, o, a);
      }
      if (cv < cb) {
        pool_block_scalar<scalar_t>(img + cv, W, C, cb - cv, bb, P, tv, ta);
        store_block<scalar_t>(tv, ta, cb - cv, P, o + cv * P, a + cv * P);
      }
    });
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width) {
  const char* op = "frcnn::roi_pool_backward";
  TORCH_CHECK(grad.device().is_cpu() && argmax.device().is_cpu(), op,
              " (CPU): grad, rois and argmax must be CPU tensors");
  auto r = coord_rois(rois, op);
  const int64_t R = r.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == R && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must be [R, C, pooled_h, pooled_w], got ", grad.sizes());
  TORCH_CHECK(argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt, op,
              ": argmax must be int32 with the shape of grad, got ", argmax.scalar_type(), " ",
              argmax.sizes());
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0 &&
                  height * width <= std::numeric_limits<int32_t>::max(),
              op, ": bad input shape [", batch_size, ", ", channels, ", ", height, ", ", width,
              "]");
  std::vector<int64_t> bidx;
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "frcnn_roi_pool_backward_rois", [&] {
    bidx = checked_batch_indices<scalar_t>(r.const_data_ptr<scalar_t>(), R, batch_size, op);
  });
  auto grad_input = at::empty({batch_size, channels, height, width}, grad.options());
  const int64_t P = pooled_height * pooled_width, HW = height * width, C = channels;
  if (R == 0 || C == 0) {
    grad_input.zero_();
    return grad_input;
  }
  auto g = grad.contiguous();
  auto a = argmax.contiguous();
  const int32_t* ad = a.const_data_ptr<int32_t>();
  std::atomic<bool> bad{false};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(),
                                  "frcnn_roi_pool_backward_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* gd = g.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    // Channel blocks whose planes (for every image) fit in ~32 KiB of accumulators; channels
    // never share a plane, so threads never write the same memory.
    const int64_t plane_bytes = batch_size * HW * static_cast<int64_t>(sizeof(acc_t));
    const int64_t cblk =
        std::max<int64_t>(1, std::min<int64_t>(C, (128 << 10) / std::max<int64_t>(plane_bytes, 1)));
    const int64_t nblk = (C + cblk - 1) / cblk;
    // float32/float64 accumulate in grad_input itself; half/bf16 in a float32 scratch block
    // that is rounded into grad_input once.
    constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
    const int64_t nslots = std::max<int64_t>(1, at::get_num_threads());
    std::vector<acc_t> acc_all(direct ? 0 : nslots * batch_size * cblk * HW);
    parallel_items(nblk, 1, [&](int64_t blk, int64_t slot) {
      const int64_t c0 = blk * cblk, cb = std::min(cblk, C - c0);
      acc_t* scratch = direct ? nullptr : acc_all.data() + slot * batch_size * cblk * HW;
      // planes of channel c0 in image b; the block's planes of one image are consecutive
      auto planes_of = [&](int64_t b) -> acc_t* {
        if constexpr (direct) {
          return reinterpret_cast<acc_t*>(gi + (b * C + c0) * HW);  // acc_t is scalar_t here
        } else {
          return scratch + b * cblk * HW;
        }
      };
      for (int64_t b = 0; b < batch_size; ++b) std::fill(planes_of(b), planes_of(b) + cb * HW, acc_t(0));
      bool local_bad = false;
      // RoI order, then bin order: each plane's sum is formed as the reference forms it.
      for (int64_t i = 0; i < R; ++i) {
        acc_t* planes = planes_of(bidx[i]);
        const scalar_t* gp = gd + (i * C + c0) * P;
        const int32_t* ap = ad + (i * C + c0) * P;
        for (int64_t c = 0; c < cb; ++c) {
          acc_t* plane = planes + c * HW;
          for (int64_t p = 0; p < P; ++p) {
            const int32_t k = ap[c * P + p];
            if (static_cast<uint32_t>(k) < static_cast<uint32_t>(HW)) {
              plane[k] += static_cast<acc_t>(gp[c * P + p]);
            } else if (k != -1) {
              local_bad = true;
            }
          }
        }
      }
      if constexpr (!direct) {
        for (int64_t b = 0; b < batch_size; ++b) {
          const acc_t* src = planes_of(b);
          scalar_t* dst = gi + (b * C + c0) * HW;
          for (int64_t k = 0; k < cb * HW; ++k) dst[k] = static_cast<scalar_t>(src[k]);
        }
      }
      if (local_bad) bad.store(true);
    });
  });
  if (bad.load()) {  // name the first offending entry
    const int64_t n = a.numel();
    for (int64_t j = 0; j < n; ++j)
      TORCH_CHECK(ad[j] >= -1 && ad[j] < HW, op, ": argmax[", j / (C * P), ", ", (j / P) % C,
                  ", ", (j % P) / pooled_width, ", ", j % pooled_width, "] = ", ad[j],
                  " is outside [-1, H * W = ", HW, "); pass the argmax returned by "
                  "frcnn::roi_pool for these rois");
  }
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CPU, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_cpu));
  m.impl("roi_pool_backward", TORCH_FN(roi_pool_backward_cpu));
}

}  // namespace frcnn
