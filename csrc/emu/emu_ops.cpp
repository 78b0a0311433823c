// frcnn._C_cuda_emu: the CUDA kernels (csrc/cuda/*.cu built for the CPU by the emulator) behind
// the same host glue as the CUDA build (nms_glue.h, roi_pool_glue.h, roi_align_glue.h), on CPU
// tensors.
// Ops: torch.ops.frcnn_cuda_emu.{nms, roi_pool, roi_pool_backward, roi_align,
// roi_align_backward, set_mode, mode, selftest}.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "../cuda/nms_glue.h"
#include "../cuda/roi_align_glue.h"
#include "../cuda/roi_pool_glue.h"
#include "emu_api.h"
#include "selftest.h"

namespace frcnn {
namespace {

struct EmuBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  static constexpr const char* kWhat = "CUDA";  // the emulator runs the CUDA code path
  int64_t budget = int64_t(1) << 30;
  cudaStream_t stream() const { return nullptr; }
  void check(cudaError_t err, const char* op) const {
    TORCH_CHECK(err == cudaSuccess, op, " (CUDA): kernel launch failed: ",
                frcnn_emu::error_string(err), " [", frcnn_emu::last_error_message(), "]");
  }
  int64_t mask_budget(const c10::Device&) const { return budget; }
};

at::Tensor emu_nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                   int64_t offset, int64_t shared_limit, int64_t mask_budget) {
  EmuBackend be;
  be.budget = mask_budget;
  return glue::nms(be, boxes, scores, iou_threshold, offset, shared_limit);
}

std::tuple<at::Tensor, at::Tensor> emu_roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_height,
                                                int64_t pooled_width) {
  return glue::roi_pool_forward(EmuBackend{}, input, rois, spatial_scale, pooled_height,
                                pooled_width);
}

at::Tensor emu_roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width) {
  return glue::roi_pool_backward(EmuBackend{}, grad, rois, argmax, spatial_scale, pooled_height,
                                 pooled_width, batch_size, channels, height, width);
}

at::Tensor emu_roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                         bool aligned) {
  return glue::roi_align_forward(EmuBackend{}, input, rois, spatial_scale, pooled_height,
                                 pooled_width, sampling_ratio, aligned);
}

at::Tensor emu_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  return glue::roi_align_backward(EmuBackend{}, grad, rois, spatial_scale, pooled_height,
                                  pooled_width, batch_size, channels, height, width,
                                  sampling_ratio, aligned);
}

void emu_set_mode(const std::string& mode) {
  TORCH_CHECK(mode == "fibers" || mode == "threads",
              "frcnn_cuda_emu.set_mode: 'fibers' or 'threads', got '", mode, "'");
  frcnn_emu::set_mode(mode == "threads" ? frcnn_emu::kThreads : frcnn_emu::kFibers);
}

std::string emu_mode() { return frcnn_emu::mode() == frcnn_emu::kThreads ? "threads" : "fibers"; }

// Runs an emulator self-test kernel; out has `size` int32 zeros before the launch.
at::Tensor emu_selftest(const std::string& name, std::vector<int64_t> grid,
                        std::vector<int64_t> block, int64_t shared, int64_t size) {
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "selftest: grid and block are 3 ints");
  auto out = at::zeros({size}, at::TensorOptions().dtype(at::kInt));
  const dim3 g(static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]),
               static_cast<unsigned>(grid[2]));
  const dim3 b(static_cast<unsigned>(block[0]), static_cast<unsigned>(block[1]),
               static_cast<unsigned>(block[2]));
  const cudaError_t err = frcnn_emu::selftest_launch(name.c_str(), g, b,
                                                     static_cast<size_t>(shared),
                                                     out.mutable_data_ptr<int>());
  TORCH_CHECK(err == cudaSuccess, "selftest ", name, ": ", frcnn_emu::error_string(err), " [",
              frcnn_emu::last_error_message(), "]");
  return out;
}

}  // namespace
}  // namespace frcnn

TORCH_LIBRARY(frcnn_cuda_emu, m) {
  m.def(
      "nms(Tensor boxes, Tensor scores, float iou_threshold, int offset=1, "
      "int shared_limit=49152, int mask_budget=1073741824) -> Tensor",
      &frcnn::emu_nms);
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width) -> (Tensor output, Tensor argmax)",
      &frcnn::emu_roi_pool);
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "int pooled_height, int pooled_width, int batch_size, int channels, int height, "
      "int width) -> Tensor",
      &frcnn::emu_roi_pool_backward);
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor",
      &frcnn::emu_roi_align);
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, "
      "int sampling_ratio, bool aligned) -> Tensor",
      &frcnn::emu_roi_align_backward);
  m.def("set_mode(str mode) -> ()", &frcnn::emu_set_mode);
  m.def("mode() -> str", &frcnn::emu_mode);
  m.def("selftest(str name, int[] grid, int[] block, int shared, int size) -> Tensor",
        &frcnn::emu_selftest);
}

static struct PyModuleDef emu_module = {
    PyModuleDef_HEAD_INIT, "_C_cuda_emu",
    "frcnn CUDA kernels run by the CPU emulator (torch.ops.frcnn_cuda_emu.*)", -1, nullptr};

PyMODINIT_FUNC PyInit__C_cuda_emu(void) { return PyModule_Create(&emu_module); }
