// Greedy NMS on CPU: sort once by score, then for each kept box suppress the later ones.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace frcnn {
namespace {

// By value (std::min returns a reference, which keeps gcc from vectorising the double loop).
template <typename T> inline T vmin(T a, T b) { return b < a ? b : a; }
template <typename T> inline T vmax(T a, T b) { return a < b ? b : a; }

// Boxes stay in score order in SoA arrays. For each kept box one branch-free pass over the
// later boxes marks the suppressed ones (this loop auto-vectorises); the arrays are compacted
// whenever a quarter of the remaining entries are dead, so the passes shrink like the
// reference's `order = order[ovr <= thresh]` without copying on every step.
template <typename scalar_t>
int64_t nms_kernel(const scalar_t* boxes, const int64_t* order, int64_t n, double thr,
                   scalar_t offset, int64_t* keep_out) {
  using flag_t = std::conditional_t<sizeof(scalar_t) == 4, int32_t, int64_t>;  // lane width
  std::vector<scalar_t> vx1(n), vy1(n), vx2(n), vy2(n), varea(n);
  std::vector<int64_t> vidx(n);
  std::vector<flag_t> vdead(n, 0);
  scalar_t *x1 = vx1.data(), *y1 = vy1.data(), *x2 = vx2.data(), *y2 = vy2.data(),
           *area = varea.data();
  int64_t* idx = vidx.data();
  flag_t* dead = vdead.data();
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* b = boxes + order[i] * 4;
    x1[i] = b[0];
    y1[i] = b[1];
    x2[i] = b[2];
    y2[i] = b[3];
    // Not clamped, as in the reference; IoU is 0 when the union is <= 0.
    area[i] = (b[2] - b[0] + offset) * (b[3] - b[1] + offset);
    idx[i] = order[i];
  }
  const scalar_t t = static_cast<scalar_t>(thr);
  const scalar_t zero(0);
  int64_t m = n, nkeep = 0, ndead = 0;  // ndead: dead entries in [i + 1, m)
  for (int64_t i = 0; i < m; ++i) {
    if (dead[i]) {
      --ndead;
      continue;
    }
    keep_out[nkeep++] = idx[i];
    const scalar_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i];
    flag_t newly = 0;
    for (int64_t j = i + 1; j < m; ++j) {
      const scalar_t w = vmax(vmin(ix2, x2[j]) - vmax(ix1, x1[j]) + offset, zero);
      const scalar_t h = vmax(vmin(iy2, y2[j]) - vmax(iy1, y1[j]) + offset, zero);
      const scalar_t inter = w * h;
      const scalar_t uni = ia + area[j] - inter;
      // Divide (not inter > t * uni) so borderline cases round like the reference.
      const scalar_t q = inter / uni;  // unconditional, so the select below vectorises
      const scalar_t iou = uni > zero ? q : zero;
      const flag_t sup = iou > t ? 1 : 0;
      newly += sup & (dead[j] ^ 1);
      dead[j] |= sup;
    }
    ndead += newly;
    if (ndead * 4 > m - i) {  // compact [i + 1, m)
      int64_t k = i + 1;
      for (int64_t j = i + 1; j < m; ++j) {
        const flag_t alive = dead[j] ^ 1;  // read before dead[k] is reset (k may equal j)
        x1[k] = x1[j];
        y1[k] = y1[j];
        x2[k] = x2[j];
        y2[k] = y2[j];
        area[k] = area[j];
        idx[k] = idx[j];
        dead[k] = 0;
        k += alive;
      }
      m = k;
      ndead = 0;
    }
  }
  return nkeep;
}

bool reduced(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

at::Tensor nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold,
                   int64_t offset) {
  // float16/bfloat16 inputs (autocast) run in float32: the upcast is exact, keeps the score
  // order, and the IoU is computed as for float32 boxes (the contract: NMS on float32).
  const at::Tensor boxes = reduced(boxes_in) ? boxes_in.to(at::kFloat) : boxes_in;
  const at::Tensor scores = reduced(scores_in) ? scores_in.to(at::kFloat) : scores_in;
  TORCH_CHECK(boxes.device().is_cpu() && scores.device().is_cpu(),
              "frcnn::nms (CPU): boxes and scores must be CPU tensors");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "frcnn::nms: boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "frcnn::nms: scores must be [N] with N = boxes.size(0), got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(),
              "frcnn::nms: boxes and scores must have the same dtype, got ",
              boxes.scalar_type(), " and ", scores.scalar_type());
  TORCH_CHECK(offset == 0 || offset == 1, "frcnn::nms: offset must be 0 or 1, got ", offset);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));

  auto b = boxes.contiguous();
  // Stable descending sort: equal scores keep their input order.
  auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true))
                   .contiguous();
  auto keep = at::empty({n}, boxes.options().dtype(at::kLong));
  int64_t nkeep = 0;
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "frcnn_nms_cpu", [&] {
    nkeep = nms_kernel<scalar_t>(b.const_data_ptr<scalar_t>(), order.const_data_ptr<int64_t>(),
                                 n, iou_threshold, static_cast<scalar_t>(offset),
                                 keep.mutable_data_ptr<int64_t>());
  });
  return keep.narrow(0, 0, nkeep).clone();
}

}  // namespace

TORCH_LIBRARY_IMPL(frcnn, CPU, m) { m.impl("nms", TORCH_FN(nms_cpu)); }

}  // namespace frcnn
