"""labelImg folders: one VOC XML per image, beside the image (<id>.jpg + <id>.xml) or in a folder
of their own (Annotations/ + JPEGImages/ without ImageSets, annotations/ + images/, ...). An XML
goes with the image of the same name in its folder, else with the one image of that name in the
data set. Classes: classes.txt (one per line) or the sorted names in the XMLs. Splits: train/
val/ test/ folders when the files sit in them.

Pixel mapping: VOC's: 1-based inclusive corners, x1 = xmin - 1, x2 = xmax - 1 (parse_voc_xml).
"""
import os
import xml.etree.ElementTree as ET

from .folder import Listing, Record, is_image, split_of_path, walk
from .imdb import DatasetError, image_size
from .pascal_voc import parse_voc_xml


def is_voc_xml(path):
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            return el.tag == "annotation"
    except (ET.ParseError, OSError):
        return False
    return False


def _image_for(xml_rel, images_by_dir, images_by_stem):
    stem = os.path.splitext(os.path.basename(xml_rel))[0]
    for p in images_by_dir.get(os.path.dirname(xml_rel), ()):
        if os.path.splitext(os.path.basename(p))[0] == stem:
            return p
    cands = images_by_stem.get(stem, [])
    return cands[0] if len(cands) == 1 else None


def read_labelimg(root):
    """A labelImg folder -> Listing (see the module docstring)."""
    listing = Listing(root, "labelimg", "labelImg (VOC XML per image)")
    files = walk(root)
    images_by_dir, images_by_stem = {}, {}
    for rel in files:
        if is_image(rel):
            images_by_dir.setdefault(os.path.dirname(rel), []).append(rel)
            images_by_stem.setdefault(os.path.splitext(os.path.basename(rel))[0], []).append(rel)
    described = set()
    for rel in files:
        path = os.path.join(root, rel)
        if not rel.endswith(".xml") or not is_voc_xml(path):
            continue
        listing.files.append(path)
        im_rel = _image_for(rel, images_by_dir, images_by_stem)
        stem = os.path.splitext(os.path.basename(rel))[0]
        image = os.path.join(root, im_rel) if im_rel else os.path.join(root, os.path.dirname(rel),
                                                                       stem + ".jpg")
        rec = Record(stem, image, split_of_path(im_rel or rel), path)
        try:
            wh = image_size(image) if im_rel else None
        except DatasetError:
            wh = None  # the image check reports it
        for k, (name, box, difficult) in enumerate(parse_voc_xml(path, image, wh, None, rec) or []):
            rec.add(name, box, difficult, label=k)
        described.add(im_rel)
        listing.records.append(rec)
    for rel in files:
        if is_image(rel) and rel not in described:
            listing.warning(os.path.join(root, rel), "no XML for this image: left out", "label "
                            "it (an XML without objects makes it a background image)",
                            kind="unlabelled image")
    names_file = os.path.join(root, "classes.txt")
    if os.path.isfile(names_file):
        from .voc_folder import read_classes_file

        listing.classes = read_classes_file(names_file)
    else:
        listing.classes = sorted({o[0] for r in listing.records for o in r.objects})
    return listing.finish()


def read_voc_devkit(root):
    """A VOC devkit folder as a Listing (for conversion and comparison): labelImg's reading of
    Annotations/ + JPEGImages/, splits from ImageSets/Main (test, val, else train)."""
    listing = read_labelimg(root)
    listing.fmt, listing.description = "voc", "VOC devkit"
    main = os.path.join(root, "ImageSets", "Main")
    split_of = {}
    for split in ("train", "trainval", "val", "test"):
        f = os.path.join(main, split + ".txt")
        if os.path.isfile(f):
            with open(f) as fh:
                for ln in fh:
                    if ln.strip():
                        split_of[ln.split()[0]] = "train" if split == "trainval" else split
    listing.records = [r for r in listing.records if r.index in split_of]
    for r in listing.records:
        r.split = split_of[r.index]
    listing.own_split = any(r.split in ("val", "test") for r in listing.records)
    return listing
