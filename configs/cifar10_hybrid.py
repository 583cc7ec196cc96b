"""CIFAR-10 from scratch at 32×32 in 20 CPU-minutes with the ViT paper's hybrid: the BiT ResNet root
(7×7/2 conv, GroupNorm, weight-standardised, 3×3/2 max-pool) and one bottleneck unit (256 channels)
make an 8×8 map, read by 1×1 patches into the encoder of configs/cifar10.py (width 128, depth 6,
MLP 256, 4 heads, GAP) with 2-D sin-cos positions; the recipe of configs/cifar10_cct.py (lr 2e-3,
label smoothing 0.1). The `hybrid` family of docs/data_efficiency.md, which was the closest
transformer to the ResNet there at 2–20% of train.

  python -m vit_jax.main --config=configs/cifar10_hybrid.py --workdir=/tmp/c10hybrid \
      --config.dataset=folder:/path/to/cifar10-jpg.tar.gz --config.progress_bar=False

Measured result and wall time: docs/results.md ("CIFAR-10 in 20 minutes, revisited").
"""

from vit_jax.config import load_config, with_model


def get_config():
    c = with_model(load_config("cifar10.py", relative_to=__file__), "hybrid", keep_shared=True)
    c.model.update(dict(patch_size=1, resnet_layers=(1,), resnet_width=1, posemb="sincos2d"))
    c.lr = 2e-3
    c.label_smoothing = 0.1
    c.total_steps = 1800  # measured: 21 min 24 s on a shared machine, 65.1% (docs/results.md)
    return c
