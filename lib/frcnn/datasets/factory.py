"""get_imdb(name, cfg): the data sets by name, as in py-faster-rcnn's factory."""
import os
import re

from .imdb import DatasetError


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
    names.append("<folder or json>[:<split>] (any labelled folder: VOC, labelImg, YOLO, LabelMe, "
                 "CVAT, COCO; yolo:, labelme:, cvat:, labelimg:, coco_json: force one)")
    return names


def _split_folder_spec(spec):
    """'<path>[:<split>]' -> (path, split); default split trainval."""
    if os.path.isdir(spec):
        return spec, "trainval"
    path, sep, split = spec.rpartition(":")
    if sep and path and "/" not in split and os.sep not in split:
        return path, split
    return spec, "trainval"


FOLDER_PREFIXES = {"yolo:": "yolo", "labelme:": "labelme", "cvat:": "cvat",
                   "labelimg:": "labelimg", "coco_json:": "coco"}
_announced = set()


def folder_spec(name):
    """(path, split, format or None) when `name` names a labelled folder (a plain path, or one
    with a format prefix), else None. coco_json:<json>:<image_dir> is not one (coco_json)."""
    fmt = None
    for prefix, f in FOLDER_PREFIXES.items():
        if name.startswith(prefix):
            fmt, name = f, name[len(prefix):]
            break
    path, split = _split_folder_spec(name)
    if not os.path.exists(path):
        if fmt == "coco" or (fmt is None and os.sep not in path and "/" not in path):
            return None  # a data set name (voc_2007_test, ...) or coco_json:<json>:<image_dir>
        return path, split, fmt  # a path: get_folder_imdb says it does not exist
    if fmt == "coco" and os.path.isfile(path) and split not in SIDES:
        return None  # <json>:<image_dir>
    return path, split, fmt


SIDES = ("trainval", "test", "train", "val", "all")


def get_folder_imdb(path, split, cfg, fmt=None):
    """The imdb of one split of a labelled folder; the format detected when not given, and said
    once per folder and process: '<path>: YOLO (data.yaml), 1 class, train 160 / val 40 images'."""
    from .formats import detect_format, read_folder

    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such file or folder; give the folder of a labelled data set")
    fmt = fmt or detect_format(path)
    if fmt == "voc":
        from .voc_folder import voc_folder
        return voc_folder(path, _voc_split(path, split), cfg)
    from .folder import labelled_folder

    listing = read_folder(path, fmt)
    if listing.path not in _announced:
        _announced.add(listing.path)
        print(listing.summary())
    return labelled_folder(listing, split, cfg)


def _voc_split(path, split):
    """A VOC devkit's image set for a side: test is val (and trainval train) when that is what
    the folder has."""
    main = os.path.join(path, "ImageSets", "Main")
    has = lambda s: os.path.isfile(os.path.join(main, s + ".txt"))  # noqa: E731
    if not has(split):
        for side, alt in (("test", "val"), ("trainval", "train")):
            if split == side and has(alt):
                return alt
    return split


def get_imdb(name, cfg):
    """An imdb by name: voc_<year>_<split>, coco_<year>_<split>, shapes_<split>,
    voc_folder:<path>[:<split>], coco_json:<annotations.json>:<image_dir>[:<split>], or a labelled
    folder: <path>[:<split>] with an optional format prefix (yolo:, labelme:, cvat:, labelimg:,
    coco_json:); split trainval (default), test, train, val or all."""
    if not name.startswith("voc_folder:"):
        spec = folder_spec(name)
        if spec is not None:
            path, split, fmt = spec
            return get_folder_imdb(path, split, cfg, fmt)
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
