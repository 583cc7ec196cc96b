"""Clips and volumes from files: a folder of frames or a `.npy` array; temporal sampling.

folder of frames   image files (png, jpg, ...) sorted by name, one frame each
.npy               `[T, H, W, C]` (C = 1 or 3) frames, or a `[D, H, W]` volume (its D slices are
                   the frames, gray copied to 3 channels); uint8 as is, other dtypes min-max
                   scaled to 0..255 per clip
sampling           `num_frames` frames `stride` apart: the centre window (evaluation), a random
                   one (training), or every window start of `windows` evenly spaced ones
                   (multi-clip evaluation: average the logits over them, as ViViT reports)
"""

import os
from typing import List

import numpy as np

from vit_jax.common import files
from vit_jax.data.core import DataError

FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_clip(path: str) -> np.ndarray:
    """uint8 `[T, H, W, 3]` from a folder of frames or a `.npy` file (DataError if neither)."""
    path = str(path)  # not np.str_: os.listdir would list bytes
    if files.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTS))
        if not names:
            raise DataError(f"{path} holds no frame images ({', '.join(FRAME_EXTS)})")
        from vit_jax.data import preprocess  # noqa: PLC0415
        from vit_jax.data._tf import tf  # noqa: PLC0415

        frames = [
            preprocess.decode(tf.constant(files.read_bytes(os.path.join(path, n)))).numpy()
            for n in names
        ]
        if len({f.shape for f in frames}) != 1:
            raise DataError(f"the frames in {path} differ in size; resize them to one size")
        return np.stack(frames)
    if not path.endswith(".npy"):
        raise DataError(f"{path} is not a clip: give a folder of frames or a .npy array")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if array.ndim == 3:  # a volume [D, H, W]
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataError(
            f"{path} has shape {array.shape}; a clip is [T, H, W, C] with C 1 or 3, a volume "
            "[D, H, W]"
        )
    if array.dtype != np.uint8:  # in float64 (as the clip-folder pipeline reads it)
        array = array.astype(np.float64)
        lo, hi = float(np.min(array)), float(np.max(array))
        array = np.round((array - lo) / max(hi - lo, 1e-12) * 255)
    return np.broadcast_to(array, (*array.shape[:3], 3)).astype(np.uint8)


def window_starts(length: int, num_frames: int, stride: int = 1, windows: int = 1) -> List[int]:
    """Starts of `windows` evenly spaced windows of `num_frames` frames `stride` apart (one: the
    centre window). A clip shorter than a window repeats its last frame (see `sample`)."""
    span = (num_frames - 1) * stride + 1
    room = max(length - span, 0)
    if windows == 1:
        return [room // 2]
    return [int(round(room * i / (windows - 1))) for i in range(windows)]


def sample(clip: np.ndarray, num_frames: int, stride: int = 1, start: int = 0) -> np.ndarray:
    """Frames start, start + stride, ... (num_frames of them; indices past the end clamp)."""
    idx = np.minimum(start + stride * np.arange(num_frames), len(clip) - 1)
    return clip[idx]


def random_start(length: int, num_frames: int, stride: int, rng: np.random.Generator) -> int:
    """A training window's start, uniform over the windows that fit."""
    return int(rng.integers(0, max(length - (num_frames - 1) * stride, 1)))
