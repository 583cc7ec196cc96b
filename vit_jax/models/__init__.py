"""The Vision Transformer: size strings, the Flax modules and every scheme registered by name.

Imports only `vit_jax.common` and `vit_jax.kernels` (tests/test_layering.py checks it).

  variants.py   size strings ("B/16"), `create_model`, `from_config`, option checks
  vit.py        VisionTransformer → Encoder → Encoder1DBlock; `get_features`
  attention.py  multi-head self-attention (naive / XLA / cuDNN / manual kernel)
  layers.py     MlpBlock, DropPath, LayerScale
  posemb.py     POSEMB registry: none, learn, sincos1d, sincos2d, learn2d, rope2d, rope_mixed;
                pure table functions and the one position-table resize
  norms.py      NORMS registry: layernorm, rmsnorm, batchnorm
  pooling.py    POOLS registry: token, gap, map, none
  heads.py      HEADS registry: classification, regression
"""

from vit_jax.models import relative  # noqa: F401  (registers the rel and relbias2d schemes)
from vit_jax.models.variants import (
    MODEL_OPTIONS,
    OPTION_DEFAULTS,
    SIZE_KEYS,
    SIZES,
    config_options,
    create_model,
    decode_variant,
    from_config,
    resolve_options,
    validate_options,
)
from vit_jax.models.vit import VisionTransformer, get_features

__all__ = [
    "MODEL_OPTIONS", "OPTION_DEFAULTS", "SIZES", "SIZE_KEYS", "VisionTransformer", "create_model",
    "config_options", "decode_variant", "from_config", "get_features", "resolve_options",
    "validate_options",
]  # fmt: skip
