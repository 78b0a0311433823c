"""Configuration: py-faster-rcnn's key names and default values.

A cfg is an EasyDict built by `get_default_cfg()` and passed explicitly; yml files and
`--set KEY VALUE` lists are merged into it. Nothing here mutates shared state at import.
"""
import ast
import os

import numpy as np
from easydict import EasyDict as edict

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _defaults():
    C = edict()

    C.TRAIN = edict()
    C.TRAIN.SCALES = (600,)             # short side of the resized image
    C.TRAIN.MAX_SIZE = 1000             # cap on the long side
    C.TRAIN.IMS_PER_BATCH = 2
    C.TRAIN.BATCH_SIZE = 128            # RoIs per minibatch (all images)
    C.TRAIN.FG_FRACTION = 0.25
    C.TRAIN.FG_THRESH = 0.5
    C.TRAIN.BG_THRESH_HI = 0.5
    C.TRAIN.BG_THRESH_LO = 0.1
    C.TRAIN.USE_FLIPPED = True
    # Images without objects train as negatives (anchors and RoIs all background): True, False,
    # or 'auto' = the data set's choice (labelled folders yes; the paper's VOC / COCO no, as the
    # reference's filter_roidb dropped them)
    C.TRAIN.KEEP_EMPTY_IMAGES = "auto"
    C.TRAIN.BBOX_REG = True
    # sigma of the head's smooth L1 (the reference's 1; torchvision's beta 1/9 is sigma 3)
    C.TRAIN.BBOX_SMOOTH_L1_SIGMA = 1.0
    C.TRAIN.BBOX_THRESH = 0.5           # min IoU of a RoI with a gt to get a regression target
    C.TRAIN.SNAPSHOT_ITERS = 10000
    C.TRAIN.SNAPSHOT_INFIX = ""
    C.TRAIN.BBOX_NORMALIZE_TARGETS = True
    C.TRAIN.BBOX_INSIDE_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    C.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = False
    C.TRAIN.BBOX_NORMALIZE_MEANS = (0.0, 0.0, 0.0, 0.0)
    C.TRAIN.BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)
    C.TRAIN.PROPOSAL_METHOD = "gt"
    C.TRAIN.ASPECT_GROUPING = True
    C.TRAIN.HAS_RPN = True              # reference default False (Fast R-CNN); False here = --proposals
    C.TRAIN.RPN_POSITIVE_OVERLAP = 0.7
    C.TRAIN.RPN_NEGATIVE_OVERLAP = 0.3
    C.TRAIN.RPN_CLOBBER_POSITIVES = False
    C.TRAIN.RPN_FG_FRACTION = 0.5
    C.TRAIN.RPN_BATCHSIZE = 256
    C.TRAIN.RPN_NMS_THRESH = 0.7
    C.TRAIN.RPN_PRE_NMS_TOP_N = 12000
    C.TRAIN.RPN_POST_NMS_TOP_N = 2000
    C.TRAIN.RPN_MIN_SIZE = 16
    C.TRAIN.RPN_BBOX_INSIDE_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    C.TRAIN.RPN_POSITIVE_WEIGHT = -1.0  # <0: uniform 1/#sampled
    # Multiplier of the RPN box loss (1 = reference). The reference divides cls and reg by the
    # sampled count (256); the paper divides reg by ~2400 anchor locations with lambda 10, so the
    # paper's lambda = RPN_BBOX_LOSS_WEIGHT * N_loc / 256 (~ x10 at N_loc 2400; Table 9).
    C.TRAIN.RPN_BBOX_LOSS_WEIGHT = 1.0
    C.TRAIN.NUM_WORKERS = 2             # DataLoader workers

    C.TEST = edict()
    C.TEST.SCALES = (600,)
    C.TEST.MAX_SIZE = 1000
    C.TEST.NMS = 0.3
    C.TEST.BBOX_REG = True
    C.TEST.HAS_RPN = True               # reference default False; False here = test_net --proposals
    C.TEST.PROPOSAL_METHOD = "selective_search"
    C.TEST.RPN_NMS_THRESH = 0.7
    C.TEST.RPN_PRE_NMS_TOP_N = 6000
    C.TEST.RPN_POST_NMS_TOP_N = 300
    C.TEST.RPN_MIN_SIZE = 16
    C.TEST.SCORE_THRESH = 0.05          # per-class detection threshold in test_net
    C.TEST.MAX_PER_IMAGE = 100

    # Solver (py-faster-rcnn keeps these in solver.prototxt files).
    C.SOLVER = edict()
    C.SOLVER.BASE_LR = 0.001
    C.SOLVER.MOMENTUM = 0.9
    C.SOLVER.WEIGHT_DECAY = 0.0005
    C.SOLVER.GAMMA = 0.1
    C.SOLVER.WARMUP_ITERS = 0           # linear lr warm-up (Goyal et al. 2017); 0: none (reference)
    C.SOLVER.WARMUP_FACTOR = 1.0 / 3    # the first iteration's lr, as a fraction of the base lr
    C.SOLVER.BIAS_LR_MULT = 2.0
    C.SOLVER.BIAS_DECAY = True          # Caffe decays biases too (decay_mult 1)
    # Mixed precision for training, proposals and testing: True (float16 autocast on CUDA,
    # bfloat16 on the CPU), False (float32), or 'auto': bfloat16 on a CPU with bf16 matrix units
    # (AMX-BF16 / AVX512-BF16) for the nets it speeds up (models.BF16_PAYS_ON_CPU: VGG16 2.6-3.8x,
    # ZF 1.6x), float32 for the others, on CUDA and on other CPUs.
    C.SOLVER.AMP = "auto"
    C.SOLVER.DISPLAY = 20               # print smoothed losses every N iterations
    # 'fixed': the ITERS / STEPSIZES schedule (the paper's). 'plateau': each stage measures itself
    # on held-out training images every EVAL_PERIOD iterations, lr x GAMMA after PATIENCE
    # evaluations without improvement, stops at the MAX_PLATEAUS-th plateau or at the ceiling
    # (CEILING x its ITERS), and hands on its best weights (frcnn.engine.plateau; auto-sized
    # folders use it).
    C.SOLVER.SCHEDULE = "fixed"
    C.SOLVER.PLATEAU = edict()
    C.SOLVER.PLATEAU.CEILING = 1.5      # a stage trains at most this x its ITERS / MAX_ITERS
    # iterations between evaluations; 0: a 10th of the ceiling (an evaluation is not free: on
    # cards, ELITE0, its 30 held-out images cost about as much as 30-50 stage-1 RPN iterations)
    C.SOLVER.PLATEAU.EVAL_PERIOD = 0
    C.SOLVER.PLATEAU.PATIENCE = 2       # evaluations without a new best that make a plateau
    C.SOLVER.PLATEAU.MAX_PLATEAUS = 2   # the lr drops at each plateau before this one; stop at it
    C.SOLVER.PLATEAU.MIN_DELTA = 0.0    # a new best must beat the old by more than this
    C.SOLVER.PLATEAU.VAL_FRACTION = 0.1  # share of the training images held out (name hash)
    C.SOLVER.PLATEAU.VAL_MIN_IMAGES = 20  # ... but at least this many (at most half the set)

    # 4-step alternating optimisation: stage1 RPN, stage1 Fast R-CNN, stage2 RPN, stage2 Fast R-CNN.
    C.ALT_OPT = edict()
    C.ALT_OPT.ITERS = (80000, 40000, 80000, 40000)
    C.ALT_OPT.STEPSIZES = (60000, 30000, 60000, 30000)
    # Proposals between stages (rpn_generate): each train image unflipped, TEST.SCALES,
    # TEST.RPN_NMS_THRESH / RPN_MIN_SIZE; -1 = no pre-NMS cut, as the reference.
    C.ALT_OPT.PROPOSAL_PRE_NMS_TOP_N = -1
    C.ALT_OPT.PROPOSAL_POST_NMS_TOP_N = 2000
    C.ALT_OPT.BASE_LRS = ()             # per-stage lr; empty = SOLVER.BASE_LR for all four

    # Approximate joint training.
    C.END2END = edict()
    C.END2END.MAX_ITERS = 70000
    C.END2END.STEPSIZE = 50000
    C.END2END.ITER_SIZE = 2             # images per update through gradient accumulation

    # Multi-GPU / multi-node (torchrun). Images per GPU stay the reference's (1 for RPN stages,
    # 2 for Fast R-CNN stages, 1 x END2END.ITER_SIZE end2end), so N processes = N x the batch.
    C.DIST = edict()
    C.DIST.LR_SCALING = "linear"        # 'linear': lr x N (Goyal et al. 2017); 'none': reference lr
    C.DIST.SCHEDULE_SCALING = "none"    # 'linear': iterations and lr steps / N (same images seen)
    C.DIST.CPU_PROCESSES = 1            # experiments/*.sh on the CPU: processes (1 thread each)
    C.DIST.FIND_UNUSED_PARAMETERS = False  # stage models hold only used trainable params
    C.DIST.TIMEOUT_MIN = 30             # collective timeout (rank 0 evaluates while others wait)

    # Synthetic shapes_<split> data set (frcnn.datasets.shapes); any change regenerates it.
    C.SHAPES = edict()
    C.SHAPES.SEED = 0
    C.SHAPES.NUM_TRAIN = 200
    C.SHAPES.NUM_TEST = 100
    C.SHAPES.IMAGE_MIN = 300            # image sides drawn from [IMAGE_MIN, IMAGE_MAX]
    C.SHAPES.IMAGE_MAX = 500
    C.SHAPES.SHAPE_MIN = 40             # shape size (px) drawn from [SHAPE_MIN, SHAPE_MAX]
    C.SHAPES.SHAPE_MAX = 160
    C.SHAPES.MIN_OBJECTS = 1            # MIN_OBJECTS..MAX_OBJECTS shapes per image
    C.SHAPES.MAX_OBJECTS = 4
    C.SHAPES.MIN_VISIBLE = 0.7          # a shape keeps >= this share of its pixels under others
    C.SHAPES.MIN_CONTRAST = 90.0        # RGB distance of a shape's colour from the background

    C.ANCHOR_SCALES = (8, 16, 32)
    C.ANCHOR_RATIOS = (0.5, 1, 2)
    C.FEAT_STRIDE = 16

    C.DEDUP_BOXES = 1.0 / 16.0
    C.PROPOSAL_MIN_SIZE = 2             # external proposals: drop smaller boxes (imdb min_size)
    C.PIXEL_MEANS = np.array([[[102.9801, 115.9465, 122.7717]]])  # BGR, 0-255
    C.RNG_SEED = 3
    C.EPS = 1e-14
    C.ROOT_DIR = ROOT_DIR
    C.DATA_DIR = os.path.join(ROOT_DIR, "data")
    C.OUTPUT_DIR = os.path.join(ROOT_DIR, "output")
    C.EXP_DIR = "default"
    # RoI feature extraction of the Fast R-CNN head: "pool" = the paper's Caffe RoI max pooling
    # (default), "align" = Mask R-CNN's RoIAlign (no rounding to the feature grid). For align:
    # POOLING_ALIGNED shifts by -0.5 pixel (pixel centres, detectron2's ROIAlignV2), and
    # POOLING_SAMPLING_RATIO samples per bin and axis (<= 0: adaptive ceil(roi / pooled)). 2 is
    # torchvision's Faster R-CNN choice: a fixed cost per bin whatever the RoI size (adaptive
    # costs ~ (roi / 112 px)^2 samples per bin at stride 16, 36 for a 600 px RoI) and, at
    # stride 16, 2 x 2 samples per bin already cover a 7x7 grid of RoIs up to 224 px densely.
    C.POOLING_MODE = "pool"
    C.POOLING_ALIGNED = True
    C.POOLING_SAMPLING_RATIO = 2
    C.DEVICE = "cpu"
    return C


# Reference keys kept so py-faster-rcnn's yml files load, whose value this port never reads:
# setting one to anything but its default is an error that says where the value comes from.
NOT_USED = {
    "TRAIN.PROPOSAL_METHOD": "training proposals are the ground truth in RPN training and come "
                             "from the alt-opt RPN stages (or tools/train_net.py --proposals) for "
                             "Fast R-CNN; remove the key",
    "TEST.PROPOSAL_METHOD": "test proposals come from the model's RPN, or from "
                            "tools/test_net.py --proposals; remove the key",
    "ROOT_DIR": "the repository root is found from the code's location; set DATA_DIR and "
                "OUTPUT_DIR instead",
}


def _check_used(key, value, default):
    if key in NOT_USED and not _same(value, default):
        from frcnn.errors import ConfigError

        raise ConfigError(f"config key {key} is not used by this port ({NOT_USED[key]})")


def _same(a, b):
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b)))
    except Exception:  # noqa: BLE001 - incomparable values differ
        return False


def get_default_cfg():
    """A fresh cfg holding the reference defaults."""
    return _defaults()


def get_output_dir(imdb_name, cfg, net_name=None):
    """output/<EXP_DIR>/<imdb_name>[/<net_name>], created if missing."""
    path = os.path.join(cfg.OUTPUT_DIR, cfg.EXP_DIR, imdb_name)
    if net_name:
        path = os.path.join(path, net_name)
    os.makedirs(path, exist_ok=True)
    return path


_BOOL_OR_AUTO = {"SOLVER.AMP", "TRAIN.KEEP_EMPTY_IMAGES"}  # keys whose default 'auto' may be replaced by True / False


def _coerce(value, default, key):
    """Cast `value` to the type of `default`, as py-faster-rcnn's merge does."""
    if key in _BOOL_OR_AUTO:
        if value is True or value is False or value == "auto":
            return value
        raise ValueError(f"config key {key}: expected True, False or 'auto', got {value!r}")
    if isinstance(default, np.ndarray):
        return np.array(value, dtype=default.dtype).reshape(np.shape(value))
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if default is not None and value is not None and type(default) is not type(value):
        raise ValueError(f"config key {key}: expected {type(default).__name__}, "
                         f"got {type(value).__name__} ({value!r})")
    return value


def merge_into(src, dst, prefix=""):
    """Merge dict `src` into cfg `dst` in place; unknown keys are an error."""
    for k, v in src.items():
        key = prefix + k
        if k not in dst:
            raise KeyError(f"unknown config key: {key}")
        if isinstance(v, dict):
            if not isinstance(dst[k], dict):
                raise ValueError(f"config key {key} is not a section")
            merge_into(v, dst[k], key + ".")
        else:
            value = _coerce(v, dst[k], key)
            _check_used(key, value, dst[k])
            dst[k] = value
    return dst


def cfg_from_file(filename, cfg=None):
    """Merge a yml file into `cfg` (fresh defaults when None) and return it."""
    import yaml

    cfg = get_default_cfg() if cfg is None else cfg
    try:
        with open(filename) as f:
            loaded = yaml.safe_load(f) or {}
    except OSError as e:
        raise FileNotFoundError(f"config file {filename}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config file {filename} is not valid yaml: {e}") from None
    return merge_into(loaded, cfg)


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as a path


def cfg_from_list(pairs, cfg=None):
    """Merge ["TRAIN.SCALES", "(400,)", "EXP_DIR", "x"] into `cfg` and return it."""
    cfg = get_default_cfg() if cfg is None else cfg
    if len(pairs) % 2:
        raise ValueError(f"--set takes KEY VALUE pairs, got an odd list: {pairs}")
    for key, text in zip(pairs[0::2], pairs[1::2]):
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise KeyError(f"unknown config key: {key}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key: {key}")
        value = _coerce(_parse_value(text), node[parts[-1]], key)
        _check_used(key, value, node[parts[-1]])
        node[parts[-1]] = value
    return cfg

