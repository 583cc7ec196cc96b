"""Single frames of moving digits as an image folder: the image pretraining data of the inflation
study (docs/video.md, "Inflation").

  python scripts/moving_digit_frames.py /tmp/md_frames [--train=4000 --test=500]

Writes OUT/{train,test}/<digit>/<i>.png: 16×16 grayscale frames of two digits of one class at
random positions on the torus canvas, made by `moving_digits.make_clips` with one frame (so they
look like any single frame of a `moving_digits` clip), train frames from the digits "train" split
and test frames from "test", with other seeds (10, 11) than the clips (0, 1). Labels: the digit.
Train an image ViT on it with `--config.dataset=folder:OUT` (configs/video_digits_image.py).
"""

import argparse
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from vit_jax.data.digits import split_ids
from vit_jax.data.moving_digits import make_clips

SEEDS = {"train": 10, "test": 11}


def write_frames(out: str, sizes: dict) -> dict:
    """Writes the frames; returns {split: number written}."""
    digits = load_digits()
    labels = digits.target.astype(np.int32)
    ids = split_ids(labels)
    written = {}
    for split, n in sizes.items():
        frames, classes, _ = make_clips(
            digits.images[ids[split]], labels[ids[split]], n, SEEDS[split], frames=1
        )
        for i, (frame, label) in enumerate(zip(frames[:, 0], classes)):
            folder = os.path.join(out, split, str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(frame).save(os.path.join(folder, f"{i:05d}.png"))
        written[split] = len(frames)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args()
    if os.path.exists(os.path.join(args.out, "train")):
        raise SystemExit(f"error: {args.out}/train exists; pass another folder or remove it")
    written = write_frames(args.out, {"train": args.train, "test": args.test})
    print(" ".join(f"{k}={v}" for k, v in written.items()), "frames in", args.out)


if __name__ == "__main__":
    main()
