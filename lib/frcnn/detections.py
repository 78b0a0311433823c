"""What a detector returns and what it reads, without torch: the result type of `Detector`
(frcnn.api) and of the torch-free ONNX runner (frcnn.deploy), and their image inputs."""
import os
from dataclasses import dataclass, field

import numpy as np

from frcnn.errors import DataError


@dataclass
class Detections:
    """Detections of one image, by descending score.

    boxes [D, 4] float32 (x1, y1, x2, y2) original-image pixels; scores [D] float32;
    labels [D] int64 class index (1..K, 0 = background never appears); class_names [D] str.
    """
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list = field(default_factory=list)
    image_size: tuple = (0, 0)  # (height, width)

    def __len__(self):
        return len(self.scores)

    def to_coco(self, image_id, file_name=None):
        """COCO results entries (bbox = [x, y, w, h], w = x2 - x1 + 1), class names included."""
        out = []
        for b, s, c, n in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(),
                              self.class_names):
            e = {"image_id": image_id, "category_id": int(c), "category_name": n,
                 "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0] + 1, 2),
                          round(b[3] - b[1] + 1, 2)], "score": round(float(s), 5)}
            if file_name is not None:
                e["file_name"] = file_name
            out.append(e)
        return out


IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(inputs):
    """Image files and folders (every .jpg/.jpeg/.png/.bmp in them, sorted) -> paths."""
    out = []
    for p in inputs:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXT))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise DataError(f"{p}: no such image or folder; give image files or folders")
    if not out:
        raise DataError(f"{', '.join(inputs)}: no images ({', '.join(IMAGE_EXT)}) found; give "
                        "image files or folders holding them")
    return out


def read_any_image(image):
    """A path or an array -> BGR uint8 [H, W, 3] (gray [H, W] and BGRA [H, W, 4] converted)."""
    import cv2

    from frcnn.datasets.imdb import read_image

    if isinstance(image, (str, os.PathLike)):
        return read_image(str(image))
    im = np.asarray(image)
    if im.ndim == 2:
        im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
    elif im.ndim == 3 and im.shape[2] == 4:
        im = cv2.cvtColor(im, cv2.COLOR_BGRA2BGR)
    if im.ndim != 3 or im.shape[2] != 3 or min(im.shape[:2]) < 1:
        raise DataError(f"image array of shape {im.shape}: expected a BGR image [H, W, 3]; "
                        "read it with cv2.imread (or convert RGB with im[..., ::-1])")
    if im.dtype != np.uint8:
        im = np.clip(im, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(im)


DEFAULT_DRAW_THRESH = 0.8  # the reference demo's; for model files tested before the F1 one


class BatchCall:
    """`det(images)` for Detector and OnnxDetector: a path or a BGR array [H, W, 3] ->
    Detections; a list/tuple of them (or an array [N, H, W, 3]) -> a list (detect_one each)."""

    def __call__(self, images, **thresholds):
        if isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4):
            return [self.detect_one(im, **thresholds) for im in images]
        return self.detect_one(images, **thresholds)
