"""Write a labelled folder (a datasets.folder.Listing) in another format: voc, labelimg, yolo,
labelme, cvat, coco. Images are hard-linked (copied across file systems); the splits are kept
(train / val / test as each format stores them). Boxes are written from the reference's 0-based
inclusive corners by the inverse of each reader's mapping (docs/DATA.md), so reading the output
back gives the same boxes: exactly for whole pixels, to 1/100 pixel otherwise (YOLO's fractions
are written with 10 decimals). Difficult objects: VOC / labelImg <difficult>, COCO iscrowd, LabelMe
and CVAT a `difficult` flag; YOLO has none and leaves them out (counted in the summary).
"""
import json
import os
import shutil
import xml.etree.ElementTree as ET

from .imdb import DatasetError, image_size

TARGETS = ("voc", "labelimg", "yolo", "labelme", "cvat", "coco")
CVAT_SUBSETS = {"train": "Train", "val": "Validation", "test": "Test"}


def _num(v):
    """A coordinate as short text: 12 for whole pixels, 12.25 otherwise."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _place_image(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _image_name(rec):
    return rec.index + os.path.splitext(rec.image)[1]


def _voc_xml(rec, size, folder):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = _image_name(rec)
    s = ET.SubElement(root, "size")
    for k, v in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(s, k).text = str(v)
    for name, (x1, y1, x2, y2), difficult, _ in rec.objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "difficult").text = str(int(difficult))
        bb = ET.SubElement(o, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2 + 1, y2 + 1)):
            ET.SubElement(bb, k).text = _num(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _write_classes(listing, dst):
    _write(os.path.join(dst, "classes.txt"), "".join(c + "\n" for c in listing.classes))


def write_voc(listing, dst):
    for r in listing.records:
        _place_image(r.image, os.path.join(dst, "JPEGImages", _image_name(r)))
        _write(os.path.join(dst, "Annotations", r.index + ".xml"),
               _voc_xml(r, image_size(r.image), "JPEGImages"))
    sets = {"train": ["train"], "val": ["val"], "test": ["test"], "trainval": ["train", "val"]}
    for name, splits in sets.items():
        ids = [r.index for r in listing.records if r.split in splits]
        if ids:
            _write(os.path.join(dst, "ImageSets", "Main", name + ".txt"),
                   "".join(i + "\n" for i in ids))
    _write_classes(listing, dst)


def _split_dir(r):
    """The sub-folder a record goes to in the formats that keep splits as folders."""
    return r.split or "train"


def write_labelimg(listing, dst):
    for r in listing.records:
        d = os.path.join(dst, _split_dir(r))
        _place_image(r.image, os.path.join(d, _image_name(r)))
        _write(os.path.join(d, r.index + ".xml"), _voc_xml(r, image_size(r.image), os.path.basename(d)))
    _write_classes(listing, dst)


def write_yolo(listing, dst):
    """-> number of difficult objects left out (YOLO cannot mark them)."""
    c2i = {c: i for i, c in enumerate(listing.classes)}
    dropped = 0
    splits = sorted({_split_dir(r) for r in listing.records})
    for r in listing.records:
        s = _split_dir(r)
        _place_image(r.image, os.path.join(dst, "images", s, _image_name(r)))
        w, h = image_size(r.image)
        lines = []
        for name, (x1, y1, x2, y2), difficult, _ in r.objects:
            if difficult:
                dropped += 1
                continue
            bw, bh = x2 + 1 - x1, y2 + 1 - y1
            lines.append(f"{c2i[name]} {(x1 + bw / 2) / w:.10f} {(y1 + bh / 2) / h:.10f} "
                         f"{bw / w:.10f} {bh / h:.10f}\n")
        _write(os.path.join(dst, "labels", s, r.index + ".txt"), "".join(lines))
    yaml_lines = ["path: .\n"] + [f"{s}: images/{s}\n" for s in splits]
    yaml_lines.append("names:\n" + "".join(f"  {i}: {json.dumps(c)}\n"
                                           for i, c in enumerate(listing.classes)))
    _write(os.path.join(dst, "data.yaml"), "".join(yaml_lines))
    return dropped


def write_labelme(listing, dst):
    for r in listing.records:
        d = os.path.join(dst, _split_dir(r))
        _place_image(r.image, os.path.join(d, _image_name(r)))
        w, h = image_size(r.image)
        shapes = [{"label": n, "points": [[x1, y1], [x2 + 1, y2 + 1]], "group_id": None,
                   "shape_type": "rectangle", "flags": {}, **({"difficult": True} if dif else {})}
                  for n, (x1, y1, x2, y2), dif, _ in r.objects]
        doc = {"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": _image_name(r),
               "imageData": None, "imageHeight": h, "imageWidth": w}
        _write(os.path.join(d, r.index + ".json"), json.dumps(doc, indent=2) + "\n")
    _write_classes(listing, dst)


def write_cvat(listing, dst):
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    labels = ET.SubElement(task, "labels")
    for c in listing.classes:
        ET.SubElement(ET.SubElement(labels, "label"), "name").text = c
    for k, r in enumerate(listing.records):
        _place_image(r.image, os.path.join(dst, "images", _image_name(r)))
        w, h = image_size(r.image)
        im = ET.SubElement(root, "image", id=str(k), name=_image_name(r), width=str(w),
                           height=str(h), subset=CVAT_SUBSETS.get(r.split, "default"))
        for n, (x1, y1, x2, y2), dif, _ in r.objects:
            b = ET.SubElement(im, "box", label=n, occluded="0", source="manual", xtl=_num(x1),
                              ytl=_num(y1), xbr=_num(x2 + 1), ybr=_num(y2 + 1), z_order="0")
            if dif:
                ET.SubElement(b, "attribute", name="difficult").text = "true"
    ET.indent(root)
    _write(os.path.join(dst, "annotations.xml"), ET.tostring(root, encoding="unicode") + "\n")


def write_coco(listing, dst):
    cat_id = {c: i + 1 for i, c in enumerate(listing.classes)}
    cats = [{"id": i, "name": c, "supercategory": ""} for c, i in cat_id.items()]
    for s in sorted({_split_dir(r) for r in listing.records}):
        images, anns = [], []
        for r in (r for r in listing.records if _split_dir(r) == s):
            _place_image(r.image, os.path.join(dst, "images", s, _image_name(r)))
            w, h = image_size(r.image)
            images.append({"id": len(images) + 1, "file_name": _image_name(r), "width": w,
                           "height": h})
            for n, (x1, y1, x2, y2), dif, _ in r.objects:
                bw, bh = x2 + 1 - x1, y2 + 1 - y1
                anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": cat_id[n],
                             "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": int(dif)})
        _write(os.path.join(dst, "annotations", f"instances_{s}.json"),
               json.dumps({"images": images, "annotations": anns, "categories": cats}) + "\n")


WRITERS = {"voc": write_voc, "labelimg": write_labelimg, "yolo": write_yolo,
           "labelme": write_labelme, "cvat": write_cvat, "coco": write_coco}


def convert(listing, dst, to):
    """Write `listing` into the folder `dst` in format `to` (TARGETS). -> summary line."""
    if to not in TARGETS:
        raise DatasetError(f"{dst}: unknown target format '{to}'; use one of {', '.join(TARGETS)}")
    src, out = os.path.realpath(listing.path), os.path.realpath(dst)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        raise DatasetError(f"{dst}: the output folder overlaps the data set {listing.path}; write "
                           "the converted set to a folder of its own")
    errors = listing.issues + [i for r in listing.records for i in r.issues]
    errors = [i for i in errors if i.level == "error"]
    if errors:
        raise DatasetError(f"{listing.path}: {len(errors)} problem(s), fix them before converting "
                           "(tools/check_dataset.py lists them all)\n" + "\n".join(map(str, errors[:50])))
    os.makedirs(dst, exist_ok=True)
    dropped = WRITERS[to](listing, dst)
    n = sum(len(r.objects) for r in listing.records)
    note = f" ({dropped} difficult object(s) left out: YOLO cannot mark them)" if dropped else ""
    return f"{listing.path} -> {dst} ({to}): {len(listing.records)} images, {n} objects{note}"
