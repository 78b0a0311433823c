"""Train / test sides of a folder that has no split of its own."""
import hashlib


def name_hash_fraction(name):
    """A fixed number in [0, 1) from an image name (sha1), the same on every machine."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def split_by_name_hash(names, test_fraction=0.2):
    """(train names, test names), each in the given order: a name is a test image when the hash
    of the name falls below test_fraction. Each name decides alone, so adding or removing photos
    never moves the others from one side to the other."""
    test = [n for n in names if name_hash_fraction(n) < test_fraction]
    chosen = set(test)
    return [n for n in names if n not in chosen], test
