"""`ram://`: a file system that is not the local one, for testing remote workdirs.

It is TensorFlow's in-memory file system (`tf.io.gfile`'s "ram" scheme), registered with
`etils.epath` the way epath registers gs://: through epath's TensorFlow backend. So a `ram://`
workdir takes the same code path as a `gs://` one (vit_jax.common.files → epath → tf.io.gfile, and
tf.summary → tf.io.gfile), with memory instead of a bucket behind it.

Orbax cannot use it: TensorStore, which writes the checkpoint arrays, has no kvstore for it (Orbax
builds TensorStore's "gcs" driver for gs:// and "file" for everything else). `orbax_on_disk` maps
the checkpoint folders Orbax is given to a local folder instead; see tests/train/test_remote.py.
"""

import os
import uuid

from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath

SCHEME = "ram"
PREFIX = f"{SCHEME}://"


class _RamBackend(type(epath_backend.tf_backend)):
    """epath's tf.io.gfile backend; "w" empties the file first (TensorFlow's ram file system
    appends to an existing file opened with "w" instead of truncating it)."""

    def open(self, path, mode):
        if "w" in mode and self.exists(path):
            self.remove(path)
        return super().open(path, mode)


_BACKEND = _RamBackend()


class RamPath(gpath.PosixGPath):
    """epath's gs:// class with "ram" as its scheme and tf.io.gfile as its backend."""

    def __new__(cls, *parts):
        full = "/".join(os.fspath(p) for p in parts)
        if full.startswith(PREFIX):  # as epath stores gs://b/x: the parts "/", "gs", "b", "x"
            full = f"/{SCHEME}/{full[len(PREFIX) :]}"
        return super(gpath._GPath, cls).__new__(cls, full)  # noqa: SLF001  (skips gs:// parsing)

    @property
    def _uri_scheme(self):
        return SCHEME if self.parts[:2] == ("/", SCHEME) else None

    @property
    def _backend(self):
        return _BACKEND


epath.register_path_cls(PREFIX)(RamPath)


def new_root() -> str:
    """A fresh `ram://<unique>` folder (the in-memory file system lives as long as the process)."""
    return f"{PREFIX}test-{uuid.uuid4().hex[:12]}"


def walk(root: str):
    """Every file under `root`, as paths relative to it."""
    import tensorflow as tf  # noqa: PLC0415

    out = []
    for folder, _, names in tf.io.gfile.walk(root):
        rel = folder[len(root) :].strip("/")
        out += [f"{rel}/{n}" if rel else n for n in names]
    return sorted(out)


def orbax_on_disk(local_root: str):
    """A stand-in for `vit_jax.train.checkpoint.orbax_directory` that gives Orbax, for a ram:// path,
    the same path under `local_root` on disk (absolute local paths stay as they are)."""

    def orbax_directory(path: str) -> str:
        if path.startswith(PREFIX):
            return os.path.join(local_root, path[len(PREFIX) :])
        return os.path.abspath(path)

    return orbax_directory
