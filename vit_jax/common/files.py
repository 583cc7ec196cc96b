"""Atomic file writes: a reader, or a process killed mid-write, never sees half a file."""

import contextlib
import os

from vit_jax.common.errors import Error


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """Opens `path.tmp` for writing and, when the block ends without an error, renames it over
    `path`. Parent directories are created. `mode` is "w" or "wb"."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)  # fails on a folder in the way: the temporary goes too
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_output_path(path: str, what: str, folder: bool = False) -> None:
    """Raises `Error` (one line, naming `what`, e.g. "--export_npz") unless `path` can be written as a
    file (or, with `folder`, created or reused as a folder): nothing of the wrong kind is in the way
    and no parent is a regular file."""
    if os.path.exists(path) and os.path.isdir(path) != folder:
        kind = "a folder" if os.path.isdir(path) else "a file"
        want = "a folder (it is created if missing)" if folder else "a file path"
        raise Error(f"{what}={path} is {kind}; give {want}")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise Error(f"{what}={path} lies under {parent}, which is a file, not a folder")
