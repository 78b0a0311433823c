#!/usr/bin/env python
"""The paper's ablations on any data set (driven by experiments/ablations.sh).

Trains what each family needs once (reruns skip finished models: the tools resume/skip), runs the
test-time ablations on the same trained models, and writes output/<EXP_DIR>/ablations.md with
the paper's VOC 2007 numbers beside ours.

Models: alt-opt (shared; its stage-1 RPN and Fast R-CNN = unshared), Fast R-CNN on Selective
Search boxes (SS + Fast R-CNN; also the detector of the paper's RPN test-time ablations, which
feed it proposals of the unshared stage-1 RPN), end2end (approximate joint) with the default
anchors and lambda, and one end2end model per other anchor setting and lambda.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import _init_paths  # noqa: E402,F401  (lib/ on sys.path, OMP policy)

# The paper's numbers (PASCAL VOC 2007 test mAP %, ../shared/PAPER.md)
PAPER_T2 = {"ss": "58.7 (SS 2000)", "shared": "59.9", "unshared": "58.7",
            "rpn100": "55.1", "rpn300": "56.8", "rpn1000": "56.3", "nonms": "55.2",
            "nocls100": "44.6", "nocls300": "51.4", "nocls1000": "55.8",
            "noreg300": "52.1", "noreg1000": "51.3"}
PAPER_T8 = {"1x1": "65.8 (128²) / 66.7 (256²)", "1x3": "68.8 (128²) / 67.9 (256²)",
            "3x1": "69.8", "3x3": "69.9"}
PAPER_T9 = {0.1: "67.2", 1.0: "68.9", 10.0: "69.9", 100.0: "69.1"}
LAMBDAS = (0.1, 1.0, 10.0, 100.0)
DEFAULT_LAMBDA = 10.0  # the reference's normalisation ~ the paper's lambda 10 (see lambda_to_weight)


def lambda_to_weight(lam):
    """RPN_BBOX_LOSS_WEIGHT for the paper's lambda.

    Paper: L = 1/N_cls sum L_cls + lambda / N_reg sum p* L_reg, N_cls = 256, N_reg ~ 2400 (anchor
    locations), lambda = 10: a positive anchor's reg term weighs 10 / 2400 = 1 / 240.
    Reference (py-faster-rcnn): cls and reg both divided by the sampled count (256): 1 / 256,
    i.e. lambda ~ 10 (2400 / 256 = 9.4). So the paper's lambda maps to weight = lambda / 10.
    """
    return lam / DEFAULT_LAMBDA


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Faster R-CNN ablations (Tables 2, 8, 9; alt vs joint)")
    p.add_argument("--net", required=True)
    p.add_argument("--dataset", required=True, help="label for the report")
    p.add_argument("--train-imdb", required=True)
    p.add_argument("--test-imdb", required=True)
    p.add_argument("--cfg-alt", required=True, help="alt-opt yml (also Fast R-CNN and testing)")
    p.add_argument("--cfg-e2e", required=True, help="end2end yml")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--exp-dir", default=None, help="default ablations_<net>_<dataset>[_quick]")
    p.add_argument("--quick", action="store_true", help="reduced sets and iterations (CI)")
    p.add_argument("--families", default="t2,t8,t9,joint", help="subset of t2,t8,t9,joint")
    p.add_argument("--set", dest="set_cfgs", nargs=argparse.REMAINDER, default=[])
    return p.parse_args(argv)


# --quick: tiny sets and schedules so every family runs end to end in CI (numbers are not
# meaningful at this size; the pipeline is what is checked)
QUICK_SETS = ["SHAPES.NUM_TRAIN", "16", "SHAPES.NUM_TEST", "6", "TRAIN.SCALES", "(224,)",
              "TEST.SCALES", "(224,)", "TRAIN.SNAPSHOT_ITERS", "100000", "SOLVER.DISPLAY", "1000",
              "ALT_OPT.ITERS", "(40,60,20,30)", "ALT_OPT.STEPSIZES", "(30,45,15,25)",
              "END2END.MAX_ITERS", "40", "END2END.STEPSIZE", "30", "END2END.ITER_SIZE", "1",
              "TRAIN.USE_FLIPPED", "False"]


class Runner:
    def __init__(self, args):
        from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg

        self.args = args
        self.sets = (QUICK_SETS if args.quick else []) + list(args.set_cfgs or [])
        base = get_default_cfg()
        cfg_from_file(args.cfg_alt, base)
        cfg_from_list(list(self.sets), base)
        tag = args.dataset.replace(":", "_").replace("/", "_").strip("_")[-40:]
        self.exp = args.exp_dir or f"ablations_{args.net.lower()}_{tag}" + ("_quick" if args.quick else "")
        self.out_root = os.path.join(base.OUTPUT_DIR, self.exp)
        os.makedirs(self.out_root, exist_ok=True)
        self.cfg_alt = self.make_cfg(args.cfg_alt)
        self.cfg_e2e = self.make_cfg(args.cfg_e2e)
        self.train_s = {}
        self.log = open(os.path.join(self.out_root, "ablations.log"), "a")

    def make_cfg(self, yml, extra=()):
        from frcnn.config import cfg_from_file, cfg_from_list, get_default_cfg

        cfg = get_default_cfg()
        cfg_from_file(yml, cfg)
        cfg_from_list(list(self.sets) + list(extra), cfg)
        cfg.DEVICE = self.args.device
        return cfg

    # -- subprocess training -------------------------------------------------------------------
    def tool(self, name, script, args, exp_sub, extra_sets=()):
        """Run tools/<script> with EXP_DIR <exp>/<exp_sub>; returns the wall seconds."""
        cmd = [sys.executable, os.path.join(ROOT, "tools", script)] + args + [
            "--device", self.args.device, "--set"] + list(self.sets) + [
            "EXP_DIR", f"{self.exp}/{exp_sub}"] + list(extra_sets)
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        self.log.write(f"\n== {name}: {' '.join(cmd)}\n")
        self.log.flush()
        p = subprocess.run(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        if p.returncode:
            sys.exit(f"{name} failed (exit {p.returncode}); see {self.log.name}")
        dt = time.perf_counter() - t
        self.train_s[name] = dt
        return dt

    def train(self, name, script, args, exp_sub, extra_sets=()):
        """A training tool; -> the final model's path, as the tool reports it (--final-file)."""
        final = os.path.join(self.out_root, f"{exp_sub}.final")
        self.tool(name, script, args + ["--final-file", final], exp_sub, extra_sets)
        with open(final) as f:
            return f.read().strip()

    def alt_opt(self):
        w = ["--weights", self.args.weights] if self.args.weights else []
        final = self.train("alt-opt", "train_faster_rcnn_alt_opt.py",
                           ["--net", self.args.net, "--imdb", self.args.train_imdb, "--cfg",
                            self.args.cfg_alt] + w, "alt_opt")
        d = os.path.dirname(final)
        n = self.args.net.lower()
        return {k: os.path.join(d, f"{n}_{f}") for k, f in (
            ("final", "faster_rcnn_final.pth"), ("rpn1", "stage1_rpn_final.pth"),
            ("frcn1", "stage1_fast_rcnn_final.pth"))}

    def selective_search(self):
        out = {}
        for split, imdb in (("train", self.args.train_imdb), ("test", self.args.test_imdb)):
            path = os.path.join(self.out_root, f"ss_{split}.pkl")
            extra = ["--max-side", "160"] if self.args.quick else []
            self.tool(f"selective search {split}", "selective_search.py",
                      ["--imdb", imdb, "--cfg", self.args.cfg_alt, "--out", path] + extra,
                      "ss")  # the cfg: a synthetic set's images depend on its settings
            out[split] = path
        return out

    def ss_fast_rcnn(self, ss):
        w = ["--weights", self.args.weights] if self.args.weights else []
        return self.train("SS + Fast R-CNN", "train_net.py",
                          ["--net", self.args.net, "--imdb", self.args.train_imdb, "--cfg",
                           self.args.cfg_alt, "--proposals", ss["train"]] + w, "ss_fast_rcnn")

    def end2end(self, name, extra_sets):
        w = ["--weights", self.args.weights] if self.args.weights else []
        return self.train(f"end2end {name}", "train_net.py",
                          ["--net", self.args.net, "--imdb", self.args.train_imdb, "--cfg",
                           self.args.cfg_e2e] + w, f"e2e_{name}", extra_sets)

    # -- in-process testing --------------------------------------------------------------------
    def test_imdb(self, cfg):
        from frcnn.datasets.factory import get_imdb

        return get_imdb(self.args.test_imdb, cfg)

    def load(self, path, cfg, parts):
        from frcnn.model_file import ModelFile

        imdb = self.test_imdb(cfg)
        return ModelFile.load(path).build(cfg, parts, cfg.DEVICE, self.args.net, imdb.num_classes)

    def evaluate(self, name, model, cfg, proposals=None):
        """test_net -> (mAP, proposals/image, ms/image)."""
        from frcnn.fast_rcnn.test import test_net

        imdb = self.test_imdb(cfg)
        out = os.path.join(self.out_root, "test", name.replace(" ", "_").replace("/", "_"))
        tm = {}
        self.log.write(f"\n== test {name}\n")
        mAP = test_net(model, imdb, cfg, out, proposals=proposals, timings=tm)
        if proposals is not None:
            n = sum(len(p) for p in proposals[:imdb.num_images]) / max(1, imdb.num_images)
        else:
            n = float(cfg.TEST.RPN_POST_NMS_TOP_N)
        print(f"-- {name}: mAP {mAP:.4f}", flush=True)
        return mAP, n, 1000 * tm["im_detect"]

    def rpn_proposals(self, rpn_path, cfg, pre, post, nms, zero_reg=False):
        """Proposals of the stage-1 RPN on the test set with the given proposal settings;
        -> (list of [P, 4] boxes best first, ms/image)."""
        from frcnn.fast_rcnn.test import imdb_proposals
        from frcnn.models import build_model
        from frcnn.recipes.alt_opt import load_parts

        c = copy.deepcopy(cfg)
        c.TEST.RPN_PRE_NMS_TOP_N, c.TEST.RPN_POST_NMS_TOP_N, c.TEST.RPN_NMS_THRESH = pre, post, nms
        imdb = self.test_imdb(c)
        model = build_model(self.args.net.upper(), imdb.num_classes, c, parts=("rpn",),
                            pretrained=False)
        load_parts(model, rpn_path, ("backbone", "rpn"))
        if zero_reg:  # "no reg": the proposals are the anchors, ranked by the cls scores
            import torch

            with torch.no_grad():
                model.rpn.rpn_bbox_pred.weight.zero_()
                model.rpn.rpn_bbox_pred.bias.zero_()
        model.to(c.DEVICE).eval()
        t = time.perf_counter()
        boxes = imdb_proposals(model, imdb, c)
        return boxes, 1000 * (time.perf_counter() - t) / max(1, imdb.num_images)


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def table(title, head, rows):
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table2(R, cfg, alt, results):
    """Table 2: proposals for Fast R-CNN (SS, shared / unshared RPN, no NMS / cls / reg)."""
    import numpy as np

    from frcnn.roi_data.roidb import load_proposals

    ss = R.selective_search()
    f_ss = R.ss_fast_rcnn(ss)
    imdb = R.test_imdb(cfg)
    ss_test = load_proposals(ss["test"], imdb.num_images, cfg.PROPOSAL_MIN_SIZE, imdb=imdb)
    fcfg = copy.deepcopy(cfg)
    fcfg.TEST.HAS_RPN = False
    det_ss = R.load(f_ss, fcfg, ("head",))
    rows = []

    def row(key, train, test, model, c, props=None, prop_ms=None):
        mAP, n, ms = R.evaluate(key, model, c, props)
        results[key] = {"mAP": mAP, "proposals": n, "ms": ms, "proposal_ms": prop_ms}
        rows.append((train, test, f"{n:.0f}", f"{100 * mAP:.1f}", PAPER_T2.get(key, "-"),
                     fmt(ms) + (f" (+{prop_ms:.1f} proposals)" if prop_ms else "")))

    row("ss", "SS", "SS", det_ss, fcfg, [b[:2000] for b in ss_test])
    shared_cfg = copy.deepcopy(cfg)
    shared_cfg.TEST.RPN_POST_NMS_TOP_N = 300
    row("shared", "RPN, shared", "RPN, shared", R.load(alt["final"], shared_cfg,
                                                          ("rpn", "head")), shared_cfg)
    props, pms = R.rpn_proposals(alt["rpn1"], cfg, cfg.TEST.RPN_PRE_NMS_TOP_N, 2000, 0.7)
    row("unshared", "RPN, unshared", "RPN, unshared", R.load(alt["frcn1"], fcfg, ("head",)),
        fcfg, [b[:300] for b in props], pms)
    for n in (100, 300, 1000):
        row(f"rpn{n}", "SS", "RPN (unshared)", det_ss, fcfg, [b[:n] for b in props], pms)
    nonms, pms2 = R.rpn_proposals(alt["rpn1"], cfg, 6000, 6000, 1.0)
    row("nonms", "SS", "RPN, no NMS", det_ss, fcfg, nonms, pms2)
    # no cls: every decoded box (no ranking, no NMS), N drawn at random (seeded)
    allb, pms3 = R.rpn_proposals(alt["rpn1"], cfg, -1, -1, 1.0)
    rng = np.random.default_rng(0)
    for n in (100, 300, 1000):
        pick = [b[np.sort(rng.permutation(len(b))[:n])] for b in allb]
        row(f"nocls{n}", "SS", "RPN, no cls (random N)", det_ss, fcfg, pick, pms3)
    noreg, pms4 = R.rpn_proposals(alt["rpn1"], cfg, cfg.TEST.RPN_PRE_NMS_TOP_N, 1000, 0.7,
                                  zero_reg=True)
    for n in (300, 1000):
        row(f"noreg{n}", "SS", "RPN, no reg (anchors)", det_ss, fcfg, [b[:n] for b in noreg], pms4)
    return table(
        "Table 2: proposals for Fast R-CNN (paper: ZF, VOC07 trainval -> test)",
        ["train-time proposals", "test-time proposals", "proposals/image", "mAP (ours)",
         "mAP (paper)", "ms/image (detection)"], rows) + (
        "\nRows 'SS' train use the Fast R-CNN trained on Selective Search boxes with the "
        "proposals of the unshared stage-1 RPN at test time, as the paper. 'no NMS': RPN NMS "
        "off, top 6000. 'no cls': all decoded RPN boxes, N drawn at random (no ranking). "
        "'no reg': the anchors (RPN regression zeroed), ranked by cls, NMS 0.7. ms/image: "
        "im_detect only; (+x) = RPN proposal generation per image.\n")


def table8(R, args, e2e, results):
    """Table 8: anchor scales x ratios (end2end)."""
    e2e_cfg = R.cfg_e2e
    scales = tuple(e2e_cfg.ANCHOR_SCALES)
    mid = (scales[len(scales) // 2],)
    settings = [("1x1", mid, (1.0,)), ("1x3", mid, (0.5, 1.0, 2.0)), ("3x1", scales, (1.0,)),
                ("3x3", scales, tuple(e2e_cfg.ANCHOR_RATIOS))]
    rows = []
    for key, sc, ra in settings:
        extra = ["ANCHOR_SCALES", str(tuple(sc)), "ANCHOR_RATIOS", str(tuple(ra))]
        path = e2e["default"] if key == "3x3" else R.end2end(f"anchors_{key}", extra)
        c = R.make_cfg(args.cfg_e2e, extra)
        mAP, n, ms = R.evaluate(f"anchors {key}", R.load(path, c, ("rpn", "head")), c)
        results[f"anchors_{key}"] = {"mAP": mAP, "ms": ms}
        px = [f"{16 * s}²" for s in sc]
        rows.append((key, ", ".join(px), ", ".join(f"{r:g}" for r in ra), f"{100 * mAP:.1f}",
                     PAPER_T8[key], fmt(ms)))
    return table(
        "Table 8: anchors (end2end training; paper: VGG16, 07 trainval)",
        ["setting", "scales (px)", "ratios", "mAP (ours)", "mAP (paper)", "ms/image"], rows) + (
        f"\n'1 scale' is the middle one of ANCHOR_SCALES {list(scales)} (x16 px); the paper's "
        "1-scale rows use 128² or 256².\n")


def table9(R, args, e2e, results):
    """Table 9: lambda of the RPN box loss (end2end)."""
    rows = []
    for lam in LAMBDAS:
        w = lambda_to_weight(lam)
        extra = ["TRAIN.RPN_BBOX_LOSS_WEIGHT", str(w)]
        path = (e2e["default"] if lam == DEFAULT_LAMBDA
                else R.end2end(f"lambda_{lam:g}", extra))
        c = R.make_cfg(args.cfg_e2e)
        mAP, n, ms = R.evaluate(f"lambda {lam:g}", R.load(path, c, ("rpn", "head")), c)
        results[f"lambda_{lam:g}"] = {"mAP": mAP}
        rows.append((f"{lam:g}", f"{w:g}", f"{100 * mAP:.1f}", PAPER_T9[lam]))
    return table(
        "Table 9: lambda of the RPN loss (end2end training; paper: VGG16)",
        ["paper lambda", "RPN_BBOX_LOSS_WEIGHT", "mAP (ours)", "mAP (paper)"], rows) + (
        "\nThe paper divides the cls term by the mini-batch (256) and the reg term by the "
        "number of anchor locations (~2400) with lambda 10: 10/2400 per positive anchor. "
        "py-faster-rcnn divides both by the sampled count (256): 1/256, so its default is "
        "the paper's lambda ~10 (2400/256 = 9.4), and lambda maps to "
        "TRAIN.RPN_BBOX_LOSS_WEIGHT = lambda/10.\n")


def joint_table(R, args, cfg, alt, e2e, results):
    """Alternating vs approximate joint training: mAP and training seconds."""
    c = R.make_cfg(args.cfg_e2e)
    if "anchors_3x3" in results:
        m_e2e = results["anchors_3x3"]["mAP"]
    else:
        m_e2e, _, _ = R.evaluate("end2end default", R.load(e2e["default"], c, ("rpn", "head")), c)
    if "shared" in results:
        m_alt = results["shared"]["mAP"]
    else:
        m_alt, _, _ = R.evaluate("alt-opt", R.load(alt["final"], cfg, ("rpn", "head")), cfg)
    rows = [("4-step alternating", f"{100 * m_alt:.1f}", fmt(R.train_s.get("alt-opt"), 0),
             "69.9 (VGG16)"),
            ("approximate joint (end2end)", f"{100 * m_e2e:.1f}",
             fmt(R.train_s.get("end2end default"), 0),
             "close to alt-opt, 25-50% less training time (paper §3.2)")]
    return table("Alternating vs approximate joint training",
                 ["training", "mAP (ours)", "train s (this run)", "paper"], rows) + (
        "\nTrain seconds are those of this run (a rerun that found the model "
        "done shows only the time to check it).\n")


def write_report(args, R, sections, results, t0):
    """ablations.md (header + the tables) and ablations.json into the output root; -> path."""
    import torch

    head = (f"# Ablations: {args.net} on {args.dataset}{' (--quick)' if args.quick else ''}\n\n"
            f"train {args.train_imdb}, test {args.test_imdb}; cfgs {args.cfg_alt}, "
            f"{args.cfg_e2e}; device {args.device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; "
            f"total {time.perf_counter() - t0:.0f} s. mAP: VOC07 11-point on the test set "
            "(x100). Paper: VOC 2007 test.\n")
    if args.quick:
        head += ("\n--quick: tiny sets and a few dozen iterations per model; it checks that every "
                 "family runs, its numbers say nothing about the methods.\n")
    md = head + "\n" + "\n".join(sections)
    path = os.path.join(R.out_root, "ablations.md")
    with open(path, "w") as f:
        f.write(md)
    with open(os.path.join(R.out_root, "ablations.json"), "w") as f:
        json.dump({"results": results, "train_s": R.train_s}, f, indent=1)
    print(md)
    print(f"wrote {path}")
    return path


def main(argv=None):
    args = parse_args(argv)
    fams = set(args.families.split(","))
    R = Runner(args)
    t0 = time.perf_counter()
    cfg = R.cfg_alt
    results, sections, e2e = {}, [], {}
    alt = R.alt_opt() if fams & {"t2", "joint"} else None
    if "t2" in fams:
        sections.append(table2(R, cfg, alt, results))
    if fams & {"t8", "t9", "joint"}:
        e2e["default"] = R.end2end("default", [])
    if "t8" in fams:
        sections.append(table8(R, args, e2e, results))
    if "t9" in fams:
        sections.append(table9(R, args, e2e, results))
    if "joint" in fams:
        sections.append(joint_table(R, args, cfg, alt, e2e, results))
    return write_report(args, R, sections, results, t0)


if __name__ == "__main__":
    main()
