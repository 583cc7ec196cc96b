"""Clip folders: a `folder:PATH` tree PATH/<split>/<class>/<example> whose examples are clips.

An example is a folder of frames or a `.npy` array, as `clips.read_clip` reads them (`folder.py`
tells a clip tree from an image tree by its examples; one dataset holds one kind). Records are read
with TF ops, no Python inside the pipeline:

  folder of frames   "image" = the frames' encoded bytes, string `[T]` (sorted by name); only the
                     sampled window is decoded (`video.py`)
  .npy               the header is parsed when the split opens (shape, dtype, byte order, offset;
                     a bad or truncated file is a DataError naming it); "image" = uint8
                     `[T, H, W, 3]` from `decode_raw`, gray copied to 3 channels, other dtypes than
                     uint8 min-max scaled to 0..255 per clip in float64, exactly as `read_clip`

A dataset holds either kind, not both. Temporal windows: `config.clip_frames` / `clip_stride` /
`eval_clips` (`options.DataConfig`).
"""

import functools
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import clips
from vit_jax.data._tf import tf
from vit_jax.data.core import DataError, SourceOptions, first_line
from vit_jax.data.indexed import IndexedSource, eager_constant
from vit_jax.data.preprocess import decode

# numpy dtypes `tf.io.decode_raw` reads
_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64")
_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def npy_header(path: str) -> Tuple[Tuple[int, int, int, int], np.dtype, bool, int]:
    """(shape as [T, H, W, C], dtype, fortran order, data offset) of a `.npy` clip or volume."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADERS:
                raise ValueError(f".npy format version {version} (save it with numpy's np.save)")
            shape, fortran, dtype = _HEADERS[version](f)
            offset = f.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {first_line(e)}") from None
    if len(shape) == 3:  # a volume [D, H, W]
        shape = (*shape, 1)
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise DataError(
            f"{path} has shape {shape}; a clip is [T, H, W, C] with C 1 or 3, a volume [D, H, W]"
        )
    if dtype.name not in _DTYPES:
        raise DataError(f"{path} holds {dtype}; save the clip as one of {', '.join(_DTYPES)}")
    if min(shape) == 0:
        raise DataError(f"{path} has shape {shape}: an empty clip")
    if size < offset + int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated: {size} bytes for shape {shape} of {dtype}")
    return tuple(int(s) for s in shape), dtype, bool(fortran), offset


def list_frames(path: str) -> List[str]:
    """The frame image files of a clip folder, sorted by name (DataError if none)."""
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(clips.FRAME_EXTS))
    if not names:
        raise DataError(f"clip folder {path} holds no frame images ({', '.join(clips.FRAME_EXTS)})")
    return [os.path.join(path, n) for n in names]


class ClipSource(IndexedSource):
    """A split of clip files: `.npy` arrays or folders of frames (one kind)."""

    clips = True  # records are clips (the pipeline samples windows)
    num_frames = None  # their length varies: config.clip_frames decides

    def __init__(self, dataset, split, class_names, paths: np.ndarray, labels, skipped=()):
        super().__init__(dataset, split, class_names, labels)
        self.paths = np.asarray(paths, dtype=str)
        self.skipped = tuple(skipped)
        is_npy = [p.endswith(".npy") for p in self.paths]
        if any(is_npy) and not all(is_npy):
            npy, folder = self.paths[is_npy.index(True)], self.paths[is_npy.index(False)]
            raise DataError(
                f"{dataset} mixes .npy clips ({npy}) and folders of frames ({folder}); "
                "convert them to one kind"
            )
        self.npy = bool(is_npy) and is_npy[0]
        self._read = self._read_npy if self.npy else self._read_frames
        if self.npy:
            headers = [npy_header(str(p)) for p in self.paths]
            self.shapes = np.array([h[0] for h in headers], np.int32).reshape(-1, 4)
            self.fortran = np.array([h[2] for h in headers], bool)
            self.offsets = np.array([h[3] for h in headers], np.int64)
            self.nbytes = np.array([np.prod(h[0]) * h[1].itemsize for h in headers], np.int64)
            kinds = [(h[1].name, h[1].byteorder != ">") for h in headers]
            self.kinds = sorted(set(kinds))  # (dtype, little endian) of the decode branches
            self.kind_ids = np.array([self.kinds.index(k) for k in kinds], np.int32)
        else:
            frames = [list_frames(str(p)) for p in self.paths]
            self.counts = np.array([len(f) for f in frames], np.int32)
            self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int32)
            self.frame_paths = np.array([p for f in frames for p in f], dtype=str)

    @functools.cached_property
    def tensors(self) -> dict:
        names = ("shapes", "fortran", "offsets", "nbytes", "kind_ids")
        names = names if self.npy else ("counts", "starts", "frame_paths")
        return {
            "paths": eager_constant(self.paths),
            **{n: eager_constant(getattr(self, n)) for n in names},
        }

    def read(self, example_id):
        return {"image": self._read(example_id), "label": tf.gather(self.label_tensor, example_id)}

    def _read_frames(self, i):
        t = self.tensors
        start = tf.gather(t["starts"], i)
        paths = tf.gather(t["frame_paths"], tf.range(start, start + tf.gather(t["counts"], i)))
        return tf.map_fn(tf.io.read_file, paths, fn_output_signature=tf.string)

    def _read_npy(self, i):
        t = self.tensors
        data = tf.io.read_file(tf.gather(t["paths"], i))
        raw = tf.strings.substr(data, tf.gather(t["offsets"], i), tf.gather(t["nbytes"], i))
        branches = [functools.partial(_decode, raw, *kind) for kind in self.kinds]
        flat = tf.switch_case(tf.gather(t["kind_ids"], i), branches)
        if any(dtype != "uint8" for dtype, _ in self.kinds):
            kind = tf.gather(
                tf.constant([d != "uint8" for d, _ in self.kinds]), tf.gather(t["kind_ids"], i)
            )
            flat = tf.cond(kind, lambda: _scale(flat), lambda: flat)
        shape = tf.gather(t["shapes"], i)
        clip = tf.cond(
            tf.gather(t["fortran"], i),
            lambda: tf.transpose(tf.reshape(flat, tf.reverse(shape, [0])), [3, 2, 1, 0]),
            lambda: tf.reshape(flat, shape),
        )
        clip = tf.broadcast_to(clip, tf.concat([shape[:3], [3]], 0))
        return tf.ensure_shape(tf.cast(clip, tf.uint8), [None, None, None, 3])

    def find_corrupt(self, ids: Sequence[int]) -> Optional[Tuple[str, str]]:
        for example_id in ids:
            reason = _problem(str(self.paths[example_id]))
            if reason:
                return str(self.paths[example_id]), reason
        return None


def _decode(raw, dtype: str, little_endian: bool):
    """float64 values of raw bytes of `dtype`."""
    values = tf.io.decode_raw(raw, tf.as_dtype(dtype), little_endian=little_endian)
    return tf.cast(values, tf.float64)


def _scale(x):
    """`read_clip`'s min-max to 0..255 (rounded half to even, as np.round)."""
    lo, hi = tf.reduce_min(x), tf.reduce_max(x)
    return tf.round((x - lo) / tf.maximum(hi - lo, 1e-12) * 255)


def _problem(path: str) -> Optional[str]:
    """Why `clips.read_clip` cannot read a clip (naming the frame that does not decode), or None."""
    try:
        clips.read_clip(path)
    except DataError as e:
        return str(e)
    except tf.errors.OpError as e:
        for frame in list_frames(path):
            try:
                decode(tf.io.read_file(frame))
            except tf.errors.OpError as frame_error:
                return f"frame {os.path.basename(frame)}: {first_line(frame_error)}"
        return first_line(e)
    return None


def open_clips(dataset, split, class_names, paths, labels, options: SourceOptions) -> ClipSource:
    """The clip source of a split's listed clips; `skip_corrupt` leaves out unreadable ones."""
    skipped: List[str] = []
    if options.skip_corrupt:
        ok = np.array([_problem(p) is None for p in paths], bool)
        skipped = list(np.asarray(paths)[~ok])
        paths, labels = np.asarray(paths)[ok], np.asarray(labels)[ok]
        if skipped:
            logging.warning(
                "%s: skipped %d unreadable clips, e.g. %s", dataset, len(skipped), skipped[0]
            )
    return ClipSource(dataset, split, class_names, paths, labels, skipped)
