"""Deterministic image splits by name hash: the same names give the same split on every machine,
whatever their order on disk or in the image-set file."""
import hashlib
import math


def _name_key(name):
    return hashlib.sha1(str(name).encode("utf-8")).hexdigest(), str(name)


def validation_slice(names, fraction=0.1, min_count=20):
    """The images held out of training for decisions only (SOLVER.SCHEDULE plateau).

    names: the training set's image names. -> sorted list of the held-out names:
    max(min_count, ceil(fraction * n)) of them, never more than half the set (training keeps
    the rest), the ones whose sha1 of the name sorts first.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("validation_slice: image names repeat; each image needs its own name")
    count = min(max(int(min_count), math.ceil(float(fraction) * len(names))), len(names) // 2)
    return sorted(sorted(names, key=_name_key)[:count])
