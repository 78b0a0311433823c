"""LabelMe folders: <id>.json beside (or near) <id>.jpg, one json per labelled image, with
`imagePath` (relative to the json), `imageWidth`, `imageHeight` and `shapes`. A `rectangle` is a
box; a `polygon` (or `circle`) becomes its bounding box, with a warning; points and lines are
left out, with a warning. Splits: train/ val/ test/ folders when the images sit in them.
Classes: the sorted labels found in every json (or classes.txt, one per line).

Pixel mapping: LabelMe's points are on pixel edges (as COCO's): x1 = min x, x2 = max x - 1.
"""
import json
import os

from .folder import Listing, Record, edges_to_box, is_image, split_of_path, walk

BOX_SHAPES = ("rectangle", "polygon", "circle")


def is_labelme_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "shapes" in d and ("imagePath" in d or "imageData" in d)


def _shape_box(shape):
    """((x0, y0, x1, y1) pixel edges, warning or None) of a shape, or (None, why not a box)."""
    kind = shape.get("shape_type") or "polygon"
    pts = shape.get("points")
    if kind not in BOX_SHAPES:
        return None, f"a {kind} is not a box: left out"
    try:
        xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
    except (TypeError, ValueError, IndexError, KeyError):
        return None, f"points {pts!r} are not [x, y] pairs"
    if kind == "circle":
        if len(xs) != 2:
            return None, f"a circle needs 2 points, has {len(xs)}"
        r = ((xs[1] - xs[0]) ** 2 + (ys[1] - ys[0]) ** 2) ** 0.5
        return (xs[0] - r, ys[0] - r, xs[0] + r, ys[0] + r), "a circle: its bounding box is used"
    if len(xs) < 2:
        return None, f"a {kind} needs at least 2 points, has {len(xs)}"
    warn = f"a polygon of {len(xs)} points: its bounding box is used" if kind == "polygon" else None
    return (min(xs), min(ys), max(xs), max(ys)), warn


def read_json(path, root):
    """One LabelMe json -> (Record with its problems in rec.issues, None), or (None, why) when
    the json cannot be read."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"unreadable json ({e})"
    image_rel = str(d.get("imagePath") or "").replace("\\", "/")
    image = os.path.normpath(os.path.join(os.path.dirname(path), image_rel)) if image_rel else ""
    index = os.path.splitext(os.path.basename(image or path))[0]
    size = (d.get("imageWidth"), d.get("imageHeight"))
    rec = Record(index, image, split_of_path(os.path.relpath(image or path, root)), path,
                 size if all(isinstance(v, int) for v in size) else None)
    if not image_rel or not os.path.isfile(image):
        rec.error(path, f"imagePath '{image_rel}' does not exist ({image or 'empty'})",
                  "put the image there or fix imagePath (relative to the json)",
                  kind="missing image")
    for k, shape in enumerate(d.get("shapes") or []):
        label = str(shape.get("label", "")).strip() if isinstance(shape, dict) else ""
        where = f"shape {k}"
        if not label:
            rec.error(path, "no label", "give the shape a label or remove it", obj=where,
                      kind="no class name")
            continue
        edges, note = _shape_box(shape)
        if edges is None:
            rec.warning(path, note, "draw it as a rectangle if it is an object", obj=where,
                        name=label, kind="not a box")
            continue
        if note:
            rec.warning(path, note, "draw rectangles for exact boxes", obj=where, name=label,
                        kind="polygon as box")
        rec.add(label, edges_to_box(*edges, rec.size), bool(shape.get("difficult")), where)
    return rec, None


def read_labelme(root):
    """A LabelMe folder -> Listing (see the module docstring)."""
    listing = Listing(root, "labelme", "LabelMe (json per image)")
    files = walk(root)
    described = set()
    for rel in files:
        if not rel.endswith(".json"):
            continue
        path = os.path.join(root, rel)
        if not is_labelme_json(path):
            continue
        listing.files.append(path)
        rec, problem = read_json(path, root)
        if rec is None:
            listing.error(path, problem, "re-save it from LabelMe", kind="unreadable json")
            continue
        described.add(rec.image)
        listing.records.append(rec)
    for rel in files:
        p = os.path.normpath(os.path.join(root, rel))
        if is_image(rel) and p not in described:
            listing.warning(p, "no LabelMe json names this image: left out", "label it in "
                            "LabelMe (saving with no shapes makes it a background image)",
                            kind="unlabelled image")
    names_file = os.path.join(root, "classes.txt")
    if os.path.isfile(names_file):
        with open(names_file) as f:
            listing.classes = [ln.strip() for ln in f if ln.strip() and ln.strip() != "__background__"]
    else:
        listing.classes = sorted({o[0] for r in listing.records for o in r.objects})
    return listing.finish()
