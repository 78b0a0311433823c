"""COCO exports as a folder (or one json): instance jsons (annotations/instances_train.json,
Roboflow's train/_annotations.coco.json, any json with images + categories) and their images
(beside the json, under images/, images/<split>/ or <split>/). The split of a json is named by
its file or folder (train, val, test); a json without one is split by name hash. Classes: the
categories, by id. Crowd boxes (iscrowd 1) are kept as difficult: ignored in training and AP.

Pixel mapping: bbox [x, y, w, h] on pixel edges: x1 = x, x2 = x + w - 1 (as coco_json).
"""
import json
import math
import os
import re

from .folder import SPLIT_NAMES, Listing, Record, edges_to_box, walk


def load_coco_json(path):
    """The json as a dict when it is a COCO detection json (images + categories), else None."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(d, dict) and isinstance(d.get("images"), list) and \
        isinstance(d.get("categories"), list)
    return d if ok else None


def json_split(path, root):
    """train / val / test from the json's name or folder (instances_val2017.json -> val)."""
    rel = os.path.relpath(path, root)
    for token in reversed(re.split(r"[^a-z0-9]+", rel.lower())):
        if token in SPLIT_NAMES:
            return SPLIT_NAMES[token]
    return None


def _image_dir(path, root, images, split):
    """The folder the json's file_name entries are relative to."""
    jdir = os.path.dirname(path)
    cands = [jdir, root, os.path.join(root, "images"), os.path.dirname(jdir),
             os.path.join(os.path.dirname(jdir), "images")]
    for s, canon in SPLIT_NAMES.items():
        if canon == split:
            cands += [os.path.join(root, s), os.path.join(root, "images", s)]
    names = [str(im.get("file_name", "")) for im in images[:5] if isinstance(im, dict)]
    for c in cands:
        if names and all(os.path.isfile(os.path.join(c, n)) for n in names):
            return c
    return next((c for c in cands if os.path.isdir(c) and c != jdir), jdir)


def _add_annotation(rec, k, a, cats, path):
    where = f"annotation {k} (id {a.get('id')}, image '{os.path.basename(rec.image)}')"
    cname = cats.get(a.get("category_id"))
    if cname is None:
        rec.error(path, f"unknown category_id {a.get('category_id')!r} (known: {sorted(cats)})",
                  "fix the category_id or add the category", obj=where, kind="unknown class")
        return
    bb = a.get("bbox")
    if not isinstance(bb, (list, tuple)) or len(bb) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bb):
        rec.error(path, f"bbox {bb!r} is not 4 finite numbers [x, y, w, h]", "fix or remove the "
                  "annotation in the json", obj=where, name=cname, kind="bad coordinate")
        return
    x, y, w, h = (float(v) for v in bb)
    if w <= 0 or h <= 0:
        rec.error(path, f"bbox {bb} has width or height <= 0", "fix the box (COCO boxes are [x, "
                  "y, width, height])", obj=where, name=cname, kind="inverted box")
        return
    rec.add(cname, edges_to_box(x, y, x + w, y + h, rec.size), bool(a.get("iscrowd")), where)


def _read_one(path, data, root, listing):
    split = json_split(path, root)
    image_dir = _image_dir(path, root, data["images"], split)
    cats = {c.get("id"): str(c.get("name", "")).strip() for c in data["categories"]
            if isinstance(c, dict)}
    for cid in sorted(cats, key=lambda c: (0, c, "") if isinstance(c, int) else (1, 0, str(c))):
        if cats[cid] not in listing.classes:
            listing.classes.append(cats[cid])
    recs = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or im.get("id") is None or not im.get("file_name"):
            listing.error(path, "needs an 'id' and a 'file_name'", "fix the image entry",
                          obj=f"image {k}", kind="bad image entry")
            continue
        size = (im.get("width"), im.get("height"))
        p = os.path.normpath(os.path.join(image_dir, str(im["file_name"])))
        rec = Record(os.path.splitext(os.path.basename(p))[0], p, split, path,
                     size if all(isinstance(v, int) for v in size) else None)
        if im["id"] in recs:
            listing.error(path, f"image id {im['id']} is used twice", "give each image its own id",
                          obj=f"image {k}", kind="duplicate id")
            continue
        recs[im["id"]] = rec
    for k, a in enumerate(data.get("annotations") or []):
        rec = recs.get(a.get("image_id")) if isinstance(a, dict) else None
        if rec is None:
            listing.error(path, f"image_id {a.get('image_id') if isinstance(a, dict) else a!r} is "
                          "not in 'images'", "fix or remove the annotation", obj=f"annotation {k}",
                          kind="unknown image")
            continue
        _add_annotation(rec, k, a, cats, path)
    listing.records += recs.values()


def read_coco_folder(root, json_file=None):
    """A folder of COCO instance jsons and images, or one json (json_file) -> Listing."""
    listing = Listing(root, "coco", "COCO (instance json)")
    if json_file:
        jsons = [json_file]
    else:
        jsons = [os.path.join(root, r) for r in walk(root) if r.endswith(".json")]
    for path in jsons:
        data = load_coco_json(path)
        if data is None:
            if json_file:
                listing.error(path, "not a COCO detection json (needs 'images' and "
                              "'categories' lists)", "export COCO format", kind="bad json")
            continue
        listing.files.append(path)
        _read_one(path, data, root, listing)
    k = len(listing.files)
    listing.description = f"COCO ({k} instance json{'s' if k != 1 else ''})"
    return listing.finish()
