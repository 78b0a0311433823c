"""The whole detector as one program: torch.export (.pt2) or ONNX (tools/export.py).

    program(images [1, 3, h, w] f32, im_info [1, 3] (h, w, scale) f32, image_size [2] (H, W) f32)
      -> boxes [D, 4] f32 (x1, y1, x2, y2 original-image pixels), scores [D] f32, labels [D] i64

The inputs are what frcnn.fast_rcnn.test.get_test_blob makes of a BGR image (resize to
TEST.SCALES[0] / MAX_SIZE, minus PIXEL_MEANS): image_size is the original image's (H, W) used to
clip the boxes. The program holds backbone, RPN with its proposal layer, RoI pooling, the head and
the test post-processing (fast_rcnn/test.py decode_detections + select_detections, the code
test_net and Detector run). Thresholds are fixed at export time.

.pt2: the frcnn ops stay frcnn::nms / frcnn::roi_pool, so loading needs torch and the frcnn ops
library (torch.ops.load_library on lib/frcnn/_C*.so).
.onnx: standard ONNX ops only (opset 18): frcnn::nms becomes NonMaxSuppression on boxes with
x2 + 1, y2 + 1 (the +1 pixel IoU of py-faster-rcnn), frcnn::roi_pool MaxRoiPool (Caffe's
rounding), frcnn::roi_align RoiAlign (half_pixel for aligned, output_half_pixel otherwise).
The metadata (metadata_props) holds the class names, pixel means, test scale and thresholds as
JSON under "frcnn"; frcnn.deploy runs the file without torch.
"""
import json
import logging
import os
import warnings

import torch
import torch.nn as nn

ONNX_OPSET = 18
META_KEY = "frcnn"  # metadata_props key (.onnx) / extra file "classes.json" (.pt2)


class DetectorProgram(nn.Module):
    """FasterRCNN (eval) + the test post-processing of fast_rcnn/test.py."""

    def __init__(self, model, num_classes, score_thresh, nms_thresh, max_per_image, bbox_reg=True):
        super().__init__()
        self.model = model.eval()
        self.num_classes = int(num_classes)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.max_per_image = int(max_per_image)
        self.bbox_reg = bool(bbox_reg)

    def forward(self, images, im_info, image_size):
        from frcnn.fast_rcnn.test import decode_detections, select_detections

        out = self.model(images, im_info)
        rois = out["rois"][:, 1:5] / im_info[0, 2]
        pred = decode_detections(rois, out["bbox_pred"], image_size, self.bbox_reg)
        return select_detections(out["cls_prob"], pred, self.score_thresh, self.nms_thresh,
                                 self.max_per_image)


def example_inputs(cfg, height=None, width=None):
    """A blob the size of a TEST.SCALES image, for tracing."""
    import numpy as np

    from frcnn.fast_rcnn.test import get_test_blob

    s = cfg.TEST.SCALES[0]
    im = np.zeros((height or s, width or int(s * 4 / 3), 3), np.uint8)
    images, im_info, _ = get_test_blob(im, cfg)
    return images, im_info, torch.tensor(im.shape[:2], dtype=torch.float32)


def _program(det):
    import copy

    model = copy.deepcopy(det.model).cpu().eval()
    for p in model.parameters():  # outputs without autograd history
        p.requires_grad_(False)
    return DetectorProgram(model, len(det.classes), det.score_thresh, det.nms_thresh,
                           det.max_per_image, det.cfg.TEST.BBOX_REG).eval()


def _dynamic_shapes():
    from torch.export import Dim

    h = Dim("h", min=32, max=4096)
    w = Dim("w", min=32, max=4096)
    return {"images": {2: h, 3: w}, "im_info": None, "image_size": None}


def export_detector(det, path=None, example=None):
    """torch.export the Detector `det` (frcnn.api) -> ExportedProgram (saved to `path` if given).

    The blob's height and width are dynamic (any image size)."""
    from torch.export import export

    prog = _program(det)
    example = example or example_inputs(det.cfg)
    with torch.no_grad():
        ep = export(prog, example, dynamic_shapes=_dynamic_shapes(), strict=False)
    if path is not None:
        torch.export.save(ep, path, extra_files={"classes.json": metadata_json(det)})
    return ep


def export_onnx(det, path, example=None):
    """Write the Detector `det` as an ONNX file of standard ops (see the module docstring) with
    dynamic image height and width and the metadata JSON; -> path."""
    import onnx

    prog = _program(det)
    example = example or example_inputs(det.cfg)
    # quiet: the exporter warns about torchvision ops it will not need and its own deprecations
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        onnx_prog = torch.onnx.export(
            prog, example, dynamo=True, opset_version=ONNX_OPSET, external_data=False,
            dynamic_shapes=_dynamic_shapes(), custom_translation_table=onnx_translations(),
            input_names=["images", "im_info", "image_size"],
            output_names=["boxes", "scores", "labels"], report=False, verbose=False)
    proto = onnx_prog.model_proto
    _set_metadata(proto, metadata_json(det))
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def _set_metadata(proto, text):
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            entry.value = text
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, text


def metadata_json(det):
    """What a runner needs beside the graph: class names, blob recipe, thresholds."""
    c = det.cfg
    return json.dumps({"classes": det.classes, "net": det.net,
                       "test_scale": int(c.TEST.SCALES[0]), "test_max_size": int(c.TEST.MAX_SIZE),
                       "pixel_means_bgr": [float(x) for x in c.PIXEL_MEANS.reshape(-1)],
                       "score_thresh": det.score_thresh, "nms": det.nms_thresh,
                       "max_per_image": det.max_per_image, "draw_thresh": det.draw_thresh,
                       "pooling_mode": str(c.POOLING_MODE)})


def onnx_translations():
    """frcnn ops -> standard ONNX ops, for torch.onnx.export's custom_translation_table."""
    from onnxscript import opset18 as op

    from frcnn.ops import _ext, nms as _registers_fake_kernels  # noqa: F401

    _ext.require()  # torch.ops.frcnn.* exist once frcnn._C is loaded

    def nms(boxes, scores, iou_threshold: float, offset: int = 1):
        # ONNX IoU has no +1: widen every box by `offset` so its area and intersections are the
        # +1 ones. One batch, one class: selected rows are (0, 0, box index), by score.
        lo = op.Slice(boxes, [0], [2], [1])
        hi = op.Add(op.Slice(boxes, [2], [4], [1]), op.Constant(value_float=float(offset)))
        shifted = op.Unsqueeze(op.Concat(lo, hi, axis=1), [0])
        sel = op.NonMaxSuppression(shifted, op.Unsqueeze(scores, [0, 1]),
                                   op.Constant(value_ints=[2 ** 31 - 1]),
                                   op.Constant(value_floats=[float(iou_threshold)]),
                                   center_point_box=0)
        return op.Reshape(op.Slice(sel, [2], [3], [1]), [-1])

    def roi_pool(features, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
        out = op.MaxRoiPool(features, rois, pooled_shape=[pooled_height, pooled_width],
                            spatial_scale=spatial_scale)
        return out, op.Cast(out, to=6)  # argmax: training only, never read in a test graph

    def roi_align(features, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                  sampling_ratio: int, aligned: bool):
        batch = op.Cast(op.Reshape(op.Slice(rois, [0], [1], [1]), [-1]), to=7)
        return op.RoiAlign(features, op.Slice(rois, [1], [5], [1]), batch, mode="avg",
                           output_height=pooled_height, output_width=pooled_width,
                           sampling_ratio=sampling_ratio, spatial_scale=spatial_scale,
                           coordinate_transformation_mode="half_pixel" if aligned
                           else "output_half_pixel")

    def sort(x, stable: bool = None, dim: int = -1, descending: bool = False):
        # TopK over the whole axis: ties keep the lower index first, as a stable sort
        k = op.Reshape(op.Gather(op.Shape(x), [dim]), [1])
        return op.TopK(x, k, axis=dim, largest=1 if descending else 0, sorted=1)

    return {torch.ops.aten.sort.stable: sort, torch.ops.frcnn.nms.default: nms, torch.ops.frcnn.roi_pool.default: roi_pool,
            torch.ops.frcnn.roi_align.default: roi_align}


def calibration_images(imdb, n=100):
    """n image paths spread evenly over an imdb (its order), for int8 calibration."""
    import numpy as np

    idx = np.unique(np.linspace(0, imdb.num_images - 1, min(n, imdb.num_images)).round().astype(int))
    return [imdb.image_path_at(int(i)) for i in idx]


# int8 where it pays and cannot move a box: convolutions, fc layers and the explicit pads between
# ELITE0's convolutions (a float Pad would need a DequantizeLinear / QuantizeLinear pair)
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Pad"]


# Layers kept float32 in the int8 file: the first convolution (it sees the raw blob, -128..128
# in uint8 steps), the whole RPN and the head's two predictors. With the stem and the RPN conv
# in int8 too, cards mAP fell by 0.025 (ONNX Runtime) / 0.035 (OpenVINO); without, +0.003 / -0.016.
FLOAT_LAYERS = ("rpn.rpn_conv.weight", "rpn.rpn_cls_score.weight", "rpn.rpn_bbox_pred.weight",
                "head.cls_score.weight", "head.bbox_pred.weight")


def _float_nodes(path):
    import onnx

    graph = onnx.load(path).graph
    first_conv = next(n.name for n in graph.node if n.op_type == "Conv")  # nodes are in order
    return [first_conv] + [n.name for n in graph.node
                           if any(i.endswith(FLOAT_LAYERS) for i in n.input)]


def quantize_int8(onnx_path, out_path, image_paths):
    """ONNX Runtime static quantization (QDQ, int8 weights per channel, uint8 activations) of the
    convolutions and fully connected layers of an exported detector but the first convolution
    and FLOAT_LAYERS, calibrated (MinMax) on the images' blobs. Box arithmetic, RoI pooling and
    NMS stay float32.
    -> out_path."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from frcnn.detections import read_any_image
    from frcnn.deploy import onnx_blob, read_metadata

    meta = read_metadata(onnx_path)

    class Blobs(CalibrationDataReader):
        def __init__(self):
            self.paths = iter(image_paths)

        def get_next(self):
            path = next(self.paths, None)
            return None if path is None else onnx_blob(read_any_image(path), meta)

    # ORT's graph optimizations first (the warning quantize_static gives without them): they
    # fold ELITE0's frozen-BN Mul / Add into the convolutions, which otherwise sit between
    # QuantizeLinear / DequantizeLinear pairs in float and made the int8 file slower than fp32
    prepared = out_path + ".prep.onnx"
    quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
    quantize_static(prepared, out_path, Blobs(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                    nodes_to_exclude=_float_nodes(prepared),
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    os.remove(prepared)
    import onnx

    proto = onnx.load(out_path)  # the metadata, whether or not the quantizer kept it
    _set_metadata(proto, json.dumps(dict(meta, int8=True)))
    onnx.save(proto, out_path)
    return out_path
