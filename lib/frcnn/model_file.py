"""ModelFile: the one reader and writer of model files (`*_final.pth` of every training tool,
alt-opt stage files, SVD-compressed models).

A model file is a dict loaded with torch.load(weights_only=True) (frcnn.safe_io):

    model     state dict (tensors)            net       'VGG16' | 'ZF' | 'TINY' | 'ELITE0'
    classes   names, '__background__' first   pooling   {'mode', 'aligned', 'sampling_ratio'}
    seed      the training run's seed          ...       anything else (imdb, iteration,
                                                         bbox_means/stds, svd, cfg): `meta`

Files written before ModelFile (numpy bbox stats inside) and bare state dicts still load.
Problems raise frcnn.errors (ConfigError, safe_io.UnsafeFileError), never exit.
"""
import os
from dataclasses import dataclass, field

from frcnn.errors import ConfigError
from frcnn.safe_io import load_torch, numpy_to_tensors
from frcnn.utils.atomic_file import save_atomic

_FIELDS = ("net", "classes", "pooling", "seed")


@dataclass
class ModelFile:
    weights: dict
    net: str = ""
    classes: list = field(default_factory=list)
    pooling: dict = None
    seed: int = None
    meta: dict = field(default_factory=dict)
    path: str = ""

    @classmethod
    def load(cls, path, mmap=False):
        """Read `path` (weights only; see safe_io.load_torch). -> ModelFile."""
        path = str(path)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: model file not found; train first (experiments/alt_opt.sh) "
                              "or fix the path")
        raw = load_torch(path, "model file", mmap=mmap)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: holds a {type(raw).__name__}, not a model; give a .pth "
                              "written by the training tools")
        if not isinstance(raw.get("model"), dict):  # a bare state dict
            return cls(weights=raw, path=path)
        mf = cls.from_flat(raw["model"], {k: v for k, v in raw.items() if k != "model"})
        mf.path = path
        return mf

    @classmethod
    def from_flat(cls, weights, flat):
        """`weights` and one dict of net, classes, pooling, seed and anything else (meta)."""
        rest = dict(flat)
        own = {k: rest.pop(k) for k in _FIELDS if k in rest}
        return cls(weights=weights, meta=rest, net=str(own.get("net") or ""),
                   classes=list(own.get("classes") or []), pooling=own.get("pooling"),
                   seed=None if own.get("seed") is None else int(own["seed"]))

    def to_dict(self):
        """What save() writes: numpy arrays stored as tensors (nothing beyond weights-only)."""
        out = {"model": self.weights, **numpy_to_tensors(dict(self.meta))}
        for k in _FIELDS:
            if getattr(self, k) not in (None, "", []):
                out[k] = getattr(self, k)
        return out

    def save(self, path):
        """Atomic write (utils.atomic_file.save_atomic: tmp, fsync, rename; disk full is an
        error that leaves an existing file intact)."""
        save_atomic(self.to_dict(), str(path))
        self.path = str(path)

    def check(self, net=None, num_classes=None, cfg=None):
        """ConfigError when the file is for another net, class count or RoI feature mode."""
        where = self.path or "model file"
        if net and self.net and self.net.upper() != net.upper():
            raise ConfigError(f"{where}: holds a {self.net} model, not {net}; fix --net")
        if num_classes and self.classes and len(self.classes) != num_classes:
            raise ConfigError(f"{where}: trained for {len(self.classes)} classes {self.classes}, "
                              f"the test set has {num_classes}; test on the set it was trained for")
        if cfg is not None:
            from frcnn.models import check_pooling

            try:
                check_pooling({"pooling": self.pooling} if self.pooling else {}, cfg, where)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def build(self, cfg, parts=("rpn", "head"), device="cpu", net=None, num_classes=None):
        """The FasterRCNN with `parts` and these weights, in eval mode on `device`.

        net / num_classes: for files that do not record them (given ones are checked)."""
        from frcnn.models import NETS, build_model

        where = self.path or "model file"
        net = (net or self.net or "").upper()
        if net not in NETS:
            raise ConfigError(f"{where}: the file does not say which net it holds; give the net, "
                              f"one of {', '.join(NETS)}")
        num_classes = num_classes or len(self.classes)
        if not num_classes:
            raise ConfigError(f"{where}: the file stores no class names; give the classes")
        self.check(net, num_classes, cfg)
        model = build_model(net, num_classes, cfg, parts=parts, pretrained=False)
        if self.meta.get("svd") and "head" in parts:  # tools/compress_net.py
            from frcnn.models.compress import svd_structure

            svd_structure(model, self.meta["svd"])
        own = model.state_dict()
        missing = [k for k in own if k not in self.weights]
        if missing:
            raise ConfigError(f"{where}: lacks {missing[:4]}{'...' if len(missing) > 4 else ''}; "
                              "is it a stage file? use the *_faster_rcnn_final.pth (or test a "
                              "Fast R-CNN stage with --proposals and --set TEST.HAS_RPN False)")
        bad = [k for k in own if tuple(self.weights[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ConfigError(f"{where}: {bad[0]} has shape {tuple(self.weights[bad[0]].shape)}, "
                              f"the {net} model for {num_classes} classes wants "
                              f"{tuple(own[bad[0]].shape)}; check net, classes and "
                              "ANCHOR_SCALES/RATIOS of the cfg")
        model.load_state_dict({k: self.weights[k] for k in own})
        return model.to(device).eval()


def load_weights(path):
    """The state dict inside a model file, a snapshot or a bare state-dict file."""
    return ModelFile.load(path).weights


__all__ = ["ModelFile", "load_weights"]
