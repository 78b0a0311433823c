"""Detection on images: im_detect, rpn proposals (im_proposals), test_net with VOC/COCO eval."""
import os
import pickle

import cv2
import numpy as np
import torch

from frcnn.utils.bbox_transform import clip_boxes, decode_boxes
from frcnn.utils import distributed as du
from frcnn.utils.timer import Timer


def _device_of(model):
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _sync(device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def get_test_blob(im, cfg):
    """Resize a BGR uint8 image [H, W, 3] for the net (TEST.SCALES[0], TEST.MAX_SIZE).

    -> (images [1, 3, h, w] float tensor, im_info [1, 3] (h, w, scale), scale float).
    """
    from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob

    if len(cfg.TEST.SCALES) != 1:
        raise ValueError(f"TEST.SCALES {cfg.TEST.SCALES}: testing with an RPN is single-scale "
                         "(as py-faster-rcnn); give one scale, or test a Fast R-CNN model on "
                         "external proposals (--proposals) for the multi-scale pyramid")
    im_r, scale = prep_im_for_blob(im, cfg.PIXEL_MEANS, cfg.TEST.SCALES[0], cfg.TEST.MAX_SIZE)
    blob = im_list_to_blob([im_r])
    blob = torch.as_tensor(np.ascontiguousarray(blob)).permute(0, 3, 1, 2).contiguous().float()
    im_info = torch.tensor([[blob.shape[2], blob.shape[3], scale]], dtype=torch.float32)
    return blob, im_info, float(scale)


def get_pyramid_blob(im, cfg):
    """Image pyramid for multi-scale testing: one level per TEST.SCALES entry (MAX_SIZE cap),
    zero-padded into one batch as the reference's _get_image_blob.

    -> (images [L, 3, H, W] float tensor, im_info [L, 3] (h, w, scale) per level, scales [L]).
    """
    from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob

    levels, scales, info = [], [], []
    for target in cfg.TEST.SCALES:
        im_r, sc = prep_im_for_blob(im, cfg.PIXEL_MEANS, target, cfg.TEST.MAX_SIZE)
        levels.append(im_r)
        scales.append(sc)
        info.append([im_r.shape[0], im_r.shape[1], sc])
    blob = torch.as_tensor(np.ascontiguousarray(im_list_to_blob(levels))).permute(0, 3, 1, 2)
    return blob.contiguous().float(), torch.tensor(info, dtype=torch.float32), np.array(scales)


# The reference maps each RoI to the level where its scaled area is closest to 224 x 224, the
# input size of the ImageNet-pretrained fc layers (Fast R-CNN, section 5.1 / SPPnet).
PYRAMID_TARGET_AREA = 224 * 224


def project_im_rois(boxes, scales):
    """RoIs in original-image pixels -> (RoIs scaled to their pyramid level [P, 4] float64,
    levels [P] int64). Level = argmin |area * scale^2 - 224^2|, area = (w+1)(h+1), first level
    on ties; one scale: every RoI on level 0 (py-faster-rcnn's _project_im_rois)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    if len(scales) > 1:
        areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
        diff = np.abs(areas[:, None] * scales[None, :] ** 2 - PYRAMID_TARGET_AREA)
        levels = diff.argmin(axis=1)
    else:
        levels = np.zeros(len(boxes), dtype=np.int64)
    return boxes * scales[levels][:, None], levels


def _dedup(boxes, scale, dedup, levels=None):
    """py-faster-rcnn's DEDUP_BOXES: drop proposals that map to the same spot on the feature map
    (of the same pyramid level). scale: a float or, with levels, per-row scales [P].

    -> (index of unique rows, inverse index mapping every input row to its unique row).
    """
    v = np.array([1, 1e3, 1e6, 1e9, 1e12])
    lv = np.zeros((len(boxes), 1)) if levels is None else np.asarray(levels, np.float64)[:, None]
    # the level is hashed unscaled: the reference multiplies its level column by DEDUP_BOXES
    # too, which rounds levels < 8 to 0 and merges RoIs of different levels (same result with
    # one scale, where every level is 0)
    feat = np.round(boxes * np.asarray(scale, np.float64).reshape(-1, 1) * dedup)
    hashes = np.hstack((lv, feat)).dot(v)
    _, index, inv = np.unique(hashes, return_index=True, return_inverse=True)
    return index, inv


@torch.no_grad()
def im_detect(model, im, cfg, proposals=None):
    """Detect objects in one image.

    model: FasterRCNN in eval mode with a head (and an RPN unless `proposals` is given).
    im: [H, W, 3] uint8 BGR (cv2.imread).
    proposals: optional [P, 4] float original-image boxes (Fast R-CNN testing without RPN).
    -> scores [R, K+1] np float32 (softmax), boxes [R, 4(K+1)] np float32 per-class boxes in
       original-image coords, clipped (the RoI boxes tiled when TEST.BBOX_REG is off).
    """
    device = _device_of(model)
    if proposals is not None and len(cfg.TEST.SCALES) > 1:
        return _im_detect_pyramid(model, im, cfg, proposals, device)
    images, im_info, scale = get_test_blob(im, cfg)
    props_t = None
    inv = None
    if proposals is not None:
        proposals = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
        if cfg.DEDUP_BOXES > 0:
            index, inv = _dedup(proposals, scale, cfg.DEDUP_BOXES)
            proposals = proposals[index]
        props_t = [torch.from_numpy(proposals * scale).to(device)]
    out = model(images.to(device), im_info.to(device), proposals=props_t)
    boxes = out["rois"][:, 1:5] / scale
    scores = out["cls_prob"].float()
    pred = decode_detections(boxes.float(), out["bbox_pred"].float(), im.shape,
                             cfg.TEST.BBOX_REG).reshape(len(scores), scores.shape[1] * 4)
    scores, pred = scores.cpu().numpy(), pred.cpu().numpy()
    if inv is not None:
        scores, pred = scores[inv], pred[inv]
    return scores, pred


def _im_detect_pyramid(model, im, cfg, proposals, device):
    """im_detect over the TEST.SCALES pyramid: each RoI pooled on its level (project_im_rois)."""
    images, im_info, scales = get_pyramid_blob(im, cfg)
    boxes = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
    rois, levels = project_im_rois(boxes, scales)
    inv = None
    if cfg.DEDUP_BOXES > 0:
        index, inv = _dedup(boxes, scales[levels], cfg.DEDUP_BOXES, levels)
        boxes, rois, levels = boxes[index], rois[index], levels[index]
    # the head returns RoIs grouped by level: remember where each one came from
    order = np.argsort(levels, kind="stable")
    per_level = [torch.from_numpy(rois[levels == lv].astype(np.float32)).to(device)
                 for lv in range(len(scales))]
    out = model(images.to(device), im_info.to(device), proposals=per_level)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    scores = out["cls_prob"].float().cpu()[back]
    deltas = out["bbox_pred"].float().cpu()[back]
    boxes_t = torch.from_numpy(boxes.astype(np.float32))  # original-image RoIs, as the reference
    pred = decode_detections(boxes_t, deltas, im.shape, cfg.TEST.BBOX_REG)
    scores, pred = scores.numpy(), pred.reshape(len(scores), scores.shape[1] * 4).numpy()
    if inv is not None:
        scores, pred = scores[inv], pred[inv]
    return scores, pred


@torch.no_grad()
def im_proposals(model, im, cfg):
    """RPN proposals for one image (rpn_generate).

    model: FasterRCNN with an RPN, eval mode; its proposal layer uses cfg.TEST.RPN_*.
    -> boxes [P, 4] np float32 in original-image coords, scores [P] np float32.
    """
    device = _device_of(model)
    images, im_info, scale = get_test_blob(im, cfg)
    out = model(images.to(device), im_info.to(device))
    boxes = (out["rois"][:, 1:5] / scale).float().cpu().numpy()
    scores = out["rpn_scores"].float().reshape(-1).cpu().numpy()
    return boxes, scores


def decode_detections(boxes, bbox_pred, image_size, bbox_reg=True):
    """Per-class boxes of the RoIs, clipped to the image (im_detect's bbox_transform_inv +
    clip_boxes), in torch ops that torch.export and the ONNX exporter trace.

    boxes [R, 4] RoIs in original-image pixels; bbox_pred [R, 4(K+1)] deltas; image_size (H, W)
    sequence or tensor; bbox_reg False (TEST.BBOX_REG): the RoIs tiled -> [R, K+1, 4].
    """
    k = bbox_pred.shape[1] // 4
    if bbox_reg:
        pred = decode_boxes(boxes.to(bbox_pred.dtype), bbox_pred)
    else:
        pred = boxes[:, None, :].expand(-1, k, 4).to(bbox_pred.dtype)
    return clip_boxes(pred.reshape(-1, 4 * k), image_size).reshape(-1, k, 4)


def select_detections(scores, boxes, score_thresh, nms_thresh, max_per_image):
    """The test-time post-processing, written once (test_net, Detector, the .pt2 and the ONNX
    graph all run this): per class j >= 1 the boxes with score > score_thresh, NMS at nms_thresh
    (+1 pixel IoU), then over all classes the scores >= the max_per_image-th best (<= 0: no cap),
    as py-faster-rcnn's test_net.

    scores [R, K+1], boxes [R, K+1, 4] torch -> (boxes [D, 4], scores [D], labels [D] int64) by
    descending score (ties: lower class, then NMS order first).
    """
    from frcnn.ops import nms as nms_op

    all_boxes, all_scores, all_labels = [], [], []
    for j in range(1, scores.shape[1]):
        sj = scores[:, j]
        inds = torch.nonzero(sj > score_thresh).reshape(-1)
        b, s = boxes[inds, j], sj[inds]
        keep = nms_op(b, s, nms_thresh)
        all_boxes.append(b[keep])
        all_scores.append(s[keep])
        all_labels.append(torch.full_like(keep, j))
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    labels = torch.cat(all_labels)
    if max_per_image > 0:
        # scores >= the max_per_image-th best; padding keeps everything when there are fewer
        ranked = torch.sort(scores, descending=True, stable=True).values
        kth = torch.cat([ranked, ranked.new_full((max_per_image,), -1.0)])[max_per_image - 1]
        keep = torch.nonzero(scores >= kth).reshape(-1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = torch.sort(scores, descending=True, stable=True).indices
    return boxes[order], scores[order], labels[order]


def detections_for_image(scores, boxes, num_classes, thresh, nms_thresh, max_per_image):
    """select_detections on im_detect's numpy output, as py-faster-rcnn's per-class lists.

    scores [R, K+1], boxes [R, 4(K+1)] -> list of K+1 arrays [D, 5] (x1, y1, x2, y2, score),
    entry 0 empty, each by descending score.
    """
    scores_t = torch.as_tensor(np.asarray(scores, np.float32))[:, :num_classes]
    boxes = np.asarray(boxes, np.float32)
    boxes_t = torch.as_tensor(boxes).reshape(len(scores_t), boxes.shape[1] // 4, 4)
    b, s, labels = select_detections(scores_t, boxes_t[:, :num_classes], float(thresh),
                                     float(nms_thresh), int(max_per_image))
    dets = torch.cat([b, s[:, None]], dim=1).numpy()
    labels = labels.numpy()
    # the global order is stable, so each class keeps its NMS order
    return [np.zeros((0, 5), np.float32)] + [dets[labels == j] for j in range(1, num_classes)]


def vis_detections(im, dets_per_class, classes, thresh=0.5):
    """Draw labelled boxes with score >= thresh on a copy of a BGR image."""
    im = im.copy()
    palette = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
               (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
               (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0)]
    th = max(1, round(min(im.shape[:2]) / 300))
    for j in range(1, len(classes)):
        color = palette[(j - 1) % len(palette)]
        for x1, y1, x2, y2, s in dets_per_class[j]:
            if s < thresh:
                continue
            p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
            cv2.rectangle(im, p1, p2, color, th)
            label = f"{classes[j]} {s:.2f}"
            fs = 0.4 * th
            (tw, tht), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
            ty = max(p1[1], tht + base)
            cv2.rectangle(im, (p1[0], ty - tht - base), (p1[0] + tw, ty), color, -1)
            cv2.putText(im, label, (p1[0], ty - base), cv2.FONT_HERSHEY_SIMPLEX, fs,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return im


@torch.no_grad()
def test_net(model, imdb, cfg, output_dir, max_per_image=None, thresh=None, proposals=None,
             vis_dir=None, log_every=None, timings=None):
    """Detect on every image of `imdb` and evaluate; -> mAP (float).

    proposals: optional list (imdb order) of [P, 4] original-image boxes when the model has no
    RPN (TEST.HAS_RPN False). Writes detections.pkl and the results files into output_dir,
    prints AP per class (imdb.evaluate_detections) and ms/image for im_detect and misc.
    Under torchrun each rank detects every world_size-th image; rank 0 gathers, writes and
    evaluates, and every rank returns the mAP. timings: a dict to receive 'im_detect' and
    'misc' seconds per image (this process).
    """
    max_per_image = cfg.TEST.MAX_PER_IMAGE if max_per_image is None else max_per_image
    thresh = cfg.TEST.SCORE_THRESH if thresh is None else thresh
    model.eval()
    device = _device_of(model)
    num_images, num_classes = imdb.num_images, imdb.num_classes
    rank, world = du.get_rank(), du.get_world_size()
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
    t_det, t_misc = Timer(_sync(device)), Timer()
    mine = du.shard_indices(num_images, rank, world)
    local = {}
    log_every = log_every or max(1, min(100, len(mine) // 10))
    for n_done, i in enumerate(mine, 1):
        path = imdb.image_path_at(i)
        im = cv2.imread(path)
        if im is None:
            raise FileNotFoundError(f"cannot read image {path} (image {i} of {imdb.name})")
        t_det.tic()
        scores, boxes = im_detect(model, im, cfg, None if proposals is None else proposals[i])
        t_det.toc()
        t_misc.tic()
        dets = detections_for_image(scores, boxes, num_classes, thresh, cfg.TEST.NMS,
                                    max_per_image)
        local[i] = dets
        if vis_dir:
            os.makedirs(vis_dir, exist_ok=True)
            cv2.imwrite(os.path.join(vis_dir, f"{imdb.image_index[i]}.png"),
                        vis_detections(im, dets, imdb.classes))
        t_misc.toc()
        if rank == 0 and (n_done % log_every == 0 or n_done == len(mine)):
            print(f"im_detect: {n_done}/{len(mine)}" + (f" (x{world} processes)" if world > 1 else "")
                  + f" {t_det.average_time:.3f}s {t_misc.average_time:.3f}s", flush=True)
    if timings is not None:
        timings.update(im_detect=t_det.average_time, misc=t_misc.average_time)
    gathered = du.gather_by_index(local, num_images)
    mAP = None
    if rank == 0:
        mAP = _save_and_evaluate(imdb, gathered, output_dir, t_det, t_misc, device, world)
    return du.broadcast_object(mAP)


def _save_and_evaluate(imdb, gathered, output_dir, t_det, t_misc, device, world):
    """Rank 0's part of test_net: write detections.pkl, print the speed, evaluate; -> mAP."""
    num_images, num_classes = imdb.num_images, imdb.num_classes
    all_boxes = [[np.zeros((0, 5), dtype=np.float32) for _ in range(num_images)]
                 for _ in range(num_classes)]
    for i, dets in enumerate(gathered):
        for j in range(1, num_classes):
            all_boxes[j][i] = dets[j]
    with open(os.path.join(output_dir, "detections.pkl"), "wb") as f:
        pickle.dump(all_boxes, f, pickle.HIGHEST_PROTOCOL)
    print(f"Speed: im_detect {1000 * t_det.average_time:.1f} ms/image, misc "
          f"{1000 * t_misc.average_time:.1f} ms/image ({num_images} images, device {device}"
          + (f", per process of {world}" if world > 1 else "") + ")")
    print("Evaluating detections")
    mAP = float(imdb.evaluate_detections(all_boxes, output_dir))
    _write_pr_curves(imdb, output_dir)
    return mAP


def _write_pr_curves(imdb, output_dir):
    from frcnn.fast_rcnn.reval import write_pr_curves

    try:
        paths = write_pr_curves(imdb, output_dir)
    except ImportError as e:  # matplotlib missing: the evaluation itself is done
        print(f"no PR plots: {e}")
        return
    if paths:
        print(f"PR curves: {os.path.join(output_dir, 'pr')}/<class>.png ({len(paths)} classes)")


@torch.no_grad()
def imdb_proposals(model, imdb, cfg, log_every=None):
    """RPN proposals for every image of `imdb` (unflipped, imdb order).

    -> list of [P, 4] np float32 boxes in original-image coords (scores are not kept, as in
       the reference's rpn_generate). Under torchrun the images are split over the ranks and
       the list is gathered on rank 0; the other ranks get None.
    """
    model.eval()
    t = Timer(_sync(_device_of(model)))
    mine = du.shard_indices(imdb.num_images)
    log_every = log_every or max(1, min(100, len(mine) // 10))
    boxes = {}
    for i in mine:
        path = imdb.image_path_at(i)
        im = cv2.imread(path)
        if im is None:
            raise FileNotFoundError(f"cannot read image {path} (image {i} of {imdb.name})")
        t.tic()
        b, _ = im_proposals(model, im, cfg)
        t.toc()
        boxes[i] = b
        if du.is_main_process() and (len(boxes) % log_every == 0 or len(boxes) == len(mine)):
            print(f"im_proposals: {len(boxes)}/{len(mine)}"
                  + (f" (x{du.get_world_size()} processes)" if du.is_dist() else "")
                  + f" {t.average_time:.3f}s ({np.mean([len(x) for x in boxes.values()]):.0f} "
                  "boxes/image)", flush=True)
    return du.gather_by_index(boxes, imdb.num_images)
