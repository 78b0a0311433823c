// Schema definitions of the frcnn ops and the Python module entry point of frcnn._C.
// Kernels live in cpu/ (always built) and cuda/ (built only with CUDA).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(frcnn, m) {
  // keep: indices into boxes, by descending score (stable on ties); suppress when IoU > thr.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, int offset=1) -> Tensor");
  // Caffe RoI max pooling; argmax (int32) indexes h * W + w in the feature plane, -1 = empty bin.
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width) -> (Tensor output, Tensor argmax)");
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "int pooled_height, int pooled_width, int batch_size, int channels, int height, "
      "int width) -> Tensor");
  // Mask R-CNN RoIAlign (bilinear samples averaged per bin); aligned shifts by -0.5 pixel,
  // sampling_ratio <= 0 = ceil(roi_size / pooled) samples per bin and axis.
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, "
      "int sampling_ratio, bool aligned) -> Tensor");
}

#ifndef FRCNN_WITH_CUDA
#define FRCNN_WITH_CUDA 0
#endif
#define FRCNN_STR2(x) #x
#define FRCNN_STR(x) FRCNN_STR2(x)

// A plain C-API module: importing frcnn._C loads the library, which registers the ops.
static struct PyModuleDef frcnn_module = {PyModuleDef_HEAD_INIT, "_C",
                                          "frcnn compiled ops (registered as torch.ops.frcnn.*)",
                                          -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&frcnn_module);
  if (m == nullptr) return nullptr;
  PyModule_AddIntConstant(m, "WITH_CUDA", FRCNN_WITH_CUDA);
#ifdef __VERSION__
  PyModule_AddStringConstant(m, "COMPILER", "gcc-compatible " __VERSION__);
#else
  PyModule_AddStringConstant(m, "COMPILER", "unknown");
#endif
#ifdef FRCNN_CUDA_VERSION
  PyModule_AddStringConstant(m, "CUDA_VERSION", FRCNN_STR(FRCNN_CUDA_VERSION));
#else
  PyModule_AddStringConstant(m, "CUDA_VERSION", "");
#endif
  return m;
}
