"""YOLO label folders: Ultralytics (data.yaml with `names` and `train` / `val` / `test`, each a
folder, a .txt list of images or a list of those) and darknet (obj.names or classes.txt, images
with their .txt labels beside them or under labels/). One label file per image, one line per box:
`class cx cy w h`, the centre and the size as fractions (0-1) of the image's width and height.
An image without a label file, or with an empty one, is a background image.

Pixel mapping: the box's edges are (cx -+ w/2) * W; 0-based inclusive x1 = left edge, x2 = right
edge - 1 (folder.edges_to_box).
"""
import os

from .folder import SPLIT_NAMES, Listing, Record, edges_to_box, is_image, split_of_path, walk
from .imdb import DatasetError, image_size

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")
NAMES_FILES = ("obj.names", "classes.txt", "classes.names")
LIST_FILES = {"train.txt": "train", "val.txt": "val", "valid.txt": "val", "test.txt": "test"}


def find_yaml(root):
    """The Ultralytics data yaml of a folder (a yaml with `names`), or None."""
    import yaml

    cands = [n for n in YAML_NAMES if os.path.isfile(os.path.join(root, n))]
    cands += sorted(n for n in os.listdir(root) if n.endswith((".yaml", ".yml")) and n not in cands)
    for n in cands:
        try:
            with open(os.path.join(root, n)) as f:
                d = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(d, dict) and "names" in d:
            return os.path.join(root, n)
    return None


def label_path(image):
    """Ultralytics' rule: the last /images/ of the path becomes /labels/, the extension .txt;
    without an images/ folder the label file sits beside the image."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    p = sb.join(image.rsplit(sa, 1)) if sa in image else image
    return os.path.splitext(p)[0] + ".txt"


def _names(value, where, listing):
    if isinstance(value, dict):
        try:
            return [str(value[k]).strip() for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            pass
    elif isinstance(value, list):
        return [str(v).strip() for v in value]
    listing.error(where, f"'names' is {value!r}", "give the class names as a list or as "
                  "{id: name}", kind="bad names")
    return []


def _resolve(entry, base, yaml_dir):
    """A data.yaml split entry (path relative to `base`) -> existing path or None. Roboflow's
    `../train/images` is taken relative to the yaml's folder when it does not exist as written."""
    for p in (os.path.join(base, entry), os.path.join(yaml_dir, entry),
              os.path.join(yaml_dir, entry.replace("../", "", 1))):
        if os.path.exists(p):
            return os.path.normpath(p)
    return None


def _list_images(p):
    """Images of a split entry: a folder (recursively) or a .txt list (paths relative to it)."""
    if os.path.isdir(p):
        return [os.path.join(p, r) for r in walk(p) if is_image(r)]
    base = os.path.dirname(p)
    with open(p) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    out = []
    for ln in lines:
        cands = [ln, os.path.join(base, ln), os.path.join(base, ln.split("/", 1)[-1])]
        out.append(os.path.normpath(next((c for c in cands if os.path.exists(c)), cands[1])))
    return out


def _yaml_images(yaml_path, listing):
    """{image path: split} from a data.yaml (classes into listing.classes)."""
    import yaml

    with open(yaml_path) as f:
        d = yaml.safe_load(f)
    listing.files.append(yaml_path)
    listing.classes = _names(d["names"], yaml_path, listing)
    ydir = os.path.dirname(yaml_path)
    base = os.path.join(ydir, str(d["path"])) if d.get("path") else ydir
    if not os.path.isdir(base):
        base = ydir
    images = {}
    for key in ("train", "val", "test"):
        entries = d.get(key) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            p = _resolve(str(entry), base, ydir)
            if p is None:
                listing.error(yaml_path, f"{key}: '{entry}' not found (looked in {base})",
                              "fix the path (relative to `path`, or to the yaml's folder)",
                              kind="missing split")
                continue
            for im in _list_images(p):
                images.setdefault(im, key)
    return images


def _darknet_images(root, listing):
    """{image path: split} of a darknet / labelImg-YOLO folder (classes from obj.names or
    classes.txt; splits from train.txt / valid.txt / test.txt, else from folder names)."""
    names_file = next((os.path.join(root, n) for n in NAMES_FILES
                       if os.path.isfile(os.path.join(root, n))), None)
    if names_file is None:
        raise DatasetError(f"{root}: YOLO folder without a class list; add data.yaml with "
                           f"`names`, or obj.names / classes.txt with one class per line")
    listing.files.append(names_file)
    with open(names_file) as f:
        listing.classes = [ln.strip() for ln in f if ln.strip()]
    images = {}
    for lst, split in LIST_FILES.items():
        if os.path.isfile(os.path.join(root, lst)):
            for im in _list_images(os.path.join(root, lst)):
                images.setdefault(im, split)
    for rel in walk(root):
        p = os.path.normpath(os.path.join(root, rel))
        if is_image(rel) and p not in images:
            images[p] = split_of_path(rel)
    return images


def read_line(line, n_classes):
    """One label line -> ((class id, cx, cy, w, h), None) or (None, problem)."""
    vals = line.split()
    if len(vals) != 5:
        return None, f"'{line.strip()}' has {len(vals)} values, expected 5 (class cx cy w h)"
    try:
        nums = [float(v) for v in vals]
    except ValueError:
        return None, f"'{line.strip()}' is not 5 numbers (class cx cy w h)"
    if not nums[0].is_integer() or not 0 <= nums[0] < n_classes:
        return None, (f"class id {vals[0]} is not in names (0-{n_classes - 1})" if n_classes else
                      f"class id {vals[0]}: the class list is empty")
    if not all(0.0 <= v <= 1.0 for v in nums[1:]):
        return None, f"'{line.strip()}': normalised values must lie in [0, 1]"
    return (int(nums[0]), *nums[1:]), None


def _read_labels(rec, path, classes):
    try:
        w, h = image_size(rec.image)
    except DatasetError:
        return  # the image check reports it
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        val, problem = read_line(line, len(classes))
        if problem:
            rec.error(path, problem, "fix or remove the line", obj=f"line {k}", kind="bad label line")
            continue
        c, cx, cy, bw, bh = val
        box = edges_to_box((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                           (cy + bh / 2) * h, (w, h))
        rec.add(classes[c], box, label=f"line {k}")


def read_yolo(root):
    """A YOLO folder -> Listing (see the module docstring)."""
    yaml_path = find_yaml(root)
    listing = Listing(root, "yolo", "YOLO (data.yaml)" if yaml_path else "YOLO (darknet)")
    images = _yaml_images(yaml_path, listing) if yaml_path else _darknet_images(root, listing)
    labels_used = set()
    for im, split in sorted(images.items()):
        rec = Record(os.path.splitext(os.path.basename(im))[0], im, SPLIT_NAMES.get(split, split))
        lp = label_path(im)
        if os.path.isfile(lp):
            rec.ann_file = lp
            labels_used.add(lp)
            listing.files.append(lp)
            _read_labels(rec, lp, listing.classes)
        else:
            rec.warning(im, f"no label file ({lp})", "read as a background image; write an "
                        "empty label file to say so", kind="no label file")
        listing.records.append(rec)
    image_dirs = {os.path.dirname(im) for im in images}
    for rel in walk(root):
        p = os.path.normpath(os.path.join(root, rel))
        if p not in labels_used and _is_label_file(root, rel, image_dirs):
            listing.error(p, "label file without an image", "add the image (same name, under "
                          "images/ instead of labels/) or remove the label file",
                          kind="label without image")
    return listing.finish()


def _is_label_file(root, rel, image_dirs):
    """A .txt in a labels/ folder or beside images that is not a class or image list."""
    name = os.path.basename(rel)
    if not name.endswith(".txt") or name in NAMES_FILES or name in LIST_FILES:
        return False
    path = os.path.normpath(os.path.join(root, rel))
    return "labels" in rel.split(os.sep) or os.path.dirname(path) in image_dirs
