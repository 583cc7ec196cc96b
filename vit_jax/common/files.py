"""The one path library for a run's files: local paths and URLs (`gs://bucket/run`) alike.

Everything the package writes or reads in a workdir (config.json, metrics.jsonl, curves.png,
eval-only and ablation results, tables, plots, exports) goes through these functions. Paths are
strings. A local path is the local file system; a URL (`gs://`, `s3://`, or any scheme registered
with `etils.epath.register_path_cls`) goes through `etils.epath` (which comes with Orbax), which
reaches gs:// through `tf.io.gfile` when TensorFlow is installed, else through fsspec (gcsfs).
Checkpoints (Orbax) and TensorBoard events have their own writers: see `train/checkpoint.py` and
`train/metrics_log.py`.

Atomic writes: a reader, or a process killed mid-write, never sees half a file. Locally the
content goes to `PATH.tmp`, then is renamed over PATH. A URL's content is gathered in memory and
written in one call: an object store (gs://, s3://) publishes an object only once its upload is
complete, and its "rename" is a copy and a delete, so a temporary object would add a window, not
close one. An append to a URL reads the object and writes it back whole (object stores have no
append).
"""

import contextlib
import io
import os
import posixpath
import re
from typing import List

from etils import epath

from vit_jax.common.errors import Error

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """True for `scheme://...` (gs://, s3://, ...), False for a local path."""
    return bool(_URL.match(str(path)))


def scheme(path: str) -> str:
    """ "gs" of "gs://bucket/x"; "" for a local path."""
    return str(path).split("://", 1)[0] if is_url(path) else ""


def _path(path: str) -> epath.Path:
    return epath.Path(path)


def join(path: str, *parts: str) -> str:
    """`os.path.join`, with "/" for URLs whatever the local system."""
    return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def dirname(path: str) -> str:
    """The parent of `path`; a URL's parent stops at its root (`gs://bucket`)."""
    if not is_url(path):
        return os.path.dirname(path)
    prefix, rest = str(path).split("://", 1)
    parent = posixpath.dirname(rest.rstrip("/"))
    return f"{prefix}://{parent}" if parent else f"{prefix}://{rest}"


def absolute(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _path(path).exists()


def isdir(path: str) -> bool:
    return _path(path).is_dir()


def isfile(path: str) -> bool:
    return exists(path) and not isdir(path)


def makedirs(path: str) -> None:
    """Creates `path` and its parents; nothing if it exists."""
    _path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str) -> List[str]:
    """The names in folder `path`, sorted."""
    return sorted(p.name for p in _path(path).iterdir())


def remove(path: str) -> None:
    _path(path).unlink()


def open(path: str, mode: str = "r"):  # noqa: A001  (the module's `open`, as `files.open`)
    """A file object of `path` ("r", "rb", "w", "wb", "a", "ab"); text is UTF-8."""
    return _path(path).open(mode)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Writes `path` atomically (see the module's docstring); parent folders are created."""
    with atomic_write(path) as f:
        f.write(text)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `path` atomically (see the module's docstring); parent folders are created."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def append_text(path: str, text: str) -> None:
    """Appends `text` to `path` (created, with its parent folders, if missing). A URL is read and
    written back whole: object stores have no append."""
    if is_url(path):
        write_text(path, (read_text(path) if exists(path) else "") + text)
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        makedirs(parent)
    with open(path, "a") as f:
        f.write(text)


def write_figure(fig, path: str, **savefig_kwargs) -> None:
    """`fig.savefig` (matplotlib) into `path`, atomically; the format follows the extension."""
    buf = io.BytesIO()
    fmt = os.path.splitext(str(path))[1].lstrip(".").lower() or "png"
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    write_bytes(path, buf.getvalue())


def copy_tree(src: str, dst: str) -> List[str]:
    """Copies every file under local folder `src` to the same relative path under `dst` (local or a
    URL); returns the destination paths."""
    out = []
    for folder, _, names in os.walk(src):
        rel = os.path.relpath(folder, src)
        for name in sorted(names):
            target = join(dst, *([] if rel == "." else rel.split(os.sep)), name)
            with open(os.path.join(folder, name), "rb") as f:
                write_bytes(target, f.read())
            out.append(target)
    return out


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """A file object (`mode` "w" or "wb") whose content replaces `path` only when the block ends
    without an error. Locally it is `path.tmp`, renamed over `path`; for a URL it is a buffer in
    memory, written in one call. Parent folders are created."""
    if is_url(path):
        buf = io.BytesIO() if "b" in mode else io.StringIO()
        yield buf
        if not isdir(dirname(path)):
            makedirs(dirname(path))
        with open(path, mode) as f:
            f.write(buf.getvalue())
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with _path(tmp).open(mode) as f:
            yield f
        os.replace(tmp, path)  # fails on a folder in the way: the temporary goes too
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_output_path(path: str, what: str, folder: bool = False) -> None:
    """Raises `Error` (one line, naming `what`, e.g. "--export_npz") unless `path` can be written as a
    file (or, with `folder`, created or reused as a folder): nothing of the wrong kind is in the way
    and no parent is a regular file. For a URL only `path` itself is checked (an object store has no
    folders to be in the way)."""
    if exists(path) and isdir(path) != folder:
        kind = "a folder" if isdir(path) else "a file"
        want = "a folder (it is created if missing)" if folder else "a file path"
        raise Error(f"{what}={path} is {kind}; give {want}")
    if is_url(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise Error(f"{what}={path} lies under {parent}, which is a file, not a folder")
