"""The whole detector as one torch.export program (tools/export.py).

    program(images [1, 3, h, w] f32, im_info [1, 3] (h, w, scale) f32, image_size [2] (H, W) f32)
      -> boxes [D, 4] f32 (x1, y1, x2, y2 original-image pixels), scores [D] f32, labels [D] i64

The inputs are what frcnn.fast_rcnn.test.get_test_blob makes of a BGR image (resize to
TEST.SCALES[0] / MAX_SIZE, minus PIXEL_MEANS): image_size is the original image's (H, W) used to
clip the boxes. The program holds backbone, RPN with its proposal layer (frcnn::nms), RoI pooling
(frcnn::roi_pool), the head, box decoding and the test post-processing (per-class score threshold
and NMS, cap per image), so loading it needs only torch and the frcnn ops library
(torch.ops.load_library on lib/frcnn/_C*.so). Thresholds are fixed at export time.
"""
import torch
import torch.nn as nn

from frcnn.utils.bbox_transform import decode_boxes


class DetectorProgram(nn.Module):
    """FasterRCNN (eval) + im_detect's decoding + detections_for_image's post-processing, in
    torch ops only (same order of operations, so the same detections)."""

    def __init__(self, model, num_classes, score_thresh, nms_thresh, max_per_image, bbox_reg=True):
        super().__init__()
        self.model = model.eval()
        self.num_classes = int(num_classes)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.max_per_image = int(max_per_image)
        self.bbox_reg = bool(bbox_reg)

    def forward(self, images, im_info, image_size):
        from frcnn.ops import nms

        out = self.model(images, im_info)
        scale = im_info[0, 2]
        boxes = out["rois"][:, 1:5] / scale
        scores = out["cls_prob"]
        if self.bbox_reg:
            p = decode_boxes(boxes, out["bbox_pred"])
        else:
            p = boxes[:, None, :].expand(-1, scores.shape[1], 4)
        # clip to the original image, as clip_boxes(pred, im.shape)
        h, w = image_size[0], image_size[1]
        x1 = torch.minimum(torch.clamp(p[..., 0], min=0), w - 1)
        y1 = torch.minimum(torch.clamp(p[..., 1], min=0), h - 1)
        x2 = torch.minimum(torch.clamp(p[..., 2], min=0), w - 1)
        y2 = torch.minimum(torch.clamp(p[..., 3], min=0), h - 1)
        p = torch.stack([x1, y1, x2, y2], dim=2)
        all_boxes, all_scores, all_labels = [], [], []
        for j in range(1, self.num_classes):
            sj = scores[:, j]
            inds = torch.nonzero(sj > self.score_thresh).reshape(-1)
            b, s = p[inds, j], sj[inds]
            keep = nms(b, s, self.nms_thresh)
            all_boxes.append(b[keep])
            all_scores.append(s[keep])
            all_labels.append(torch.full_like(keep, j))
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        # cap per image: keep scores >= the max_per_image-th best (the reference's rule)
        if self.max_per_image > 0:
            order = torch.sort(scores, descending=True, stable=True).values
            padded = torch.cat([order, order.new_full((self.max_per_image,), -1.0)])
            kth = padded[self.max_per_image - 1]
            keep = torch.nonzero(scores >= kth).reshape(-1)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        return boxes[order], scores[order], labels[order]


def example_inputs(cfg, height=None, width=None):
    """A blob the size of a TEST.SCALES image, for tracing."""
    import numpy as np

    from frcnn.fast_rcnn.test import get_test_blob

    s = cfg.TEST.SCALES[0]
    im = np.zeros((height or s, width or int(s * 4 / 3), 3), np.uint8)
    images, im_info, _ = get_test_blob(im, cfg)
    return images, im_info, torch.tensor(im.shape[:2], dtype=torch.float32)


def export_detector(det, path=None, example=None):
    """torch.export the Detector `det` (frcnn.api) -> ExportedProgram (saved to `path` if given).

    The blob's height and width are dynamic (any image size)."""
    from torch.export import Dim, export

    import copy

    model = copy.deepcopy(det.model).eval()
    for p in model.parameters():  # outputs without autograd history
        p.requires_grad_(False)
    prog = DetectorProgram(model, len(det.classes), det.score_thresh, det.nms_thresh,
                           det.max_per_image, det.cfg.TEST.BBOX_REG).eval()
    example = example or example_inputs(det.cfg)
    h = Dim("h", min=32, max=4096)
    w = Dim("w", min=32, max=4096)
    dyn = {"images": {2: h, 3: w}, "im_info": None, "image_size": None}
    with torch.no_grad():
        ep = export(prog, example, dynamic_shapes=dyn, strict=False)
    if path is not None:
        torch.export.save(ep, path, extra_files={"classes.json": _classes_json(det)})
    return ep


def _classes_json(det):
    import json

    c = det.cfg
    return json.dumps({"classes": det.classes, "net": det.net,
                       "test_scale": int(c.TEST.SCALES[0]), "test_max_size": int(c.TEST.MAX_SIZE),
                       "pixel_means_bgr": [float(x) for x in c.PIXEL_MEANS.reshape(-1)],
                       "score_thresh": det.score_thresh, "nms": det.nms_thresh,
                       "max_per_image": det.max_per_image})
