"""Run an exported detector (tools/export.py --format onnx) without torch or the compiled ops:
onnxruntime or openvino, numpy and opencv only.

    from frcnn.deploy import OnnxDetector
    det = OnnxDetector("detector.onnx")                  # backend="openvino" for OpenVINO's CPU runtime
    d = det("photo.jpg")                                 # or a BGR uint8 array, or a list of either
    for name, score, box in zip(d.class_names, d.scores, d.boxes): ...

The image goes through the training blob recipe (frcnn.utils.blob: minus the pixel means, short
side to the test scale, long side <= the max size), the graph does the rest (backbone, RPN,
proposals, RoI pooling, head, per-class threshold + NMS, cap per image) and the result is a
frcnn.detections.Detections, as Detector gives. Class names, scale, means and thresholds come from the
file's metadata; thresholds are fixed at export.
"""
import json
import os

import numpy as np

from frcnn.detections import DEFAULT_DRAW_THRESH, BatchCall, Detections, read_any_image
from frcnn.errors import ConfigError
from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob

META_KEY = "frcnn"  # = frcnn.export.META_KEY (that module needs torch)
BACKENDS = ("onnxruntime", "openvino")
THRESHOLD_KEYS = {"score_thresh": "score_thresh", "nms_thresh": "nms", "max_per_image": "max_per_image"}


def onnx_blob(im, meta):
    """BGR uint8 [H, W, 3] -> the graph's feeds (images [1, 3, h, w], im_info [1, 3], image_size
    [2]), as frcnn.fast_rcnn.test.get_test_blob makes them."""
    im_r, scale = prep_im_for_blob(im, meta["pixel_means_bgr"], meta["test_scale"],
                                   meta["test_max_size"])
    blob = np.ascontiguousarray(im_list_to_blob([im_r]).transpose(0, 3, 1, 2))
    im_info = np.array([[blob.shape[2], blob.shape[3], scale]], np.float32)
    return {"images": blob, "im_info": im_info,
            "image_size": np.array(im.shape[:2], np.float32)}


def read_metadata(path):
    """The export's metadata JSON of an .onnx file (onnx's protobuf only, no runtime)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == META_KEY:
            return json.loads(entry.value)
    raise ConfigError(f"{path}: no '{META_KEY}' metadata; export the model with "
                      "tools/export.py --format onnx")


class OnnxDetector(BatchCall):
    """An exported detector on ONNX Runtime or OpenVINO (CPU); see the module docstring.

    backend: "onnxruntime" or "openvino"; num_threads: the runtime's intra-op threads (None: its
    default). Thresholds passed here must equal the exported ones (they are in the graph).
    """

    def __init__(self, path, backend="onnxruntime", num_threads=None, **thresholds):
        path = str(path)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: ONNX file not found; export one with tools/export.py "
                              "--format onnx, or fix the path")
        if backend not in BACKENDS:
            raise ConfigError(f"{path}: backend {backend!r}: use one of {', '.join(BACKENDS)}")
        self.path, self.backend = path, backend
        self.meta = read_metadata(path)
        self.classes = list(self.meta["classes"])
        self.net = self.meta.get("net")
        self.score_thresh = self.meta["score_thresh"]
        self.nms_thresh = self.meta["nms"]
        self.max_per_image = self.meta["max_per_image"]
        # detect.py's drawing default: the F1-best score test_net stored before export
        self.draw_thresh = float(self.meta.get("draw_thresh") or DEFAULT_DRAW_THRESH)
        self._check_thresholds(thresholds)
        self._run = (_ort_runner if backend == "onnxruntime" else _openvino_runner)(path, num_threads)

    def _check_thresholds(self, given):
        for name, value in given.items():
            if name not in THRESHOLD_KEYS:
                raise TypeError(f"OnnxDetector got an unexpected argument {name!r}")
            if value is not None and float(value) != float(self.meta[THRESHOLD_KEYS[name]]):
                raise ConfigError(f"{self.path}: {name} {value}: the file was exported with "
                                  f"{self.meta[THRESHOLD_KEYS[name]]} (fixed in the graph); "
                                  f"export again with tools/export.py --format onnx and the "
                                  "threshold you want")

    def detect_one(self, image, **thresholds):
        """One image (path or BGR array) -> Detections."""
        self._check_thresholds(thresholds)
        im = read_any_image(image)
        boxes, scores, labels = self._run(onnx_blob(im, self.meta))
        labels = labels.astype(np.int64)
        return Detections(boxes=boxes.astype(np.float32), scores=scores.astype(np.float32),
                          labels=labels, class_names=[self.classes[j] for j in labels],
                          image_size=(int(im.shape[0]), int(im.shape[1])))

    def __repr__(self):
        return (f"<OnnxDetector {self.net} {len(self.classes) - 1} classes on {self.backend}, "
                f"score>{self.score_thresh} nms {self.nms_thresh} max {self.max_per_image}>")


def _ort_runner(path, num_threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(["boxes", "scores", "labels"], feeds)


def _openvino_runner(path, num_threads):
    import openvino as ov

    # f32 everywhere that is not quantized: OpenVINO's CPU default on AMX / AVX512-BF16 CPUs is
    # bf16, whose 8-bit mantissa moves RoI coordinates above 256 px by whole pixels
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds):
        out = request.infer(feeds)
        by_name = {n: out[o] for n, o in zip(names, compiled.outputs)}
        return by_name["boxes"], by_name["scores"], by_name["labels"]

    return run


def match_detections(ref, other, box_tol=0.5, score_tol=1e-3):
    """How many detections of `ref` have their own partner in `other` (Detections, or anything
    with boxes, scores, labels): same label, every coordinate within box_tol px, score within
    score_tol; greedy one-to-one in ref's order."""
    used = np.zeros(len(other.scores), bool)
    matched = 0
    for box, score, label in zip(ref.boxes, ref.scores, ref.labels):
        ok = ((np.asarray(other.labels) == label) & ~used
              & (np.abs(np.asarray(other.scores) - score) <= score_tol)
              & (np.abs(np.asarray(other.boxes) - box).max(axis=1, initial=0) <= box_tol))
        hit = np.flatnonzero(ok)
        if len(hit):
            used[hit[0]] = True
            matched += 1
    return matched


def evaluate_imdb(det, imdb, output_dir):
    """mAP (imdb.evaluate_detections, the VOC devkit's for VOC-style sets) of a Detector or an
    OnnxDetector over every image of `imdb`."""
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(imdb.num_images)]
                 for _ in range(imdb.num_classes)]
    for i in range(imdb.num_images):
        d = det(imdb.image_path_at(i))
        dets = np.hstack([d.boxes, d.scores[:, None]]).astype(np.float32)
        for j in range(1, imdb.num_classes):
            all_boxes[j][i] = dets[d.labels == j]
    return float(imdb.evaluate_detections(all_boxes, output_dir))
