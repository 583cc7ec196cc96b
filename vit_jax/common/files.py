"""Atomic file writes: a reader, or a process killed mid-write, never sees half a file."""

import contextlib
import os


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """Opens `path.tmp` for writing and, when the block ends without an error, renames it over
    `path`. Parent directories are created. `mode` is "w" or "wb"."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode) as f:
            yield f
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
