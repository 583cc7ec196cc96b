"""The `hybrid` family: the ViT paper's ResNet stem + ViT encoder (Dosovitskiy et al. 2021, §3.1).

A BiT ResNet root (7×7 weight-standardised conv, stride 2, GroupNorm, ReLU, 3×3 max-pool, stride 2:
÷4) and `len(resnet_layers)` stages of post-activation bottleneck units (the first stride 1, the
others stride 2) give a feature map that the ViT's patch embedding tokenises (`patch_size` on the
feature map, usually 1). Everything after the patch embedding is the ViT: every position scheme,
pooling, norm and head works on the hybrid's token grid. Parameter names equal Google's released
`R50+ViT-B_16.npz`: `conv_root`, `gn_root`, `block{i}/unit{j}/{conv,gn}{1,2,3,_proj}` beside
`embedding`, `Transformer/...`, `head`.

Size strings `R{depth}+{ViT size}/{patch}` are Google's released configs
(vision_transformer/vit_jax/configs/models.py), with the token grid each one gives:

  R50+B/16   stages (3, 4, 9), patch 1: ÷4 · 1 · 2 · 2 = ÷16 (14×14 tokens at 224 px)
  R50+L/32   stages (3, 4, 6, 3), patch 1: ÷32 (7×7 at 224)
  R26+B/32, R26+S/32   stages (2, 2, 2, 2), patch 1: ÷32
  R+Ti/16    no stages, patch 8: ÷4 · 8 = ÷32 (7×7 at 224). Google's config comment says the stem
             "alone downscales 2x, making /16", but its code (and timm's `vit_tiny_r_s16_p8`)
             downscale 4x: the name's 16 is not the grid (tests/models/test_hybrid.py).
"""

import math
from typing import Any, Dict, Tuple

import flax.linen as nn

from vit_jax.models import variants
from vit_jax.models.families import FAMILIES, Family
from vit_jax.models.resnet import ResNetStage, StdConv
from vit_jax.models.vit import VisionTransformer

# name: (resnet_layers, ViT size, patch on the feature map)
HYBRIDS: Dict[str, Tuple[Tuple[int, ...], str, int]] = {
    "R+Ti/16": ((), "Ti", 8),
    "R26+S/32": ((2, 2, 2, 2), "S", 1),
    "R26+B/32": ((2, 2, 2, 2), "B", 1),
    "R50+B/16": ((3, 4, 9), "B", 1),
    "R50+L/32": ((3, 4, 6, 3), "L", 1),
}
HYBRID_KEYS = ("resnet_layers", "resnet_width")


class HybridViT(VisionTransformer):
    """ViT whose patch embedding reads a ResNet stem's feature map (see the module docstring).

    resnet_layers: bottleneck units per stage (() = the root block only).
    resnet_width: width multiplier of the stem: 64·w root channels, stage i outputs 256·w·2^i.
    """

    resnet_layers: Tuple[int, ...] = (3, 4, 9)
    resnet_width: int = 1

    @property
    def stem_stride(self) -> int:
        return stem_stride(self.resnet_layers)

    def _stem(self, x):
        kw = dict(dtype=self.compute_dtype, param_dtype=self.params_dtype)
        width = 64 * self.resnet_width
        x = StdConv(width, (7, 7), (2, 2), use_bias=False, name="conv_root", **kw)(x)
        x = nn.GroupNorm(name="gn_root", **kw)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for i, units in enumerate(self.resnet_layers):
            stride = (1, 1) if i == 0 else (2, 2)
            x = ResNetStage(units, width * 2**i, stride, name=f"block{i + 1}", **kw)(x)
        return x


def decode_variant(variant: str) -> Dict[str, Any]:
    """ "R50+B/16" → the ViT-B sizes, resnet_layers=(3, 4, 9), patch_size=(1, 1)."""
    if variant not in HYBRIDS:
        raise ValueError(
            f"unknown hybrid variant {variant!r}; choose one of {', '.join(HYBRIDS)}, or set "
            "model.variant=None with resnet_layers, resnet_width and the ViT sizes"
        )
    layers, size, patch = HYBRIDS[variant]
    opts = variants.decode_variant(f"{size}/{patch}")
    return dict(opts, resnet_layers=layers, resnet_width=1)


def validate(opts: Dict[str, Any]) -> None:
    """The stem's options, then the ViT's (`variants.validate_options`)."""
    layers, width = opts.get("resnet_layers", (3, 4, 9)), opts.get("resnet_width", 1)
    if not isinstance(layers, (tuple, list)) or not all(
        isinstance(n, int) and n >= 1 for n in layers
    ):
        raise ValueError(
            f"resnet_layers={layers!r} must be a tuple of unit counts >= 1, e.g. (3, 4, 9), "
            "or () for the root block only"
        )
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"resnet_width={width!r} must be an int >= 1")
    variants.validate_options({k: v for k, v in opts.items() if k not in HYBRID_KEYS})


def stem_stride(resnet_layers) -> int:
    """Root conv /2, max-pool /2, then /2 for every stage but the first."""
    return 4 * 2 ** max(len(resnet_layers) - 1, 0)


def _stride(opts: Dict[str, Any]) -> int:
    return stem_stride(opts["resnet_layers"]) * math.lcm(*opts["patch_size"])


FAMILIES.register("hybrid")(
    Family(
        module=HybridViT,
        decode_variant=decode_variant,
        validate=validate,
        size_keys=(*variants.SIZE_KEYS, *HYBRID_KEYS),
        default_variant="R50+B/16",
        stride=_stride,
    )
)
