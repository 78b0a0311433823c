"""Mask R-CNN RoIAlign (torch.ops.frcnn.roi_align), differentiable w.r.t. the features.

The option beside the paper's RoI pooling (cfg POOLING_MODE: align): no rounding of the RoI to
the feature grid and no floor/ceil of the bins; each bin averages bilinear samples.
"""
import torch
from torch import nn

from . import _ext
from .roi_pool import _pair


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio=0, aligned=True):
    """RoIAlign with torchvision / detectron2 semantics.

    features: [B, C, H, W] float32 / float64 / bfloat16 / float16
    rois: [R, 5] (batch_idx, x1, y1, x2, y2) in image pixels, float32 or float64 whatever the
        features' dtype (coordinates are computed in double for float64 rois, else in float32)
    output_size: int or (pooled_h, pooled_w)
    spatial_scale: image -> feature map scale (1/16 for a stride-16 trunk)
    sampling_ratio: bilinear samples per bin and axis; <= 0: ceil(roi_size / pooled) (adaptive)
    aligned: True shifts the RoI by -0.5 feature pixel (pixel centres, detectron2's ROIAlignV2);
        False is the original Mask R-CNN form (RoIs at least 1 x 1 feature pixel)
    returns: [R, C, pooled_h, pooled_w] in the features' dtype. A bad batch index or a
        non-finite coordinate is a RuntimeError naming the RoI.
    """
    _ext.require(features, rois)
    ph, pw = _pair(output_size)
    return torch.ops.frcnn.roi_align(features, rois, float(spatial_scale), ph, pw,
                                     int(sampling_ratio), bool(aligned))


class RoIAlign(nn.Module):
    """nn.Module form of roi_align: RoIAlign((7, 7), 1 / 16, 2, True)(features, rois)."""

    def __init__(self, output_size, spatial_scale, sampling_ratio=0, aligned=True):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, features, rois):
        return roi_align(features, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


if _ext.LOADED:
    @torch.library.register_fake("frcnn::roi_align")
    def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                        aligned):
        torch._check(input.dim() == 4, lambda: "frcnn::roi_align: features must be [B, C, H, W]")
        torch._check(rois.dim() == 2 and rois.size(1) == 5,
                     lambda: "frcnn::roi_align: rois must be [R, 5]")
        return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))

    @torch.library.register_fake("frcnn::roi_align_backward")
    def _roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width,
                                 batch_size, channels, height, width, sampling_ratio, aligned):
        return grad.new_empty((batch_size, channels, height, width))

    def _setup_context(ctx, inputs, output):
        input, rois, spatial_scale, ph, pw, sampling_ratio, aligned = inputs
        ctx.save_for_backward(rois)
        ctx.params = (spatial_scale, ph, pw) + tuple(input.shape) + (sampling_ratio, aligned)

    def _backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        grad_input = torch.ops.frcnn.roi_align_backward(grad_output.contiguous(), rois,
                                                        *ctx.params)
        return grad_input, None, None, None, None, None, None

    torch.library.register_autograd("frcnn::roi_align", _backward, setup_context=_setup_context)

    # roi_align_backward is linear in grad and its adjoint is roi_align itself (double backward).
    def _bwd_setup_context(ctx, inputs, output):
        (grad, rois, spatial_scale, ph, pw, _b, _c, _h, _w, sampling_ratio, aligned) = inputs
        ctx.save_for_backward(rois)
        ctx.params = (spatial_scale, ph, pw, sampling_ratio, aligned)

    def _bwd_backward(ctx, gg):
        (rois,) = ctx.saved_tensors
        return (torch.ops.frcnn.roi_align(gg.contiguous(), rois, *ctx.params),) + (None,) * 10

    torch.library.register_autograd("frcnn::roi_align_backward", _bwd_backward,
                                    setup_context=_bwd_setup_context)
