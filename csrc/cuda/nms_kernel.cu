// NMS on CUDA, the bitmask algorithm: block (r, c) compares the 64 boxes of row block r with the
// 64 of column block c and writes one 64-bit suppression word per row box; a single block then
// walks the boxes in score order and ORs the words of the kept ones. Pure CUDA, no torch.
#include "kernels.h"

namespace frcnn {
namespace cuda {
namespace {

// Same arithmetic and order as the CPU kernel (compiled with --fmad=false to match it).
template <typename T>
__device__ __forceinline__ bool suppresses(const T* a, const T* b, T thr, T off) {
  T w = min(a[2], b[2]) - max(a[0], b[0]) + off;
  T h = min(a[3], b[3]) - max(a[1], b[1]) + off;
  w = max(w, T(0));
  h = max(h, T(0));
  const T inter = w * h;
  const T area_a = (a[2] - a[0] + off) * (a[3] - a[1] + off);
  const T area_b = (b[2] - b[0] + off) * (b[3] - b[1] + off);
  const T uni = area_a + area_b - inter;
  const T iou = uni > T(0) ? inter / uni : T(0);
  return iou > thr;
}

template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, int n, int col_blocks, T thr, T off,
                                unsigned long long* __restrict__ mask) {
  const int row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;  // only later boxes can be suppressed
  const int row_size = min(n - row_block * kNmsBlock, kNmsBlock);
  const int col_size = min(n - col_block * kNmsBlock, kNmsBlock);
  __shared__ T col_boxes[kNmsBlock * 4];
  if (threadIdx.x < col_size) {
    for (int k = 0; k < 4; ++k)
      col_boxes[threadIdx.x * 4 + k] = boxes[(col_block * kNmsBlock + threadIdx.x) * 4 + k];
  }
  __syncthreads();
  if (threadIdx.x >= row_size) return;
  const int i = row_block * kNmsBlock + threadIdx.x;
  const T* box = boxes + static_cast<int64_t>(i) * 4;
  unsigned long long bits = 0;
  const int start = row_block == col_block ? threadIdx.x + 1 : 0;
  for (int j = start; j < col_size; ++j)
    if (suppresses(box, col_boxes + j * 4, thr, off)) bits |= 1ULL << j;
  mask[static_cast<int64_t>(i) * col_blocks + col_block] = bits;
}

// One block, boxes in order; removed[] lives in shared memory when it fits, else in global.
template <bool kShared>
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, int n,
                                  int col_blocks, unsigned long long* removed_global,
                                  uint8_t* __restrict__ keep) {
  FRCNN_DYNAMIC_SHARED(unsigned long long, removed_shared);
  unsigned long long* removed = kShared ? removed_shared : removed_global;
  for (int t = threadIdx.x; t < col_blocks; t += blockDim.x) removed[t] = 0;
  __syncthreads();
  for (int i = 0; i < n; ++i) {
    const int word = i / kNmsBlock;
    const bool kept = !((removed[word] >> (i % kNmsBlock)) & 1ULL);
#if !defined(FRCNN_EMU_DROP_BARRIER)  // only the emulator's sanitizer self-test defines it
    __syncthreads();  // everyone has read removed[word] before anyone updates it
#endif
    if (kept) {
      if (threadIdx.x == 0) keep[i] = 1;
      const unsigned long long* row = mask + static_cast<int64_t>(i) * col_blocks;
      // Words before `word` belong to boxes already decided (and are not written by the
      // mask kernel), so only the rest are merged.
      for (int t = word + threadIdx.x; t < col_blocks; t += blockDim.x) removed[t] |= row[t];
    }
    __syncthreads();
  }
}

template <typename T>
cudaError_t nms_impl(const T* boxes, int64_t n, double thr, int offset, unsigned long long* mask,
                     unsigned long long* removed, uint8_t* keep, cudaStream_t stream,
                     int64_t shared_limit) {
  if (n == 0) return cudaSuccess;
  const int col_blocks = static_cast<int>(nms_col_blocks(n));
  const dim3 grid(col_blocks, col_blocks);
  FRCNN_LAUNCH(grid, kNmsBlock, 0, stream, nms_mask_kernel<T>)(
      boxes, static_cast<int>(n), col_blocks, static_cast<T>(thr), static_cast<T>(offset), mask);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t shared = static_cast<int64_t>(col_blocks) * sizeof(unsigned long long);
  const int threads = 256;
  if (shared <= shared_limit) {
    FRCNN_LAUNCH(1, threads, shared, stream, nms_reduce_kernel<true>)(
        mask, static_cast<int>(n), col_blocks, removed, keep);
  } else {
    FRCNN_LAUNCH(1, threads, 0, stream, nms_reduce_kernel<false>)(
        mask, static_cast<int>(n), col_blocks, removed, keep);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t nms_launch(Dtype dtype, const void* boxes, int64_t n, double iou_threshold, int offset,
                       unsigned long long* mask, unsigned long long* removed, uint8_t* keep,
                       cudaStream_t stream, int64_t shared_limit) {
  if (n < 0 || n > kNmsMaxBoxes) return cudaErrorInvalidValue;  // grid.y <= 65535 row blocks
  switch (dtype) {
    case kFloat32:
      return nms_impl(static_cast<const float*>(boxes), n, iou_threshold, offset, mask, removed,
                      keep, stream, shared_limit);
    case kFloat64:
      return nms_impl(static_cast<const double*>(boxes), n, iou_threshold, offset, mask, removed,
                      keep, stream, shared_limit);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace frcnn
