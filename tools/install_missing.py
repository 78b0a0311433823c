"""Installs the requirements that are missing (used by `make`); never replaces an installed torch.

    python tools/install_missing.py [requirements.txt]
"""
import re
import subprocess
import sys
from importlib import metadata


def parse(line):
    """'numpy>=1.2  # c' -> ('numpy', 'numpy>=1.2') or None."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return (m.group(1), line) if m else None


def satisfied(name, spec):
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
        return Requirement(spec).specifier.contains(version, prereleases=True)
    except ImportError:  # no packaging: presence is enough
        return True


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "requirements.txt"
    missing = []
    with open(path) as f:
        for line in f:
            req = parse(line)
            if req is None:
                continue
            name, spec = req
            if satisfied(name, spec):
                continue
            if name.lower() == "torch":
                try:
                    import torch  # noqa: F401
                    print(f"[install_missing] torch {torch.__version__} is installed; not replacing "
                          f"it (wanted {spec})")
                    continue
                except ImportError:
                    pass
            missing.append(spec)
    if not missing:
        print("[install_missing] all requirements present")
        return 0
    print("[install_missing] installing:", " ".join(missing))
    return subprocess.call([sys.executable, "-m", "pip", "install"] + missing)


if __name__ == "__main__":
    sys.exit(main())
