"""A tiny ViT on the digits for tests of the CLI (fault tolerance, bad input): seconds, not minutes.

  python -m vit_jax.main --config=configs/test_tiny.py --workdir=/tmp/vit_tiny

8×8 digits, patch 4 (4 patches), width 16, depth 2; 16 steps of batch 32 with a checkpoint
every 2 steps and synchronous saves, so a test can kill the run between or during saves.
"""

from vit_jax.config import load_config


def get_config():
    c = load_config("quickstart.py", relative_to=__file__)
    c.image_size = 8
    c.batch_size = 32
    c.eval_batch_size = 120  # 360 test images in 3 batches
    c.aug.crop_area_min = 1.0
    c.model.update(dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2))
    c.total_steps = 16
    c.warmup_steps = 2
    c.lr = 1e-2
    c.weight_decay = 1e-4  # the base default (quickstart's 0.05 is not needed for 16 steps)
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = 2
    c.keep_checkpoints = 2
    c.progress_bar = False
    return c
