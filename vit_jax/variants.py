"""Size strings ("B/16") → model hyper-parameters, and `create_model`, the one public constructor.

Sizes follow the ViT paper and "Scaling Vision Transformers" (Zhai et al. 2022).
"""

import dataclasses
from typing import Any, Dict, Tuple

import jax.numpy as jnp

from vit_jax.attention import ATTN_IMPLS
from vit_jax.heads import HEADS
from vit_jax.model import VisionTransformer
from vit_jax.norms import NORMS
from vit_jax.pooling import POOLS
from vit_jax.posemb import POSEMB

# name: (width, depth, mlp_dim, heads)
SIZES: Dict[str, Tuple[int, int, int, int]] = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}

# Options `create_model(**overrides)` and `config.model` accept (everything but the variant's sizes
# may also be overridden: hidden_size, depth, mlp_dim, num_heads, patch_size).
MODEL_OPTIONS = tuple(
    f.name for f in dataclasses.fields(VisionTransformer) if f.name not in ("parent", "name")
)


def decode_variant(variant: str) -> Dict[str, Any]:
    """ "B/16" → dict(hidden_size=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16))."""
    size, _, patch = variant.partition("/")
    if size not in SIZES or not patch.isdigit() or int(patch) < 1:
        raise ValueError(
            f"unknown model variant {variant!r}; use SIZE/PATCH with SIZE in "
            f"{', '.join(SIZES)} and an integer patch, e.g. 'B/16' or 'Ti/4'"
        )
    width, depth, mlp, heads = SIZES[size]
    p = int(patch)
    return dict(hidden_size=width, depth=depth, mlp_dim=mlp, num_heads=heads, patch_size=(p, p))


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")


def validate_options(opts: Dict[str, Any]) -> None:
    """Raises a one-line ValueError for any option that cannot work."""
    unknown = sorted(set(opts) - set(MODEL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown model option(s) {unknown}; valid options: {', '.join(MODEL_OPTIONS)}"
        )
    _check_choice("posemb", opts.get("posemb", "learn"), POSEMB.names())
    _check_choice("pool", opts.get("pool", "token"), POOLS.names())
    _check_choice("norm", opts.get("norm", "layernorm"), NORMS.names())
    _check_choice("head", opts.get("head", "classification"), HEADS.names())
    _check_choice("norm_placement", opts.get("norm_placement", "pre"), ("pre", "post"))
    _check_choice("attn_impl", opts.get("attn_impl", "auto"), ATTN_IMPLS)
    for key in ("dtype", "param_dtype"):
        try:
            jnp.dtype(opts.get(key, "float32"))
        except TypeError:
            raise ValueError(
                f"model.{key}={opts[key]!r} is not a dtype; use float32 or bfloat16"
            ) from None
    width, heads = opts["hidden_size"], opts["num_heads"]
    if width % heads:
        raise ValueError(f"num_heads={heads} does not divide hidden_size={width}")
    for key in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
        if not 0.0 <= opts.get(key, 0.0) < 1.0:
            raise ValueError(f"model.{key}={opts[key]} must lie in [0, 1)")
    if opts.get("pool", "token") == "token" and opts.get("cls_token") is False:
        raise ValueError(
            "pool='token' needs a class token; drop cls_token=False or pick another pool"
        )


def create_model(variant: str, num_classes: int, **overrides) -> VisionTransformer:
    """Builds a ViT from a size string and options.

    Args:
      variant: size/patch, e.g. "Ti/16", "B/16", "H/14", "S/4".
      num_classes: outputs of the head; 0 or None for no head (pooled features).
      **overrides: any of `MODEL_OPTIONS`, e.g. posemb="rope2d", pool="gap", dtype="bfloat16".

    Returns:
      An unbound `VisionTransformer`.
    """
    opts = {**decode_variant(variant), **overrides}
    if isinstance(opts["patch_size"], int):
        opts["patch_size"] = (opts["patch_size"],) * 2
    opts["patch_size"] = tuple(opts["patch_size"])
    validate_options(opts)
    return VisionTransformer(num_classes=num_classes, **opts)
