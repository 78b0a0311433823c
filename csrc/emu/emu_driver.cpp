// Sanitizer driver of the CUDA emulator: runs the kernels of csrc/cuda/*.cu (built for the CPU
// with cuda_emu.h) on seeded inputs without torch, so the binary can be built with
// -fsanitize=address or -fsanitize=thread (make cuda-emu-sanitize). Checks results against
// small host references; exit status 0 = all equal and no launch error.
//
//   emu_driver              all cases (the Python tests compare with the CPU kernels too)
//   emu_driver --oob        deliberately hands roi_pool a batch index == B (ASan must report
//                           a heap-buffer-overflow: the bounds check lives in the glue)
// With -DFRCNN_EMU_DROP_BARRIER the NMS reduce kernel loses a __syncthreads (TSan must report
// a data race): the negative controls show that the sanitizers bite.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "../cuda/kernels.h"
#include "../cuda/roi_align_kernel.h"
#include "emu_api.h"
#include "selftest.h"

namespace {

using frcnn::cuda::Dtype;
int g_failures = 0;

void fail(const std::string& what) {
  std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  ++g_failures;
}

void expect_ok(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess)
    fail(what + ": " + frcnn_emu::error_string(err) + " [" + frcnn_emu::last_error_message() +
         "]");
}

// Greedy NMS on score-sorted boxes, the CPU kernel's arithmetic (fminf/fmaxf as on CUDA).
template <typename T>
std::vector<uint8_t> nms_reference(const std::vector<T>& b, int n, T thr, T off) {
  std::vector<uint8_t> keep(n, 0), dead(n, 0);
  for (int i = 0; i < n; ++i) {
    if (dead[i]) continue;
    keep[i] = 1;
    const T* a = &b[4 * i];
    for (int j = i + 1; j < n; ++j) {
      const T* c = &b[4 * j];
      T w = std::fmin(a[2], c[2]) - std::fmax(a[0], c[0]) + off;
      T h = std::fmin(a[3], c[3]) - std::fmax(a[1], c[1]) + off;
      w = std::fmax(w, T(0));
      h = std::fmax(h, T(0));
      const T inter = w * h;
      const T ua = (a[2] - a[0] + off) * (a[3] - a[1] + off);
      const T ub = (c[2] - c[0] + off) * (c[3] - c[1] + off);
      const T uni = ua + ub - inter;
      const T iou = uni > T(0) ? inter / uni : T(0);
      if (iou > thr) dead[j] = 1;
    }
  }
  return keep;
}

template <typename T>
void nms_case(std::mt19937& rng, int n, double thr, int offset, int64_t shared_limit) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> boxes(4 * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    // Quarter-pixel grid: ties and identical boxes happen; some degenerate (x2 < x1).
    const double x = std::floor(u(rng) * 200) / 4, y = std::floor(u(rng) * 200) / 4;
    const double w = std::floor(u(rng) * 120) / 4 - 2, h = std::floor(u(rng) * 120) / 4 - 2;
    boxes[4 * i] = T(x);
    boxes[4 * i + 1] = T(y);
    boxes[4 * i + 2] = T(x + w);
    boxes[4 * i + 3] = T(y + h);
  }
  const int64_t cb = frcnn::cuda::nms_col_blocks(n);
  std::vector<unsigned long long> mask(static_cast<size_t>(n * cb)), removed(cb);
  std::vector<uint8_t> keep(n, 0);
  const Dtype dt = sizeof(T) == 8 ? frcnn::cuda::kFloat64 : frcnn::cuda::kFloat32;
  const std::string what = "nms n=" + std::to_string(n) + " thr=" + std::to_string(thr) +
                           " offset=" + std::to_string(offset) +
                           " shared_limit=" + std::to_string(shared_limit);
  expect_ok(frcnn::cuda::nms_launch(dt, boxes.data(), n, thr, offset, mask.data(), removed.data(),
                                    keep.data(), nullptr, shared_limit),
            what);
  if (keep != nms_reference<T>(boxes, n, T(thr), T(offset))) fail(what + ": keep differs");
}

void nms_cases(bool quick) {
  std::mt19937 rng(1234);
  const int sizes[] = {0, 1, 2, 63, 64, 65, 127, 128, 129};
  for (int n : sizes) {
    if (quick && n != 1 && n != 65 && n != 129) continue;
    for (int64_t limit : {frcnn::cuda::kNmsSharedLimit, int64_t(0)}) {
      nms_case<float>(rng, n, 0.5, 1, limit);
      if (!quick) nms_case<double>(rng, n, 0.3, 0, limit);
    }
  }
  if (quick) nms_case<double>(rng, 65, 0.7, 0, 0);
}

// RoI pooling forward + backward with invariant checks: output == input[argmax] (or 0 and -1
// for an empty bin), argmax inside the RoI's batch plane, and the backward scatters each grad
// once (sums of small integers are exact in any order).
template <typename T>
void roi_case(std::mt19937& rng, int B, int C, int H, int W, int R, int P, bool oob) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> x(static_cast<size_t>(B) * C * H * W);
  for (auto& v : x) v = T(std::floor(u(rng) * 16));  // small integers: ties
  const double scale = 0.25;
  std::vector<float> rois(5 * static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    rois[5 * r] = static_cast<float>(r % B);
    const double x1 = u(rng) * (W + 8) / scale - 16, y1 = u(rng) * (H + 8) / scale - 16;
    rois[5 * r + 1] = static_cast<float>(x1);
    rois[5 * r + 2] = static_cast<float>(y1);
    rois[5 * r + 3] = static_cast<float>(x1 + u(rng) * W / scale);
    rois[5 * r + 4] = static_cast<float>(y1 + u(rng) * H / scale);
  }
  if (oob) {  // batch index B, outside [0, B) (the glue would refuse it), over the whole map
    const float box[5] = {static_cast<float>(B), 0.f, 0.f, static_cast<float>(W / scale),
                          static_cast<float>(H / scale)};
    std::copy(box, box + 5, rois.begin());
  }
  const size_t total = static_cast<size_t>(R) * C * P * P;
  std::vector<T> out(total);
  std::vector<int32_t> arg(total);
  const Dtype dt = sizeof(T) == 8 ? frcnn::cuda::kFloat64 : frcnn::cuda::kFloat32;
  const std::string what = "roi_pool R=" + std::to_string(R) + " C=" + std::to_string(C) +
                           " " + std::to_string(H) + "x" + std::to_string(W);
  expect_ok(frcnn::cuda::roi_pool_forward_launch(dt, frcnn::cuda::kFloat32, x.data(), rois.data(),
                                                 R, C, H, W, P, P, scale, out.data(), arg.data(),
                                                 nullptr),
            what + " forward");
  for (size_t i = 0; i < total && !oob; ++i) {
    const size_t c = (i / (P * P)) % C, r = i / (P * P) / C;
    const size_t plane = (static_cast<size_t>(rois[5 * r]) * C + c) * H * W;
    const bool ok = arg[i] == -1 ? out[i] == T(0)
                                 : arg[i] >= 0 && arg[i] < H * W && out[i] == x[plane + arg[i]];
    if (!ok) {
      fail(what + ": output/argmax mismatch at " + std::to_string(i));
      break;
    }
  }
  std::vector<T> grad(total), gin(x.size(), T(0));
  double expect = 0;
  for (size_t i = 0; i < total; ++i) {
    grad[i] = T(std::floor(u(rng) * 9) - 4);
    if (arg[i] >= 0) expect += static_cast<double>(grad[i]);
  }
  expect_ok(frcnn::cuda::roi_pool_backward_launch(dt, frcnn::cuda::kFloat32, grad.data(),
                                                  rois.data(), arg.data(), R, C, H, W, P, P,
                                                  gin.data(), nullptr),
            what + " backward");
  double sum = 0;
  for (T v : gin) sum += static_cast<double>(v);
  if (sum != expect) fail(what + ": backward sum " + std::to_string(sum) + " != " +
                          std::to_string(expect));
}

// RoIAlign forward + backward on features of ones: a bin's value is the share of its samples
// inside [-1, H] x [-1, W] (weights of a sample sum to 1), so it lies in [0, 1] and is 1 for a
// RoI well inside the map; and the backward of an all-ones grad puts exactly the forward's
// total mass into the input gradient. RoIs reach outside the map, are tiny or reversed, with
// adaptive and fixed sampling, so every branch of the bilinear clamp runs under the sanitizers.
template <typename T>
void align_case(std::mt19937& rng, int B, int C, int H, int W, int R, int P, int sampling_ratio,
                bool aligned) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> x(static_cast<size_t>(B) * C * H * W, T(1));
  const double scale = 0.5;
  std::vector<float> rois(5 * static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    rois[5 * r] = static_cast<float>(r % B);
    const double x1 = u(rng) * (W + 8) / scale - 8, y1 = u(rng) * (H + 8) / scale - 8;
    const double w = (u(rng) * 1.2 - 0.1) * W / scale, h = (u(rng) * 1.2 - 0.1) * H / scale;
    rois[5 * r + 1] = static_cast<float>(x1);
    rois[5 * r + 2] = static_cast<float>(y1);
    rois[5 * r + 3] = static_cast<float>(x1 + w);
    rois[5 * r + 4] = static_cast<float>(y1 + h);
  }
  const bool has_inside = R > 0 && H >= 4 && W >= 4;
  if (has_inside) {  // one RoI well inside the map: every sample inside -> exactly 1
    const float box[5] = {0.f, 1.f / static_cast<float>(scale), 1.f / static_cast<float>(scale),
                          (W - 2) / static_cast<float>(scale), (H - 2) / static_cast<float>(scale)};
    std::copy(box, box + 5, rois.begin());
  }
  const size_t total = static_cast<size_t>(R) * C * P * P;
  std::vector<T> out(total, T(-7));
  const Dtype dt = sizeof(T) == 8 ? frcnn::cuda::kFloat64 : frcnn::cuda::kFloat32;
  const std::string what = "roi_align R=" + std::to_string(R) + " C=" + std::to_string(C) + " " +
                           std::to_string(H) + "x" + std::to_string(W) + " ratio " +
                           std::to_string(sampling_ratio) + (aligned ? " aligned" : "");
  expect_ok(frcnn::cuda::roi_align_forward_launch(dt, frcnn::cuda::kFloat32, x.data(),
                                                  rois.data(), R, C, H, W, P, P, scale,
                                                  sampling_ratio, aligned, out.data(), nullptr),
            what + " forward");
  double mass = 0;
  for (size_t i = 0; i < total; ++i) {
    const bool inside_roi = has_inside && i / (static_cast<size_t>(C) * P * P) == 0;
    if (!(out[i] >= T(0) && out[i] <= T(1.0001)) ||
        (inside_roi && std::fabs(static_cast<double>(out[i]) - 1) > 1e-6)) {
      fail(what + ": value " + std::to_string(static_cast<double>(out[i])) + " at " +
           std::to_string(i));
      return;
    }
    mass += static_cast<double>(out[i]);
  }
  std::vector<T> grad(total, T(1)), gin(x.size(), T(0));
  expect_ok(frcnn::cuda::roi_align_backward_launch(dt, frcnn::cuda::kFloat32, grad.data(),
                                                   rois.data(), R, C, H, W, P, P, scale,
                                                   sampling_ratio, aligned, gin.data(), nullptr),
            what + " backward");
  double sum = 0;
  for (T v : gin) sum += static_cast<double>(v);
  if (std::fabs(sum - mass) > 1e-3 * (1 + mass))
    fail(what + ": backward mass " + std::to_string(sum) + " != " + std::to_string(mass));
}

void align_cases(std::mt19937& rng, bool quick) {
  for (int sr : {0, 2}) {
    for (bool aligned : {false, true}) {
      align_case<float>(rng, 2, 3, 9, 11, 9, 3, sr, aligned);
      if (!quick) align_case<double>(rng, 1, 2, 5, 4, 6, 2, sr, aligned);
    }
  }
  align_case<float>(rng, 1, 1, 1, 1, 3, 2, 0, true);  // a 1 x 1 map: every clamp branch
  if (!quick) align_case<float>(rng, 3, 4, 17, 13, 40, 7, 2, true);
}

void selftests() {
  std::vector<int> out(64, 0);
  expect_ok(frcnn_emu::selftest_launch("count", dim3(2, 2, 1), dim3(4, 2, 1), 0, out.data()),
            "selftest count");
  if (out[0] != 32) fail("selftest count: " + std::to_string(out[0]) + " threads ran, not 32");
  std::fill(out.begin(), out.end(), 0);
  expect_ok(frcnn_emu::selftest_launch("reverse", dim3(2), dim3(32), 0, out.data()),
            "selftest reverse");
  for (int i = 0; i < 64; ++i)
    if (out[i] != 31 - i % 32) {
      fail("selftest reverse");
      break;
    }
  expect_ok(frcnn_emu::selftest_launch("garbage", dim3(1), dim3(8), 8, out.data()),
            "selftest garbage");
}

}  // namespace

int main(int argc, char** argv) {
  bool oob = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--oob") == 0) oob = true;
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--threads") == 0) frcnn_emu::set_mode(frcnn_emu::kThreads);
    else if (std::strcmp(argv[i], "--fibers") == 0) frcnn_emu::set_mode(frcnn_emu::kFibers);
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--oob] [--threads|--fibers]\n", argv[0]);
      return 2;
    }
  }
  std::printf("emu_driver: mode %s%s%s\n",
              frcnn_emu::mode() == frcnn_emu::kThreads ? "threads" : "fibers",
              quick ? ", quick" : "", oob ? ", out-of-bounds control" : "");
  std::mt19937 rng(7);
  if (oob) {
    roi_case<float>(rng, 2, 2, 6, 7, 3, 2, /*oob=*/true);
    std::printf("emu_driver: out-of-bounds control ran without a sanitizer report\n");
    return 3;
  }
  selftests();
  nms_cases(quick);
  roi_case<float>(rng, 2, 3, 9, 11, 7, 3, false);
  roi_case<double>(rng, 1, 2, 5, 4, 5, 2, false);
  if (!quick) roi_case<float>(rng, 3, 4, 17, 13, 40, 7, false);
  align_cases(rng, quick);
  if (g_failures) {
    std::fprintf(stderr, "emu_driver: %d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("emu_driver: OK\n");
  return 0;
}
