// The CUDA backend of the shared glue (nms_glue.h, roi_pool_glue.h): current stream, launch
// checks, memory budget. Built only with CUDA.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "kernels.h"

namespace frcnn {
namespace glue {

struct CudaBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
  static constexpr const char* kWhat = "CUDA";
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream().stream(); }
  void check(cudaError_t err, const char* op) const {
    TORCH_CHECK(err == cudaSuccess, op, " (CUDA): kernel launch failed: ",
                cudaGetErrorString(err));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // The NMS mask may take at most the device's total memory (the caching allocator reports
  // the rest). The caller's CUDAGuard has made `device` current.
  int64_t mask_budget(const c10::Device& /*device*/) const {
    size_t free_bytes = 0, total_bytes = 0;
    C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<int64_t>(total_bytes);
  }
};

}  // namespace glue
}  // namespace frcnn
