"""Offline clips: moving digits built deterministically from scikit-learn's bundled 8×8 digits.

`moving_digits:TASK` (TASK `digits` or `direction`): clips uint8 `[T, S, S, 3]` (T = 8 frames,
S = 16 px canvas) of two digits of one class, each moving `SPEED` px per frame in one shared
direction (up, down, left, right) and wrapping around the canvas edges (a torus, so no frame on its
own tells the direction: every frame's digit positions are uniform whatever the direction; with
bouncing, positions near an edge would leak it). Overlaps take the brighter pixel.

  digits     label = the digits' class (10 classes): solvable from any one frame
  direction  label = the direction of motion (4 classes: up, down, left, right): needs two frames

Train clips take their digit images from the digits "train" split, test clips from "test", so no
digit image is shared. Sizes: 2,000 train and 500 test clips; fixed seeds (0: train, 1: test).
"""

import numpy as np

from vit_jax.data import splits
from vit_jax.data.core import DataError, SourceOptions
from vit_jax.data.digits import split_ids
from vit_jax.data.indexed import MemorySource

FRAMES, CANVAS, SPEED = 8, 16, 2
SIZES = {"train": 2000, "test": 500}
DIRECTIONS = ("up", "down", "left", "right")
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (dy, dx) per direction
TASKS = ("digits", "direction")


def make_clips(digit_images, digit_labels, n: int, seed: int, frames=FRAMES, canvas=CANVAS):
    """(clips uint8 [n, T, S, S], digit classes [n], directions [n]) from 8×8 images 0..16."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(digit_labels == c) for c in range(10)]
    classes = rng.integers(0, 10, n)
    directions = rng.integers(0, 4, n)
    clips = np.zeros((n, frames, canvas, canvas), np.uint8)
    for i in range(n):
        dy, dx = _STEPS[directions[i]]
        for _ in range(2):
            img = np.round(digit_images[rng.choice(by_class[classes[i]])] * (255 / 16))
            big = np.zeros((canvas, canvas), np.uint8)
            big[:8, :8] = img.astype(np.uint8)
            y0, x0 = rng.integers(0, canvas, 2)
            for f in range(frames):
                moved = np.roll(big, (y0 + dy * SPEED * f, x0 + dx * SPEED * f), axis=(0, 1))
                clips[i, f] = np.maximum(clips[i, f], moved)
    return clips, classes.astype(np.int32), directions.astype(np.int32)


def open_moving_digits(arg: str, split: str, options: SourceOptions) -> MemorySource:
    """Opens a split of `moving_digits:TASK` (`options` unused)."""
    del options
    if arg not in TASKS:
        raise DataError(
            f"unknown moving_digits task {arg!r}; use moving_digits:digits or "
            "moving_digits:direction"
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int32)
    clips, task_labels, ids_by_split, offset = [], [], {}, 0
    for seed, (name, ids) in enumerate(sorted(split_ids(labels).items(), reverse=True)):
        made, classes, dirs = make_clips(digits.images[ids], labels[ids], SIZES[name], seed)
        y = classes if arg == "digits" else dirs
        clips.append(made)
        task_labels.append(y)
        ids_by_split[name] = offset + splits.stratified_order(y)
        offset += len(y)
    chosen = splits.select(split, ids_by_split, "moving_digits")
    clips, task_labels = np.concatenate(clips)[chosen], np.concatenate(task_labels)[chosen]
    names = [str(d) for d in range(10)] if arg == "digits" else list(DIRECTIONS)
    rgb = np.repeat(clips[..., None], 3, axis=-1)
    source = MemorySource(f"moving_digits:{arg}", split, names, rgb, task_labels)
    source.num_frames = FRAMES  # the pipeline's clip length (eval padding batches)
    return source
