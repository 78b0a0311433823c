"""CVAT for images 1.1: annotations.xml (<image name width height subset> elements holding <box
label xtl ytl xbr ybr occluded outside>) + the images under images/ (or beside the xml). A box
with outside="1" is not in the image and is left out; occluded boxes are kept as objects. Splits:
the images' `subset` (Train / Validation / Test); classes: the task's or project's <labels> in
their order, else the sorted labels of the boxes.

Pixel mapping: CVAT's corners are on pixel edges: x1 = xtl, x2 = xbr - 1.
"""
import math
import os
import xml.etree.ElementTree as ET

from .folder import SPLIT_NAMES, Listing, Record, edges_to_box, is_image, walk

ANNOTATION_FILE = "annotations.xml"


def is_cvat_xml(path):
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            return el.tag == "annotations"
    except (ET.ParseError, OSError):
        return False
    return False


def _image_root(root):
    d = os.path.join(root, "images")
    return d if os.path.isdir(d) else root


def _box(el, size):
    """(pixel box, None) or (None, problem) of a <box>."""
    try:
        vals = [float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
    except (TypeError, ValueError):
        return None, "xtl, ytl, xbr, ybr are not all numbers"
    if not all(math.isfinite(v) for v in vals):
        return None, "xtl, ytl, xbr, ybr are not all finite"
    return edges_to_box(*vals, size), None


def _labels(xml_root):
    names = [(lab.findtext("name") or "").strip() for lab in xml_root.iter("label")
             if lab.find("name") is not None]
    return [n for n in dict.fromkeys(names) if n]


def read_cvat(root, xml_path=None):
    """A CVAT for images 1.1 export -> Listing (see the module docstring)."""
    xml_path = xml_path or os.path.join(root, ANNOTATION_FILE)
    listing = Listing(root, "cvat", "CVAT for images 1.1")
    listing.files.append(xml_path)
    try:
        xroot = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        listing.error(xml_path, f"unreadable XML ({e})", "re-export it from CVAT",
                      kind="unreadable XML")
        return listing.finish()
    im_root = _image_root(root)
    named = set()
    for k, im in enumerate(xroot.iter("image")):
        name = (im.get("name") or "").replace("\\", "/")
        where = f"image {k} ('{name}')"
        path = os.path.normpath(os.path.join(im_root, name))
        named.add(path)
        try:
            size = (int(im.get("width")), int(im.get("height")))
        except (TypeError, ValueError):
            size = None
        subset = (im.get("subset") or "").strip().lower()
        rec = Record(os.path.splitext(os.path.basename(name))[0], path,
                     SPLIT_NAMES.get(subset), xml_path, size)
        if not os.path.isfile(path):
            rec.error(xml_path, f"boxes for an image that is not in the folder ({path})",
                      "add the image under images/ or export the task with its images",
                      obj=where, kind="missing image")
        for j, box in enumerate(im.iter("box")):
            label = (box.get("label") or "").strip()
            obj = f"{where} box {j}"
            if box.get("outside") == "1":
                continue
            b, problem = _box(box, size)
            if problem:
                rec.error(xml_path, problem, "fix the box or remove it", obj=obj, name=label,
                          kind="bad coordinate")
                continue
            difficult = any(a.get("name") == "difficult" and (a.text or "").strip().lower()
                            in ("true", "1") for a in box.findall("attribute"))
            rec.add(label, b, difficult, label=obj)
        listing.records.append(rec)
    listing.classes = _labels(xroot) or sorted({o[0] for r in listing.records for o in r.objects})
    for rel in walk(im_root):
        p = os.path.normpath(os.path.join(im_root, rel))
        if is_image(rel) and p not in named:
            listing.warning(p, f"not in {ANNOTATION_FILE}: left out", "export the task again "
                            "with this image", kind="unlabelled image")
    return listing.finish()
