"""Config: reference defaults, yml/--set merging, the experiment cfgs, no shared state."""
import os

import numpy as np
import pytest

from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg, get_output_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = os.path.join(ROOT, "experiments", "cfgs")


def test_reference_defaults():
    c = get_default_cfg()
    T = c.TRAIN
    assert T.SCALES == (600,) and T.MAX_SIZE == 1000 and T.IMS_PER_BATCH == 2
    assert (T.BATCH_SIZE, T.FG_FRACTION, T.FG_THRESH) == (128, 0.25, 0.5)
    assert (T.BG_THRESH_HI, T.BG_THRESH_LO) == (0.5, 0.1)
    assert T.USE_FLIPPED and T.BBOX_REG and T.BBOX_THRESH == 0.5 and T.SNAPSHOT_ITERS == 10000
    assert T.BBOX_NORMALIZE_TARGETS and not T.BBOX_NORMALIZE_TARGETS_PRECOMPUTED
    assert T.BBOX_NORMALIZE_MEANS == (0.0, 0.0, 0.0, 0.0)
    assert T.BBOX_NORMALIZE_STDS == (0.1, 0.1, 0.2, 0.2)
    assert T.ASPECT_GROUPING
    assert (T.RPN_POSITIVE_OVERLAP, T.RPN_NEGATIVE_OVERLAP, T.RPN_CLOBBER_POSITIVES) == (0.7, 0.3, False)
    assert (T.RPN_FG_FRACTION, T.RPN_BATCHSIZE, T.RPN_NMS_THRESH) == (0.5, 256, 0.7)
    assert (T.RPN_PRE_NMS_TOP_N, T.RPN_POST_NMS_TOP_N, T.RPN_MIN_SIZE) == (12000, 2000, 16)
    assert T.RPN_POSITIVE_WEIGHT == -1
    S = c.TEST
    assert S.SCALES == (600,) and S.MAX_SIZE == 1000 and S.NMS == 0.3
    assert (S.RPN_NMS_THRESH, S.RPN_PRE_NMS_TOP_N, S.RPN_POST_NMS_TOP_N, S.RPN_MIN_SIZE) == (0.7, 6000, 300, 16)
    np.testing.assert_allclose(c.PIXEL_MEANS.ravel(), [102.9801, 115.9465, 122.7717])
    assert c.PIXEL_MEANS.shape == (1, 1, 3)
    assert c.RNG_SEED == 3


def test_fresh_cfg_each_call():
    a, b = get_default_cfg(), get_default_cfg()
    a.TRAIN.SCALES = (400,)
    a.PIXEL_MEANS[0, 0, 0] = 0
    assert b.TRAIN.SCALES == (600,) and b.PIXEL_MEANS[0, 0, 0] == pytest.approx(102.9801)


def test_alt_opt_yml():
    c = cfg_from_file(os.path.join(CFGS, "faster_rcnn_alt_opt.yml"))
    assert c.TRAIN.BG_THRESH_LO == 0.0 and c.TEST.HAS_RPN is True
    assert c.EXP_DIR == "faster_rcnn_alt_opt"
    assert c.TRAIN.IMS_PER_BATCH == 2  # untouched keys keep the defaults


def test_end2end_yml():
    c = cfg_from_file(os.path.join(CFGS, "faster_rcnn_end2end.yml"))
    T = c.TRAIN
    assert T.HAS_RPN and T.IMS_PER_BATCH == 1 and T.BBOX_NORMALIZE_TARGETS_PRECOMPUTED
    assert T.BG_THRESH_LO == 0.0 and c.TEST.HAS_RPN
    assert isinstance(T.BG_THRESH_LO, float)


def test_cfg_from_list_and_types(tmp_path):
    c = cfg_from_list(["TRAIN.SCALES", "(400, 500)", "EXP_DIR", "my_exp", "TRAIN.FG_THRESH", "0.6",
                       "SHAPES.NUM_TRAIN", "20"])
    assert c.TRAIN.SCALES == (400, 500) and c.EXP_DIR == "my_exp" and c.TRAIN.FG_THRESH == 0.6
    assert c.SHAPES.NUM_TRAIN == 20
    with pytest.raises(KeyError, match="TRAIN.NOPE"):
        cfg_from_list(["TRAIN.NOPE", "1"])
    with pytest.raises(ValueError):
        cfg_from_list(["TRAIN.SCALES"])
    with pytest.raises(ValueError, match="TRAIN.USE_FLIPPED"):
        cfg_from_list(["TRAIN.USE_FLIPPED", "'yes'"])
    y = tmp_path / "bad.yml"
    y.write_text("TRAIN:\n  NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="TRAIN.NOT_A_KEY"):
        cfg_from_file(str(y))
    y.write_text("TRAIN:\n  SCALES: [300, 400]\n")
    assert cfg_from_file(str(y)).TRAIN.SCALES == (300, 400)


def test_output_dir(tmp_path):
    c = get_default_cfg()
    c.OUTPUT_DIR = str(tmp_path)
    p = get_output_dir("shapes_train", c, "tiny")
    assert p == os.path.join(str(tmp_path), "default", "shapes_train", "tiny") and os.path.isdir(p)


def test_amp_is_true_false_or_auto(monkeypatch, capsys):
    """SOLVER.AMP 'auto' (default): bf16 autocast on a CPU with bf16 matrix units, float32 on
    other CPUs and on CUDA; --amp / --no-amp and the cfg's True / False win over it."""
    import argparse

    import torch

    from frcnn import precision
    from frcnn.cli import apply_runtime_args

    assert get_default_cfg().SOLVER.AMP == "auto"
    assert cfg_from_list(["SOLVER.AMP", "False"]).SOLVER.AMP is False
    cfg = cfg_from_list(["SOLVER.AMP", "True"])
    assert cfg_from_list(["SOLVER.AMP", "auto"], cfg).SOLVER.AMP == "auto"
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        cfg_from_list(["SOLVER.AMP", "bf16"])

    def resolve(cli, cfg_amp, fast, net="VGG16", device="cpu"):
        monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: fast)
        cfg = get_default_cfg()
        cfg.SOLVER.AMP = cfg_amp
        apply_runtime_args(argparse.Namespace(amp=cli), cfg)  # --amp / --no-amp
        dtype = precision.amp_dtype(cfg, device, net)
        return dtype, capsys.readouterr().out

    dtype, out = resolve(None, "auto", True)
    assert dtype == torch.bfloat16 and "SOLVER.AMP auto" in out and "--no-amp" in out
    assert resolve(None, "auto", False)[0] is None
    assert resolve(False, "auto", True)[0] is None
    assert resolve(None, False, True)[0] is None
    dtype, out = resolve(True, False, False)
    assert dtype == torch.bfloat16 and "warning" in out
    assert resolve(None, True, True)[0] == torch.bfloat16
    # 'auto' leaves float32 to the nets bf16 does not speed up, and to CUDA
    dtype, out = resolve(None, "auto", True, net="ELITE0")
    assert dtype is None and "does not speed up ELITE0" in out and "--amp" in out
    assert resolve(True, "auto", True, net="TINY")[0] == torch.bfloat16
    assert resolve(None, "auto", True, device="cuda")[0] is None
    assert resolve(True, "auto", True, device="cuda")[0] == torch.float16
