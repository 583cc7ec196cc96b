"""The Vision Transformer: size strings, the Flax modules and every scheme registered by name.

Imports only `vit_jax.common` and `vit_jax.kernels` (tests/test_layering.py checks it).

  families.py   FAMILIES registry (`config.model_name`): `create_model`, `from_config` of any family
  variants.py   the `vit` family: size strings ("B/16"), option checks
  resnet.py     the `resnet` family: BiT ResNets (both of big_vision's layouts), CIFAR ResNets
  tokenizers.py TOKENIZERS registry of the ViT: patch, conv (CCT), spt (shifted patches)
  hybrid.py     the `hybrid` family: the ViT paper's ResNet stem + ViT encoder ("R50+B/16")
  vivit.py      the `vivit` family: clips/volumes [B, T, H, W, C], tubelets, ViViT's encoders
  posemb3d.py   POSEMB3D registry (vivit): none, learn, learn_sep, sincos3d, rope3d, rope_mixed3d
  vit.py        VisionTransformer → Encoder → Encoder1DBlock; `get_features`
  attention.py  multi-head self-attention (naive / XLA / cuDNN / manual kernel)
  layers.py     MlpBlock, DropPath, LayerScale
  posemb.py     POSEMB registry: none, learn, sincos1d, sincos2d, learn2d, rope2d, rope_mixed;
                pure table functions and the one position-table resize
  norms.py      NORMS registry: layernorm, rmsnorm, batchnorm
  pooling.py    POOLS registry: token, gap, map, none
  heads.py      HEADS registry: classification, regression
"""

from vit_jax.models import (  # noqa: F401  (register families, schemes)
    hybrid,
    posemb3d,
    relative,
    resnet,
    vivit,
)
from vit_jax.models.families import (
    FAMILIES,
    Family,
    config_options,
    create_model,
    from_config,
    resolve_options,
    stride,
)
from vit_jax.models.variants import (
    MODEL_OPTIONS,
    OPTION_DEFAULTS,
    SIZE_KEYS,
    SIZES,
    decode_variant,
    validate_options,
)
from vit_jax.models.vit import VisionTransformer, get_features

__all__ = [
    "FAMILIES", "Family", "stride", "MODEL_OPTIONS", "OPTION_DEFAULTS", "SIZES", "SIZE_KEYS",
    "VisionTransformer", "create_model",
    "config_options", "decode_variant", "from_config", "get_features", "resolve_options",
    "validate_options",
]  # fmt: skip
