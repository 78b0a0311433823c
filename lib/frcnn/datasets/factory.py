"""get_imdb(name, cfg): the data sets by name, as in py-faster-rcnn's factory."""
import os
import re


_VOC = {("2007", s) for s in ("train", "val", "trainval", "test")} | \
       {("2012", s) for s in ("train", "val", "trainval", "test")} | {("0712", "trainval")}
_COCO = {("2014", s) for s in ("train", "val", "minival", "valminusminival")} | \
        {("2017", s) for s in ("train", "val")}
_SHAPES = ("train", "test")


def list_imdbs():
    """Names get_imdb accepts (voc_folder takes a path)."""
    names = [f"voc_{y}_{s}" for y, s in sorted(_VOC)]
    names += [f"coco_{y}_{s}" for y, s in sorted(_COCO)]
    names += [f"shapes_{v}{s}" for v in ("", "crowded_") for s in _SHAPES]
    names.append("voc_folder:<path>[:<split>]")
    names.append("coco_json:<annotations.json>:<image_dir>[:all|trainval|test]")
    return names


def _split_folder_spec(spec):
    """'<path>[:<split>]' -> (path, split); default split trainval."""
    if os.path.isdir(spec):
        return spec, "trainval"
    path, sep, split = spec.rpartition(":")
    if sep and path and "/" not in split and os.sep not in split:
        return path, split
    return spec, "trainval"


def get_imdb(name, cfg):
    """An imdb by name: voc_<year>_<split>, coco_<year>_<split>, shapes_<split>,
    voc_folder:<path>[:<split>], coco_json:<annotations.json>:<image_dir>[:<split>]."""
    if name.startswith("coco_json:"):
        from .coco_json import coco_json
        return coco_json(name[len("coco_json:"):], cfg)
    if name.startswith("voc_folder:"):
        from .voc_folder import voc_folder
        path, split = _split_folder_spec(name[len("voc_folder:"):])
        return voc_folder(path, split, cfg)
    m = re.fullmatch(r"voc_(\d{4})_(\w+)", name)
    if m and (m.group(1), m.group(2)) in _VOC:
        from .pascal_voc import pascal_voc
        return pascal_voc(m.group(2), m.group(1), cfg)
    m = re.fullmatch(r"coco_(\d{4})_(\w+)", name)
    if m and (m.group(1), m.group(2)) in _COCO:
        from .coco import coco
        return coco(m.group(2), m.group(1), cfg)
    m = re.fullmatch(r"shapes_(crowded_)?(\w+)", name)
    if m and m.group(2) in _SHAPES:
        from .shapes import shapes
        return shapes(m.group(2), cfg, (m.group(1) or "").rstrip("_"))
    raise KeyError(f"unknown data set: {name!r}; known: {', '.join(list_imdbs())}")
