"""Deterministic image splits by name hash: the same names give the same split on every machine,
whatever their order on disk or in the image-set file."""
import hashlib
import math


def name_hash_fraction(name):
    """A fixed number in [0, 1) from an image name (sha1), the same on every machine."""
    return int.from_bytes(hashlib.sha1(str(name).encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def split_by_name_hash(names, test_fraction=0.2):
    """(train names, test names), each in the given order: a name is a test image when the hash
    of the name falls below test_fraction. Each name decides alone, so adding or removing photos
    never moves the others from one side to the other."""
    test = [n for n in names if name_hash_fraction(n) < test_fraction]
    chosen = set(test)
    return [n for n in names if n not in chosen], test


def validation_slice(names, fraction=0.1, min_count=20):
    """The images held out of training for decisions only (SOLVER.SCHEDULE plateau).

    names: the training set's image names. -> sorted list of the held-out names:
    max(min_count, ceil(fraction * n)) of them, never more than half the set (training keeps
    the rest), the ones whose name hash is lowest.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("validation_slice: image names repeat; each image needs its own name")
    count = min(max(int(min_count), math.ceil(float(fraction) * len(names))), len(names) // 2)
    return sorted(sorted(names, key=lambda n: (name_hash_fraction(n), str(n)))[:count])
