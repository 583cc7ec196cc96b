"""The image twin of configs/video_digits.py: the same encoder as a ViT on single 16×16 frames.

  python scripts/moving_digit_frames.py /tmp/md_frames
  python -m vit_jax.main --config=configs/video_digits_image.py --workdir=/tmp/md_image \
      --config.dataset=folder:/tmp/md_frames
  python -m vit_jax.predict --workdir=/tmp/md_image --export_npz=/tmp/md_image/model.npz

The exported `.npz` initialises the video model (`--config.init_from.path=...npz` with
`init_from.inflate=repeat|central_frame`): patch 4, width 32, depth 2 and `pool="gap"` as in
configs/video_digits.py, and the default learned table (`posemb="learn"`: kept as the spatial table
of `learn_sep`). The label is the frame's digit (10 classes). See docs/video.md, "Inflation".
"""

from vit_jax.config import base_config


def get_config():
    c = base_config()
    c.dataset = "folder:/tmp/md_frames"  # scripts/moving_digit_frames.py
    c.image_size = 16
    c.aug.crop_area_min = 1.0  # as the video config: frames are not cropped
    c.aug.flip = False
    c.model.variant = None
    c.model.update(dict(patch_size=4, hidden_size=32, depth=2, mlp_dim=64, num_heads=2))
    c.model.pool = "gap"
    c.batch_size = 64
    c.total_steps = 2000  # ~1.5 min on 2 CPU cores; 66% digit top-1 on the 500 test frames
    c.lr = 2e-3
    c.weight_decay = 0.05
    c.checkpoint_every = 2000
    return c
