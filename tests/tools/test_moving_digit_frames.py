"""scripts/moving_digit_frames.py: one-frame moving digits as a `folder:` image tree."""

import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tests.helpers.paths import ROOT
from vit_jax.data.digits import split_ids
from vit_jax.data.moving_digits import make_clips
from vit_jax.data.sources import open_source


def test_frames_are_one_frame_clips_labelled_by_digit(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import moving_digit_frames

    written = moving_digit_frames.write_frames(str(tmp_path), {"train": 40, "test": 12})
    assert written == {"train": 40, "test": 12}
    digits = load_digits()
    labels = digits.target.astype(np.int32)
    ids = split_ids(labels)
    for split, n in written.items():
        seed = moving_digit_frames.SEEDS[split]
        frames, classes, _ = make_clips(digits.images[ids[split]], labels[ids[split]], n, seed, 1)
        for i in (0, n - 1):
            png = np.asarray(Image.open(tmp_path / split / str(classes[i]) / f"{i:05d}.png"))
            np.testing.assert_array_equal(png, frames[i, 0])
            assert png.shape == (16, 16) and png.max() > 100  # two digits on a dark canvas
        source = open_source(f"folder:{tmp_path}", split)
        counts = np.bincount(classes, minlength=10)
        names = [int(c) for c in source.info.class_names]  # only the classes present
        np.testing.assert_array_equal(source.label_counts(), counts[names])
