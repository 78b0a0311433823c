"""Atomic torch.save: the one writer of snapshots, model files and best weights (a killed run
never leaves half a file; a full disk keeps the previous file and says so)."""
import errno
import os
import time

import torch

from frcnn.errors import UserError


class DiskFull(UserError):
    """A snapshot or model file could not be written (disk full, quota, I/O error)."""


def save_atomic(obj, path):
    """torch.save to path.tmp, fsync, then rename: a killed run never leaves half a file, and a
    failed write (disk full) removes the tmp file, keeps what `path` held and raises DiskFull."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            # test hook: widen the window between writing and renaming (kill -9 tests)
            pause = float(os.environ.get("FRCNN_SNAPSHOT_PAUSE_S", "0") or 0)
            if pause > 0:
                time.sleep(pause)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e)
        kept = (f"{path} is unchanged" if os.path.exists(path) else
                "the snapshots written before are intact")
        raise DiskFull(f"{path}: could not be written ({why}); {kept}: free space on "
                       f"{os.path.dirname(os.path.abspath(path))} (or set OUTPUT_DIR to another "
                       "disk) and rerun the same command, it resumes from the newest "
                       "snapshot") from None
    os.replace(tmp, path)
