"""Caffe RoI max pooling (torch.ops.frcnn.roi_pool), differentiable w.r.t. the features."""
import torch
from torch import nn

from . import _ext


def _pair(output_size):
    if isinstance(output_size, int):
        return output_size, output_size
    h, w = output_size
    return int(h), int(w)


def roi_pool(features, rois, output_size, spatial_scale):
    """RoI max pooling with py-faster-rcnn's (Caffe) semantics.

    features: [B, C, H, W] float (float32/float64; half too on CUDA)
    rois: [R, 5] (cast to the dtype of features), (batch_idx, x1, y1, x2, y2) in image pixels
    output_size: int or (pooled_h, pooled_w)
    spatial_scale: image -> feature map scale (1/16 for VGG16 conv5_3)
    returns: [R, C, pooled_h, pooled_w]; empty bins are 0
    """
    _ext.require(features, rois)
    ph, pw = _pair(output_size)
    if rois.dtype != features.dtype:  # e.g. float32 rois with half features under autocast
        rois = rois.to(features.dtype)
    out, _ = torch.ops.frcnn.roi_pool(features, rois, float(spatial_scale), ph, pw)
    return out


class RoIPool(nn.Module):
    """nn.Module form of roi_pool: RoIPool((7, 7), 1 / 16)(features, rois)."""

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, features, rois):
        return roi_pool(features, rois, self.output_size, self.spatial_scale)

    def extra_repr(self):
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


if _ext.LOADED:
    @torch.library.register_fake("frcnn::roi_pool")
    def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
        torch._check(input.dim() == 4, lambda: "input must be [B, C, H, W]")
        torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "rois must be [R, 5]")
        shape = (rois.size(0), input.size(1), pooled_height, pooled_width)
        return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)

    @torch.library.register_fake("frcnn::roi_pool_backward")
    def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, pooled_height, pooled_width,
                                batch_size, channels, height, width):
        return grad.new_empty((batch_size, channels, height, width))

    def _setup_context(ctx, inputs, output):
        input, rois, spatial_scale, pooled_height, pooled_width = inputs
        _, argmax = output
        ctx.save_for_backward(rois, argmax)
        ctx.params = (spatial_scale, pooled_height, pooled_width) + tuple(input.shape)

    def _backward(ctx, grad_output, grad_argmax):
        rois, argmax = ctx.saved_tensors
        grad_input = torch.ops.frcnn.roi_pool_backward(grad_output, rois, argmax, *ctx.params)
        return grad_input, None, None, None, None

    torch.library.register_autograd("frcnn::roi_pool", _backward, setup_context=_setup_context)

    # roi_pool_backward is linear in grad: its own gradient gathers at the argmax again
    # (double backward, e.g. for gradient penalties and gradgradcheck).
    def _bwd_setup_context(ctx, inputs, output):
        grad, rois, argmax = inputs[:3]
        ctx.save_for_backward(rois, argmax)

    def _bwd_backward(ctx, gg):
        rois, argmax = ctx.saved_tensors
        b = rois[:, 0].long()
        flat = gg.flatten(2)[b]  # [R, C, H*W]
        R, C = argmax.shape[:2]
        idx = argmax.reshape(R, C, -1).long()
        picked = flat.gather(2, idx.clamp(min=0)) * (idx >= 0)
        return (picked.reshape(argmax.shape),) + (None,) * 9

    torch.library.register_autograd("frcnn::roi_pool_backward", _bwd_backward,
                                    setup_context=_bwd_setup_context)
