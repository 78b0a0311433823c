"""Box <-> delta transforms with py-faster-rcnn's +1 pixel convention (torch, any device)."""
import torch


def bbox_transform(ex_rois, gt_rois):
    """Regression targets of gt boxes relative to example boxes.

    ex_rois, gt_rois: [N, 4] float (x1, y1, x2, y2) -> [N, 4] (dx, dy, dw, dh).
    """
    ex_w = ex_rois[:, 2] - ex_rois[:, 0] + 1.0
    ex_h = ex_rois[:, 3] - ex_rois[:, 1] + 1.0
    ex_cx = ex_rois[:, 0] + 0.5 * ex_w
    ex_cy = ex_rois[:, 1] + 0.5 * ex_h
    gt_w = gt_rois[:, 2] - gt_rois[:, 0] + 1.0
    gt_h = gt_rois[:, 3] - gt_rois[:, 1] + 1.0
    gt_cx = gt_rois[:, 0] + 0.5 * gt_w
    gt_cy = gt_rois[:, 1] + 0.5 * gt_h
    return torch.stack(((gt_cx - ex_cx) / ex_w, (gt_cy - ex_cy) / ex_h,
                        torch.log(gt_w / ex_w), torch.log(gt_h / ex_h)), dim=1)


def bbox_transform_inv(boxes, deltas):
    """Apply deltas to boxes.

    boxes: [N, 4]; deltas: [N, 4k] (k classes, 4 per class) -> [N, 4k] boxes.
    As the reference: x2 = cx + 0.5 w (no -1), and dw is not clamped.
    """
    if boxes.shape[0] == 0:
        return deltas.new_zeros((0, deltas.shape[1]))
    return decode_boxes(boxes.to(deltas.dtype), deltas).reshape(deltas.shape[0], -1)


def decode_boxes(boxes, deltas):
    """bbox_transform_inv's arithmetic -> [N, k, 4], without a branch on N (torch.export traces
    it with a data-dependent number of boxes); boxes in the deltas' dtype."""
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    d = deltas.reshape(deltas.shape[0], -1, 4)
    pcx = d[..., 0] * w[:, None] + cx[:, None]
    pcy = d[..., 1] * h[:, None] + cy[:, None]
    pw = torch.exp(d[..., 2]) * w[:, None]
    ph = torch.exp(d[..., 3]) * h[:, None]
    return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=2)


def clip_boxes(boxes, im_shape):
    """Clip boxes to the image: x to [0, W-1], y to [0, H-1].

    boxes: [N, 4k]; im_shape: (H, W, ...) sequence or tensor (e.g. an im_info row).
    Tensor bounds stay on device (no sync).
    """
    if torch.is_tensor(im_shape):
        im_shape = im_shape.to(boxes.dtype)
        hmax, wmax = im_shape[0] - 1, im_shape[1] - 1
        zero = boxes.new_zeros(())
        b = boxes.view(boxes.shape[0], -1, 4)
        x = torch.minimum(torch.maximum(b[..., 0::2], zero), wmax)
        y = torch.minimum(torch.maximum(b[..., 1::2], zero), hmax)
    else:
        hmax, wmax = float(im_shape[0]) - 1, float(im_shape[1]) - 1
        b = boxes.view(boxes.shape[0], -1, 4)
        x = b[..., 0::2].clamp(0, wmax)
        y = b[..., 1::2].clamp(0, hmax)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=2).view_as(boxes)
