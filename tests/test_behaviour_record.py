"""Numbers recorded from the code before the stage restructuring (issue 25), so a refactor of the
model's forward, the alt-opt recipe or the solver is proven behaviour-preserving.

RECORDED holds float32 values computed on the CPU with one thread by commit cf5c673 (main before
the restructuring): losses of seeded forwards of every model the tools build (full, RPN-only,
head-only on given proposals, TRAIN.BBOX_REG False), the eval outputs, and the losses and weights
of a seeded 4-iteration end2end TINY run on the synthetic shapes set. `python
tests/test_behaviour_record.py` prints the current values in the same layout.

tests/data/tiny_final_cf5c673.pth.gz is a TINY 3-class model file in the layout the alt-opt tool
wrote at cf5c673 (`AltOpt.assemble`: {"model": state_dict, "net", "classes", "imdb", "seed",
"pooling"}), its weights a low-entropy pattern (see `_pattern_weights`) so the file gzips to a
few kB. It must keep loading, and compute what it computed then.
"""
import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from frcnn.config import get_default_cfg
from frcnn.models import build_model
from frcnn.safe_io import load_torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "data", "tiny_final_cf5c673.pth.gz")

RECORDED = {  # torch 2.13 CPU, float32, 1 thread, commit cf5c673
    'forward_full': {'rpn_cls_loss': 0.7001703977584839, 'rpn_bbox_loss': 0.29932549595832825, 'cls_loss': 1.097487449645996, 'bbox_loss': 0.007334243040531874},
    'forward_rpn': {'rpn_cls_loss': 0.7001703977584839, 'rpn_bbox_loss': 0.29932549595832825},
    'forward_head': {'cls_loss': 1.0985292196273804, 'bbox_loss': 0.006256749853491783},
    'forward_no_bbox_reg': {'rpn_cls_loss': 0.7001703977584839, 'rpn_bbox_loss': 0.29932549595832825, 'cls_loss': 1.097487449645996},
    'eval_full': {'rois': (92, 35024.95944976807), 'rpn_scores': (92, 46.519489139318466), 'cls_prob': (92, 91.99999961256981), 'bbox_pred': (92, 0.33090701391844046)},
    'eval_rpn': {'rois': (92, 35024.95944976807), 'rpn_scores': (92, 46.519489139318466)},
    'eval_head': {'rois': (3, 860.0), 'cls_prob': (3, 3.0000001192092896), 'bbox_pred': (3, -0.001798179786419496)},
    'fixture_eval': {'rois': (92, 31104.961252212524), 'rpn_scores': (92, 44.84394225478172), 'cls_prob': (92, 91.99999934434891), 'bbox_pred': (92, -13.952740229666233)},
    'train_losses': [
        {'rpn_cls_loss': 0.6877899169921875, 'rpn_bbox_loss': 0.0030528358183801174, 'cls_loss': 1.3849760293960571, 'bbox_loss': 0.0010906631359830499},
        {'rpn_cls_loss': 0.6857876777648926, 'rpn_bbox_loss': 0.0028685934375971556, 'cls_loss': 1.3835868835449219, 'bbox_loss': 3.7083530912696006e-08},
        {'rpn_cls_loss': 0.687754213809967, 'rpn_bbox_loss': 0.004434570670127869, 'cls_loss': 1.378328800201416, 'bbox_loss': 0.005440432578325272},
        {'rpn_cls_loss': 0.6845040917396545, 'rpn_bbox_loss': 0.00432234350591898, 'cls_loss': 1.3722785711288452, 'bbox_loss': 0.0006864300230517983},
    ],
    'train_weights': {
        'bbox_means': (0.0, 0.0),
        'bbox_stds': (16.0, 16.0),
        'backbone.conv1.weight': (-1.002708223706577, 36.048385965428196),
        'backbone.conv1.bias': (-1.3144472177373245e-09, 2.991031438025219e-09),
        'backbone.gn1.weight': (15.999934792518616, 15.999869585410025),
        'backbone.gn1.bias': (-1.5991544614735176e-05, 7.115554780320483e-10),
        'backbone.conv2.weight': (-4.114709512348782, 64.24308647192426),
        'backbone.conv2.bias': (4.0546410673414357e-10, 1.5366426589572801e-09),
        'backbone.gn2.weight': (31.999869525432587, 31.999739051647946),
        'backbone.gn2.bias': (-2.503374076923137e-06, 1.488981358789657e-09),
        'backbone.conv3.weight': (-5.0614118754961055, 127.50692846912385),
        'backbone.conv3.bias': (-1.0686562745831907e-11, 2.6877284779947674e-09),
        'backbone.gn3.weight': (63.999738931655884, 63.99947786503688),
        'backbone.gn3.bias': (-3.687760747084212e-05, 2.9217743074785793e-09),
        'backbone.conv4.weight': (-27.406308432841115, 255.34406033143162),
        'backbone.conv4.bias': (-2.4236612716777017e-11, 4.127511310409006e-09),
        'backbone.gn4.weight': (127.9994780421257, 127.99895608725782),
        'backbone.gn4.bias': (-8.947287515326252e-07, 3.717300109819922e-09),
        'backbone.conv5.weight': (0.9686276345580183, 257.24799727849495),
        'backbone.conv5.bias': (1.5631940186722204e-11, 6.6226221900462324e-09),
        'backbone.gn5.weight': (127.99950259923935, 127.99900520296093),
        'backbone.gn5.bias': (9.992389052371209e-05, 6.356962258876765e-09),
        'rpn.rpn_conv.weight': (8.40129778807406, 14.756106159167874),
        'rpn.rpn_conv.bias': (0.00040290153007394025, 1.2524777242214058e-07),
        'rpn.rpn_cls_score.weight': (1.1052728772465343, 0.2265651658838019),
        'rpn.rpn_cls_score.bias': (5.820766091346741e-11, 2.1549135973435128e-05),
        'rpn.rpn_bbox_pred.weight': (-0.49212207345590286, 0.4670786463073756),
        'rpn.rpn_bbox_pred.bias': (-4.994822506887431e-05, 1.4235738631615971e-09),
        'head.cls_score.weight': (0.5714568135772424, 0.1041031561891082),
        'head.cls_score.bias': (4.656612873077393e-10, 0.00014585971981520584),
        'head.bbox_pred.weight': (0.039222195658283, 0.0040921187309408205),
        'head.bbox_pred.bias': (4.05743394367164e-05, 4.737242632892803e-09),
        'head.conv_reduce.weight': (0.1457497361870992, 21.25196587406643),
        'head.conv_reduce.bias': (-0.20334953989367932, 0.1247461869453477),
        'head.fc6.weight': (-7.644014658066094, 85.35095491497337),
        'head.fc6.bias': (-0.3432259910623543, 0.02680095824833678),
        'head.fc7.weight': (-7.620911792785279, 85.51599095794826),
        'head.fc7.bias': (0.42574380981932336, 0.3122336498356816),
    },
}

ALT_OPT_FINAL = {  # tiny_faster_rcnn_final.pth of _alt_opt_tiny at cf5c673 (tools/train_faster_rcnn_alt_opt.py)
    'bbox_means': (0.0, 0.0),
    'bbox_stds': (16.0, 16.0),
    'backbone.conv1.weight': (-1.1308635450259317, 32.627778716057136),
    'backbone.conv1.bias': (3.128661774098873e-09, 2.6395142876504202e-06),
    'backbone.gn1.weight': (15.998782396316528, 15.997564998752964),
    'backbone.gn1.bias': (0.0006270729536481667, 5.331651245627094e-07),
    'backbone.conv2.weight': (4.642060270035472, 63.990676621960915),
    'backbone.conv2.bias': (7.210019248304889e-10, 1.0960880775074384e-06),
    'backbone.gn2.weight': (31.997564256191254, 31.995128959197817),
    'backbone.gn2.bias': (0.0009717258610635326, 1.3389673035840524e-06),
    'backbone.conv3.weight': (23.899759026527136, 125.53265676622932),
    'backbone.conv3.bias': (-1.4699708117404953e-10, 1.4107189951292874e-06),
    'backbone.gn3.weight': (63.995130121707916, 63.99026092367684),
    'backbone.gn3.bias': (0.0010526234955250402, 1.3259903037799583e-06),
    'backbone.conv4.weight': (3.711926933867062, 256.3500872047399),
    'backbone.conv4.bias': (-1.6211743059102446e-10, 2.5251618061689527e-06),
    'backbone.gn4.weight': (127.99025857448578, 127.98051855398168),
    'backbone.gn4.bias': (0.0013420049023125102, 2.8103833421581293e-06),
    'backbone.conv5.weight': (4.488731193899639, 257.335670118816),
    'backbone.conv5.bias': (2.0190782379359007e-10, 4.530650726981772e-06),
    'backbone.gn5.weight': (127.99445652961731, 127.98891525479567),
    'backbone.gn5.bias': (0.005779803290721475, 4.961008268303784e-06),
    'rpn.rpn_conv.weight': (4.809083410244725, 14.68066797183554),
    'rpn.rpn_conv.bias': (0.006252410320598756, 3.8986682910657686e-05),
    'rpn.rpn_cls_score.weight': (-0.5410723945306017, 0.3127861305421977),
    'rpn.rpn_cls_score.bias': (-2.7939677238464355e-09, 0.008688867997614069),
    'rpn.rpn_bbox_pred.weight': (0.5708610609574407, 0.6250742287098544),
    'rpn.rpn_bbox_pred.bias': (-0.006279541766161856, 3.77202514429079e-05),
    'head.cls_score.weight': (0.610657955003262, 0.19427104686543106),
    'head.cls_score.bias': (7.450580596923828e-09, 0.05175206184589026),
    'head.bbox_pred.weight': (0.0024258815422797397, 8.217277426801018e-05),
    'head.bbox_pred.bias': (-0.49228188599379763, 0.06207097819658726),
    'head.conv_reduce.weight': (10.813105820305282, 21.136830075653727),
    'head.conv_reduce.bias': (-0.1649328307248652, 0.16826887060356976),
    'head.fc6.weight': (45.797211699313145, 85.25033865924829),
    'head.fc6.bias': (-0.15636482067748148, 0.028252372571709726),
    'head.fc7.weight': (-11.554331828346449, 85.00057968682148),
    'head.fc7.bias': (0.3489818498492241, 0.3637380811904044),
}


def _fixed_images():
    """Two BGR-minus-means images (textured background, flat rectangles), batch [2, 3, 160, 224]."""
    H, W = 160, 224
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    ims = []
    for shift in (0, 13):
        im = np.stack((np.sin((x + shift) / 7.0) * 40, np.cos(y / 5.0) * 40,
                       np.sin((x + y) / 11.0) * 40))
        im[:, 20 + shift:90, 30:110] = np.array([90.0, -60.0, 10.0])[:, None, None]
        im[:, 70:150, 120 + shift:210] = np.array([-80.0, 70.0, 40.0])[:, None, None]
        ims.append(im)
    return torch.from_numpy(np.stack(ims)).float()


IM_INFO = torch.tensor([[160., 224., 1.], [160., 224., 1.]])
GT = [torch.tensor([[30., 20., 109., 89., 1.], [120., 70., 209., 149., 2.]]),
      torch.tensor([[30., 33., 109., 89., 1.], [133., 70., 209., 149., 2.]])]
PROPOSALS = [torch.tensor([[28., 18., 112., 92.], [100., 60., 200., 150.], [0., 0., 50., 50.]]),
             torch.tensor([[30., 30., 100., 90.], [130., 75., 205., 145.]])]


def _model(parts, seed=5, **cfg_changes):
    cfg = get_default_cfg()
    for k, v in cfg_changes.items():
        cfg.TRAIN[k] = v
    torch.manual_seed(seed)
    return build_model("TINY", 3, cfg, parts=parts, ims_per_batch=2)


def _gens():
    return [torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]


def _train_forward(parts, proposals=None, **cfg_changes):
    model = _model(parts, **cfg_changes).train()
    with torch.no_grad():
        out = model(_fixed_images(), IM_INFO, GT, proposals=proposals, generators=_gens())
    return {k: v.item() for k, v in out.items()}


def _eval_forward(parts, proposals=None):
    model = _model(parts).eval()
    with torch.no_grad():
        out = model(_fixed_images()[:1], IM_INFO[:1], proposals=proposals)
    return {k: (v.shape[0], v.double().sum().item()) for k, v in out.items()}


def forward_numbers():
    return {
        "forward_full": _train_forward(("rpn", "head")),
        "forward_rpn": _train_forward(("rpn",), BBOX_REG=False),
        "forward_head": _train_forward(("head",), proposals=PROPOSALS),
        "forward_no_bbox_reg": _train_forward(("rpn", "head"), BBOX_REG=False),
        "eval_full": _eval_forward(("rpn", "head")),
        "eval_rpn": _eval_forward(("rpn",)),
        "eval_head": _eval_forward(("head",), proposals=PROPOSALS[:1]),
    }


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(got, want):
    return got == pytest.approx(want, rel=1e-6, abs=1e-15)


def test_seeded_forwards_unchanged(one_thread):
    got = forward_numbers()
    for key, want in got.items():
        assert set(got[key]) == set(RECORDED[key]), key
        for name, v in RECORDED[key].items():
            assert _close(got[key][name], v), (key, name, got[key][name], v)


def train_numbers(tmp):
    """Losses of every step and per-tensor (sum, sum of squares) of the weights after a seeded
    4-iteration end2end TINY run (2 images per batch) on 8 shapes images."""
    from train_helpers import train

    from frcnn.datasets.factory import get_imdb
    from frcnn.roi_data.loader import loader_factory
    from frcnn.roi_data.roidb import get_training_roidb

    cfg = get_default_cfg()
    cfg.DATA_DIR = os.path.join(tmp, "data")
    cfg.SOLVER.DISPLAY = 1000
    cfg.TRAIN.SNAPSHOT_ITERS = 1000
    cfg.TRAIN.SCALES, cfg.TRAIN.MAX_SIZE, cfg.TRAIN.NUM_WORKERS = (160,), 270, 0
    cfg.TRAIN.RPN_PRE_NMS_TOP_N, cfg.TRAIN.RPN_POST_NMS_TOP_N = 600, 100
    cfg.ANCHOR_SCALES = (2, 4, 8)
    cfg.SHAPES.NUM_TRAIN, cfg.SHAPES.NUM_TEST = 8, 2
    torch.manual_seed(cfg.RNG_SEED)
    imdb = get_imdb("shapes_train", cfg)
    roidb = get_training_roidb(imdb, cfg)
    torch.manual_seed(0)
    model = build_model("TINY", imdb.num_classes, cfg, ims_per_batch=2)
    losses = []
    model.register_forward_hook(
        lambda m, a, out: losses.append({k: v.item() for k, v in out.items()}))
    train(model, loader_factory(roidb, cfg, 2, cfg.RNG_SEED), cfg, os.path.join(tmp, "out"),
          4, 3, 2, "rec", roidb=roidb)
    weights = {k: (v.double().sum().item(), v.double().square().sum().item())
               for k, v in model.state_dict().items() if v.is_floating_point()}
    return losses, weights


def test_seeded_short_training_unchanged(one_thread, tmp_path):
    losses, weights = train_numbers(str(tmp_path))
    assert len(losses) == len(RECORDED["train_losses"]) == 4
    for got, want in zip(losses, RECORDED["train_losses"]):
        assert set(got) == set(want)
        for k in want:
            assert _close(got[k], want[k]), (k, got[k], want[k])
    assert set(weights) == set(RECORDED["train_weights"])
    for k, want in RECORDED["train_weights"].items():
        assert _close(weights[k], want), (k, weights[k], want)


def _pattern_weights(state):
    """Low-entropy weights (period-13 ramps, small) for every float tensor of a state_dict."""
    out = {}
    for i, (k, v) in enumerate(state.items()):
        if not v.is_floating_point() or k in ("bbox_means", "bbox_stds"):
            out[k] = v.clone()
            continue
        ramp = (torch.arange(v.numel(), dtype=torch.float64) * 7 + i) % 13 - 6
        scale = 0.5 if k.endswith((".bias", "gn1.weight")) or ".gn" in k else 0.02
        out[k] = (ramp * scale / 6).to(v.dtype).reshape(v.shape)
    return out


def write_fixture(path):
    """The model file as AltOpt.assemble wrote it at cf5c673, gzipped (run once, at cf5c673)."""
    import tempfile

    from frcnn.engine.checkpoint import save_atomic
    from frcnn.models import pooling_meta

    cfg = get_default_cfg()
    torch.manual_seed(0)
    model = build_model("TINY", 3, cfg)
    state = {"model": _pattern_weights(model.state_dict()), "net": "TINY",
             "classes": ["__background__", "circle", "square"], "imdb": "fixture", "seed": 3,
             **pooling_meta(cfg)}
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "m.pth")
        save_atomic(state, raw)
        with open(raw, "rb") as f, gzip.GzipFile(path, "wb", mtime=0) as g:
            shutil.copyfileobj(f, g)


def fixture_numbers(tmp):
    """Load the fixture with Detector.from_file; eval outputs of its model on image 0."""
    from frcnn.api import Detector

    raw = os.path.join(tmp, "tiny_final.pth")
    with gzip.open(FIXTURE, "rb") as g, open(raw, "wb") as f:
        shutil.copyfileobj(g, f)
    det = Detector.from_file(raw)
    assert det.classes == ["__background__", "circle", "square"] and det.net == "TINY"
    with torch.no_grad():
        out = det.model(_fixed_images()[:1], IM_INFO[:1])
    return {k: (v.shape[0], v.double().sum().item()) for k, v in out.items()}


def test_model_file_of_cf5c673_loads_and_computes_the_same(one_thread, tmp_path):
    got = fixture_numbers(str(tmp_path))
    assert set(got) == set(RECORDED["fixture_eval"])
    for k, want in RECORDED["fixture_eval"].items():
        assert _close(got[k], want), (k, got[k], want)


ALT_OPT_SETS = [
    "ALT_OPT.ITERS", "(6,6,6,6)", "ALT_OPT.STEPSIZES", "(4,4,4,4)", "TRAIN.SNAPSHOT_ITERS", "3",
    "SHAPES.NUM_TRAIN", "8", "SHAPES.NUM_TEST", "4", "SHAPES.IMAGE_MIN", "160",
    "SHAPES.IMAGE_MAX", "200", "TRAIN.SCALES", "(160,)", "TRAIN.MAX_SIZE", "200",
    "TEST.SCALES", "(160,)", "TEST.MAX_SIZE", "200", "TRAIN.RPN_PRE_NMS_TOP_N", "600",
    "TRAIN.RPN_POST_NMS_TOP_N", "100", "TEST.RPN_PRE_NMS_TOP_N", "600",
    "TEST.RPN_POST_NMS_TOP_N", "100", "ALT_OPT.PROPOSAL_PRE_NMS_TOP_N", "600",
    "ALT_OPT.PROPOSAL_POST_NMS_TOP_N", "100"]


def _alt_opt_tiny(tmp):
    """The 4 stages, 6 iterations each, on 8 shapes images; as `train_faster_rcnn_alt_opt.py
    --net TINY --imdb shapes_train --cfg experiments/cfgs/shapes_alt_opt.yml --num-threads 1
    --set OUTPUT_DIR tmp DATA_DIR tmp/data EXP_DIR alt <ALT_OPT_SETS>` -> final state dict."""
    from frcnn.config import cfg_from_file, cfg_from_list
    from frcnn.recipes.alt_opt import AltOpt

    cfg = cfg_from_file(os.path.join(os.path.dirname(HERE), "experiments", "cfgs",
                                     "shapes_alt_opt.yml"), get_default_cfg())
    cfg_from_list(["OUTPUT_DIR", tmp, "DATA_DIR", os.path.join(tmp, "data"), "EXP_DIR", "alt"]
                  + ALT_OPT_SETS, cfg)
    final = AltOpt(cfg, "TINY", "shapes_train").run()
    return load_torch(final)["model"]


def test_alt_opt_recipe_gives_the_weights_of_cf5c673(one_thread, tmp_path):
    """The library recipe trains the 4 stages and assembles the final model exactly as the tool
    of cf5c673 did (all 5 stage files and both proposal files were bit-identical when checked
    against a run of that commit; the final weights are recorded here)."""
    state = _alt_opt_tiny(str(tmp_path))
    got = {k: (v.double().sum().item(), v.double().square().sum().item())
           for k, v in state.items() if v.is_floating_point()}
    assert set(got) == set(ALT_OPT_FINAL)
    for k, want in ALT_OPT_FINAL.items():
        assert _close(got[k], want), (k, got[k], want)


if __name__ == "__main__":
    import sys
    import tempfile

    sys.path.insert(0, HERE)
    torch.set_num_threads(1)
    for key, value in forward_numbers().items():
        print(f"    {key!r}: {value!r},")
    if not os.path.exists(FIXTURE):
        write_fixture(FIXTURE)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"    'fixture_eval': {fixture_numbers(tmp)!r},")
        losses, weights = train_numbers(tmp)
    print("    'train_losses': [")
    for step in losses:
        print(f"        {step!r},")
    print("    ],")
    print("    'train_weights': {")
    for k, v in weights.items():
        print(f"        {k!r}: {v!r},")
    print("    },")
