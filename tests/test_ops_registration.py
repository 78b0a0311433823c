"""The ops are real torch ops: schemas, fake kernels, autograd, opcheck, torch.compile."""
import pytest
import torch

import frcnn.ops
from frcnn.ops import _ext, nms, roi_pool

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def _roi_args(device, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randperm(2 * 3 * 9 * 10, generator=g).reshape(2, 3, 9, 10).to(dtype) / 5
    rois = torch.tensor([[0, 0, 0, 70, 60], [1, 10, 20, 50, 40], [1, 33, 33, 33, 33]], dtype=dtype)
    return x.to(device).requires_grad_(requires_grad), rois.to(device)


def test_ops_registered_with_kernels():
    for op in ("nms", "roi_pool", "roi_pool_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"frcnn::{op}", "CPU")
        if CUDA:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"frcnn::{op}", "CUDA")
    assert "offset" in str(torch.ops.frcnn.nms.default._schema)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_roi_pool(device):
    x, rois = _roi_args(device, requires_grad=True)
    torch.library.opcheck(torch.ops.frcnn.roi_pool.default, (x, rois, 1 / 8, 3, 2))
    out, arg = torch.ops.frcnn.roi_pool(x.detach(), rois, 1 / 8, 3, 2)
    torch.library.opcheck(torch.ops.frcnn.roi_pool_backward.default,
                          (torch.randn_like(out), rois, arg, 1 / 8, 3, 2, 2, 3, 9, 10))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_nms(device):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 30], 1).to(device)
    scores = torch.rand(40, generator=g).to(device)
    torch.library.opcheck(torch.ops.frcnn.nms.default, (boxes, scores, 0.5, 1))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    def f(x, rois, boxes, scores):
        keep = nms(boxes, scores, 0.7)
        pooled = roi_pool(x, rois, (3, 2), 1 / 8)
        return pooled.relu().sum(), keep

    x, rois = _roi_args("cpu", torch.float32, requires_grad=True)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss, keep = compiled(x, rois, boxes, scores)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    want_loss, want_keep = f(x, rois, boxes, scores)
    want_loss.backward()
    assert torch.equal(keep, want_keep) and keep.tolist() == [0, 2]
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, x.grad)


def test_missing_extension_says_run_make(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "_ERROR", ImportError("No module named 'frcnn._C'"))
    with pytest.raises(RuntimeError, match="frcnn ops are not built: run make"):
        frcnn.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    with pytest.raises(RuntimeError, match="run make"):
        frcnn.ops.roi_pool(torch.zeros(1, 1, 2, 2), torch.zeros(0, 5), 2, 1.0)


def test_env_report():
    from frcnn.env import collect

    info = collect()
    assert info["kernels frcnn::nms"].startswith("CPU")
    assert info["torch"] == torch.__version__
