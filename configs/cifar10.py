"""CIFAR-10 from scratch at 32×32 with a small ViT (patch 4 → 64 tokens + CLS).

  python -m vit_jax.main --config=configs/cifar10.py --workdir=/tmp/cifar10 \
      --config.dataset=folder:/path/to/cifar10-jpg.tar.gz      # or tfds:cifar10

Argument: `configs/cifar10.py:MINUTES_BUDGET`-style presets are not used; scale `total_steps`.
Expected on CIFAR-10 (JPEG) with 2 CPU cores: see docs/results.md (about 20 minutes of training).
On one GPU, raise total_steps to ~20k (200 epochs at batch 512) for ~90%.
"""

from vit_jax.config_defaults import base_config


def get_config():
    c = base_config()
    c.dataset = "folder:cifar10-jpg.tar.gz"
    c.image_size = 32
    c.batch_size = 256
    c.eval_batch_size = 500
    c.aug.crop_area_min = 0.35
    c.aug.flip = True
    c.model.variant = "S/4"
    c.model.update(dict(hidden_size=192, depth=6, mlp_dim=384, num_heads=3))
    c.model.posemb = "learn"
    c.model.pool = "gap"
    c.model.cls_token = False
    c.optimizer = "adamw"
    c.lr = 2e-3
    c.weight_decay = 0.05
    c.label_smoothing = 0.1
    c.total_steps = 2000
    c.warmup_steps = 150
    c.log_every = 50
    c.eval_every = 500
    c.checkpoint_every = 500
    return c
