"""The CNN beside configs/cifar10.py and configs/cifar10_cct.py: the same CIFAR-10 recipe (data,
augmentation, AdamW, schedule) training a CIFAR ResNet-20 (He et al. 2016: 3×3 stem, 3 stages of
3 basic blocks, 16/32/64 channels, BatchNorm; 0.27 M parameters) instead of the ViT.

  python -m vit_jax.main --config=configs/cifar10_resnet.py --workdir=/tmp/c10resnet \
      --config.dataset=folder:/path/to/cifar10-jpg.tar.gz --config.progress_bar=False

Measured result and wall time: docs/results.md ("CIFAR-10 in 20 minutes, revisited").
"""

from vit_jax.config import load_config, with_model


def get_config():
    c = with_model(load_config("cifar10.py", relative_to=__file__), "resnet")
    c.model.variant = "R20"
    return c
