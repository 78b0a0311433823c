"""Detection for applications.

    from frcnn import Detector
    det = Detector.from_file("output/cards_alt_opt/VOCcards_trainval/elite0_faster_rcnn_final.pth")
    d = det("photo.jpg")                 # or a BGR uint8 array [H, W, 3], or a list of either
    for name, score, (x1, y1, x2, y2) in zip(d.class_names, d.scores, d.boxes): ...
    det(images, score_thresh=0.5)        # thresholds: the model's cfg TEST.* unless given

Built on frcnn.fast_rcnn.test: im_detect (one image resized to TEST.SCALES[0]) and
detections_for_image (per-class score threshold, NMS, cap per image), so the results are those
of tools/test_net.py. Boxes are (x1, y1, x2, y2) in original-image pixels, 0-based, inclusive.
"""
import os

import numpy as np

from frcnn.detections import DEFAULT_DRAW_THRESH, BatchCall, Detections, read_any_image
from frcnn.errors import ConfigError


def load_cfg(cfg=None, model_path=None, stored=None):
    """The cfg a model is run with: `cfg` (an EasyDict or a yml path) if given, else the cfg
    stored in the model file, else cfg.yml beside the model file (written by the training
    scripts), else the defaults. -> (cfg, where it came from)."""
    from frcnn.config import cfg_from_file, get_default_cfg

    if cfg is not None and not isinstance(cfg, (str, os.PathLike)):
        return cfg, "given"
    out = get_default_cfg()
    if cfg is not None:
        if not os.path.isfile(cfg):
            raise ConfigError(f"{cfg}: config file not found; give an existing yml")
        return cfg_from_file(str(cfg), out), str(cfg)
    if isinstance(stored, str) and stored.strip():
        import yaml

        from frcnn.config import merge_into

        return merge_into(yaml.safe_load(stored) or {}, out), "model file"
    if model_path is not None:
        side = os.path.join(os.path.dirname(os.path.abspath(model_path)), "cfg.yml")
        if os.path.isfile(side):
            return cfg_from_file(side, out), side
    return out, "defaults"


def model_cfg(model_path, cfg_file=None, set_cfgs=None, device=None):
    """The cfg for running a model from the command line: `cfg_file` over the defaults if given,
    else what load_cfg finds for the model file; then the --set pairs. Bad keys -> ConfigError."""
    from frcnn.config import cfg_from_list

    stored = None
    if cfg_file is None and os.path.isfile(str(model_path)):
        from frcnn.model_file import ModelFile

        stored = ModelFile.load(model_path, mmap=True).meta.get("cfg")
    try:
        cfg, _ = load_cfg(cfg_file, model_path, stored)
        if set_cfgs:
            cfg_from_list(list(set_cfgs), cfg)
    except (KeyError, ValueError, TypeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        where = cfg_file or ("--set " + " ".join(set_cfgs or []))
        raise ConfigError(f"{where}: {msg}; keys and types as in frcnn/config.py") from e
    if device:
        cfg.DEVICE = device
    return cfg


class Detector(BatchCall):
    """A trained Faster R-CNN ready to run on images (see the module docstring).

    model: FasterRCNN with RPN and head; classes: names with '__background__' at 0;
    cfg: the test settings (TEST.SCALES, MAX_SIZE, RPN_*, NMS, SCORE_THRESH, MAX_PER_IMAGE).
    """

    def __init__(self, model, classes, cfg, score_thresh=None, nms_thresh=None,
                 max_per_image=None):
        self.model = model.eval()
        self.classes = list(classes)
        self.cfg = cfg
        model.cfg = cfg
        self.score_thresh = cfg.TEST.SCORE_THRESH if score_thresh is None else float(score_thresh)
        self.nms_thresh = cfg.TEST.NMS if nms_thresh is None else float(nms_thresh)
        self.max_per_image = cfg.TEST.MAX_PER_IMAGE if max_per_image is None else int(max_per_image)
        self.net = None
        self.draw_thresh = DEFAULT_DRAW_THRESH  # from_file: the F1-best score test_net stored

    @property
    def device(self):
        from frcnn.fast_rcnn.test import _device_of

        return _device_of(self.model)

    @classmethod
    def from_file(cls, path, device="cpu", cfg=None, net=None, classes=None, trust_file=False,
                  **thresholds):
        """Load a *_faster_rcnn_final.pth (or end2end final) written by the training tools, or an
        .onnx written by tools/export.py (-> frcnn.deploy.OnnxDetector on ONNX Runtime).

        net / classes: only for files that do not store them. cfg: see load_cfg.
        trust_file: load it even if it asks to run code (only for a file you trust; by default
        such a file raises frcnn.safe_io.UnsafeFileError, see frcnn.safe_io).
        thresholds: score_thresh, nms_thresh, max_per_image (default: cfg TEST.*).
        """
        if str(path).lower().endswith(".onnx"):  # tools/export.py --format onnx; no torch
            from frcnn.deploy import OnnxDetector

            return OnnxDetector(path, **thresholds)
        from frcnn.model_file import ModelFile
        from frcnn.safe_io import trust

        if trust_file:
            trust(path)
        mf = ModelFile.load(path)
        classes = list(classes or mf.classes)
        if classes and classes[0] != "__background__":
            classes = ["__background__"] + classes
        cfg, _ = load_cfg(cfg, str(path), mf.meta.get("cfg"))
        model = mf.build(cfg, ("rpn", "head"), device, net=net, num_classes=len(classes))
        det = cls(model, classes, cfg, **thresholds)
        det.net = (net or mf.net).upper()
        if mf.meta.get("draw_thresh") is not None:
            det.draw_thresh = float(mf.meta["draw_thresh"])
        return det

    def detect_one(self, image, score_thresh=None, nms_thresh=None, max_per_image=None):
        """One image (path or BGR array) -> Detections."""
        from frcnn.fast_rcnn.test import detections_for_image, im_detect

        im = read_any_image(image)
        scores, boxes = im_detect(self.model, im, self.cfg)
        per_class = detections_for_image(
            scores, boxes, len(self.classes),
            self.score_thresh if score_thresh is None else score_thresh,
            self.nms_thresh if nms_thresh is None else nms_thresh,
            self.max_per_image if max_per_image is None else max_per_image)
        return self._flatten(per_class, im.shape[:2])

    def _flatten(self, per_class, hw):
        dets = np.concatenate([d for d in per_class[1:]] + [np.zeros((0, 5), np.float32)])
        labels = np.concatenate([np.full(len(d), j, np.int64) for j, d in enumerate(per_class)
                                 if j > 0] + [np.zeros(0, np.int64)])
        order = np.argsort(-dets[:, 4], kind="stable")
        dets, labels = dets[order], labels[order]
        return Detections(boxes=dets[:, :4].astype(np.float32), scores=dets[:, 4].astype(np.float32),
                          labels=labels, class_names=[self.classes[j] for j in labels],
                          image_size=(int(hw[0]), int(hw[1])))

    def __repr__(self):
        return (f"<Detector {self.net} {len(self.classes) - 1} classes on {self.device}, "
                f"score>{self.score_thresh} nms {self.nms_thresh} max {self.max_per_image}>")
