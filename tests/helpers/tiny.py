"""A tiny config and synthetic batches shared by the trainer tests."""

import numpy as np

from vit_jax.config import base_config


def tiny_config(**overrides):
    c = base_config()
    c.image_size = 8
    c.batch_size = 16
    c.eval_batch_size = 16
    c.model.variant = "Ti/4"
    c.model.update(dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2))
    c.total_steps = 4
    c.warmup_steps = 1
    c.lr = 1e-2
    c.progress_bar = False
    c.aug.flip = False
    c.aug.crop_area_min = 1.0
    for k, v in overrides.items():
        target = c
        *path, last = k.split(".")
        for p in path:
            target = target[p]
        target[last] = v
    return c


def batch(n=16, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = rng.standard_normal((n, size, size, 3)).astype(np.float32)
    images[..., 0] += labels[:, None, None]  # learnable signal
    return dict(image=images, label=labels, soft_label=np.eye(classes, dtype=np.float32)[labels])
