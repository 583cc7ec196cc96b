"""Image folders ("folder:PATH"): PATH/<split>/<class>/*.jpg|png|..., or a .tar.gz of such a tree.

A tree whose examples are clips (folders of frames or `.npy` arrays) is a clip dataset
(`clip_folder.py`); a tree holds images or clips, not both.

Class names are the sorted union of the class folders of all splits, so a label means the same
class in every split. Inside a split, files are in `splits.stratified_order` of their sorted
paths, so "train[:90%]" keeps the class balance. Archives are extracted once into a cache
(`$VIT_JAX_CACHE`, default ~/.cache/vit_jax) keyed by the archive's path, size and mtime.
"""

import functools
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import clip_folder, image_limit, splits
from vit_jax.data._tf import tf
from vit_jax.data.core import DataError, SourceOptions, first_line
from vit_jax.data.indexed import IndexedSource, eager_constant
from vit_jax.data.preprocess import decode

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
ARCHIVE_EXTENSIONS = (".tar.gz", ".tgz", ".tar")


class FileSource(IndexedSource):
    """A split of image files; `skipped` lists the corrupt files left out (skip_corrupt)."""

    def __init__(self, dataset, split, class_names, paths: np.ndarray, labels, skipped=()):
        super().__init__(dataset, split, class_names, labels)
        self.paths = paths
        self.skipped = tuple(skipped)

    @functools.cached_property
    def path_tensor(self):
        return eager_constant(self.paths)

    def read(self, example_id):
        return {
            "image": tf.io.read_file(tf.gather(self.path_tensor, example_id)),
            "label": tf.gather(self.label_tensor, example_id),
        }

    def find_corrupt(self, ids: Sequence[int]) -> Optional[Tuple[str, str]]:
        for example_id in ids:
            reason = _decode_problem(self.paths[example_id])
            if reason:
                return str(self.paths[example_id]), reason
        return None


def _decode_problem(path: str) -> Optional[str]:
    data = tf.io.read_file(path)
    try:
        decode(data)
    except tf.errors.OpError as e:
        if image_limit.TRUNCATED in str(e):
            return image_limit.TRUNCATED
        too_large = image_limit.TOO_LARGE in str(e)
        return (image_limit.describe(data) if too_large else None) or first_line(e)
    return None


def open_folder(arg: str, split: str, options: SourceOptions) -> FileSource:
    """Opens a split of an image folder or archive (the "folder:PATH" dataset string)."""
    dataset = f"folder:{arg}"
    names = splits.split_names(split, dataset)
    resolved = _resolve(arg, dataset)
    root = _find_root(resolved, names)
    split_dirs = _subdirs(root)
    # Messages name what the user gave: an archive, not the cache folder it was extracted into.
    where = str(root) if resolved == Path(arg).expanduser() else f"the archive {arg}"
    class_names = sorted({c.name for d in split_dirs.values() for c in _subdirs(d).values()})
    ids_by_split, paths, labels, kinds = {}, [], [], {}
    for name in dict.fromkeys(names):
        if name not in split_dirs:
            found = ", ".join(sorted(split_dirs)) or "nothing"
            if not split_dirs and where != str(root):
                raise DataError(f"{where} holds no folders; it should hold {name}/<class>/<image>")
            raise DataError(f"split folder {name!r} not found in {where} (found: {found})")
        split_paths, split_labels = _list_split(split_dirs[name], class_names, kinds)
        order = len(paths) + splits.stratified_order(split_labels)
        ids_by_split[name] = order
        paths += split_paths
        labels += split_labels
    ids = splits.select(split, ids_by_split, dataset)
    paths, labels = np.array(paths, dtype=object)[ids], np.array(labels, np.int32)[ids]
    if "clip" in kinds:
        return clip_folder.open_clips(dataset, split, class_names, paths, labels, options)
    skipped: List[str] = []
    if options.skip_corrupt:
        ok = _decodable(paths)
        skipped = list(paths[~ok])
        paths, labels = paths[ok], labels[ok]
        if skipped:
            logging.warning(
                "%s: skipped %d corrupt image files, e.g. %s", dataset, len(skipped), skipped[0]
            )
    return FileSource(dataset, split, class_names, paths.astype(str), labels, skipped)


def _resolve(arg: str, dataset: str) -> Path:
    if not arg:
        raise DataError("dataset 'folder:' needs a path, e.g. folder:/data/flowers")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(f"dataset folder not found: {path} (from {dataset!r})")
    if path.is_dir():
        return path
    if path.name.endswith(ARCHIVE_EXTENSIONS):
        return extract_cached(path)
    raise DataError(f"{path} is neither a folder nor a {'/'.join(ARCHIVE_EXTENSIONS)} archive")


def _find_root(path: Path, names: Sequence[str]) -> Path:
    """`path`, or its only subfolder when the tree is wrapped in one (as archives often are)."""
    children = _subdirs(path)
    if len(children) == 1 and not any(n in children for n in names):
        (inner,) = children.values()
        if any(n in _subdirs(inner) for n in names):
            return inner
    return path


def _subdirs(path: Path) -> dict:
    return {
        e.name: Path(e.path)
        for e in os.scandir(path)
        if not e.name.startswith(".") and _is(e, "dir")
    }


def _is(entry: os.DirEntry, kind: str) -> bool:
    """`entry.is_dir()` / `is_file()`, following links; a link that loops or cannot be read is a
    DataError naming it (os.scandir raises a bare ELOOP OSError)."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError as e:
        raise DataError(
            f"cannot read {entry.path} in the image folder ({e.strerror}; a symbolic link that "
            "loops?); remove or fix that link"
        ) from None


def _list_split(
    split_dir: Path, class_names: Sequence[str], kinds: dict
) -> Tuple[List[str], List[int]]:
    """Sorted example paths of one split folder and their labels; `kinds` gathers the first
    example of each kind ("image", "clip") over the splits (one kind per tree)."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # A class missing from this split; it may be in another.
        entries = [e for e in os.scandir(class_dir) if not e.name.startswith(".")]
        found = {"image": sorted(e.path for e in entries if _is_image(e))}
        found["clip"] = sorted(e.path for e in entries if _is_clip(e))
        found = {kind: files for kind, files in found.items() if files}
        if not found:
            exts = "/".join(IMAGE_EXTENSIONS)
            raise DataError(
                f"empty class folder {class_dir}: no {exts} files (nor clips: folders of "
                "frames or .npy files)"
            )
        for kind, files in found.items():
            kinds.setdefault(kind, files[0])
        if len(kinds) > 1:
            raise DataError(
                f"the dataset folder mixes images ({kinds['image']}) and clips ({kinds['clip']}); "
                "a tree holds one kind"
            )
        (files,) = found.values()
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"no class folders with images in {split_dir}")
    return paths, labels


def _is_image(entry: os.DirEntry) -> bool:
    name = entry.name.lower()
    return not name.startswith(".") and name.endswith(IMAGE_EXTENSIONS) and _is(entry, "file")


def _is_clip(entry: os.DirEntry) -> bool:
    """A clip example: a folder (of frames) or a `.npy` file."""
    npy = entry.name.lower().endswith(".npy")
    return not entry.name.startswith(".") and (_is(entry, "dir") or npy and _is(entry, "file"))


def _decodable(paths: np.ndarray) -> np.ndarray:
    """bool [n]: which files decode; one parallel tf.data pass (a full decode of every file)."""
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths.astype(str)))
    ds = ds.map(lambda i, path: (i, tf.shape(decode(tf.io.read_file(path)))), tf.data.AUTOTUNE)
    ds = ds.ignore_errors().map(lambda i, _: i).batch(4096)
    ok = np.zeros(len(paths), bool)
    for ids in ds.as_numpy_iterator():
        ok[ids] = True
    return ok


def cache_dir() -> Path:
    """Where archives are extracted: $VIT_JAX_CACHE or ~/.cache/vit_jax."""
    return Path(os.environ.get("VIT_JAX_CACHE", "~/.cache/vit_jax")).expanduser()


def extract_cached(archive: Path) -> Path:
    """Extracts `archive` once and returns the extracted folder.

    Extraction goes to a temporary folder renamed into place when complete, so an interrupted
    extraction is never mistaken for a finished one, and concurrent processes don't collide.
    """
    stat = archive.stat()
    key = f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    stem = archive.name.split(".")[0]
    target = cache_dir() / "extracted" / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        os.rename(tmp, target)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():  # Another process finished first.
            return target
        raise DataError(f"cannot extract {archive}: {first_line(e)}") from None
    return target
