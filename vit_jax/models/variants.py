"""The `vit` family: size strings ("B/16") → model hyper-parameters, and the option checks.

`create_model` / `from_config` (vit_jax/models/families.py) build it, and every other family.

Sizes follow the ViT paper and "Scaling Vision Transformers" (Zhai et al. 2022).
"""

import dataclasses
import math
from typing import Any, Dict, Tuple

import jax.numpy as jnp

from vit_jax import kernels
from vit_jax.models.families import FAMILIES, Family
from vit_jax.models.heads import HEADS
from vit_jax.models.norms import NORMS
from vit_jax.models.pooling import POOLS
from vit_jax.models.posemb import POSEMB, check_rope_coords
from vit_jax.models.tokenizers import check_options as check_small_data_options
from vit_jax.models.vit import REMAT_POLICIES, VisionTransformer

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
    # big_vision's models/vit.py decode_variant: shape-optimised SigLIP towers ("Getting ViT in
    # Shape", Alabdulmohsin et al. 2023), its micro test size and the optimised g/G, and 'e'.
    "mu": (32, 1, 128, 2),
    "So400m": (1152, 27, 4304, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
    # timm's vit_so150m_* / vit_so150m2_* (SigLIP-2 era; mlp_ratio 2.572 and 34/13 rounded down)
    "So150m": (896, 18, 2304, 14),
    "So150m2": (832, 21, 2176, 13),
}

SIZE_KEYS = ("patch_size", "hidden_size", "depth", "mlp_dim", "num_heads")

# Options `create_model(**overrides)` and `config.model` accept: the sizes (they override the
# variant's) and every other field of `VisionTransformer`, whose defaults are `OPTION_DEFAULTS`.
MODEL_OPTIONS = tuple(
    f.name
    for f in dataclasses.fields(VisionTransformer)
    if f.name not in ("parent", "name", "num_classes")
)
OPTION_DEFAULTS: Dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(VisionTransformer)
    if f.name in MODEL_OPTIONS and f.default is not dataclasses.MISSING
}


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
    opts = {**OPTION_DEFAULTS, **opts}
    missing = [k for k in SIZE_KEYS if opts.get(k) is None]
    if missing:
        raise ValueError(
            f"model sizes {missing} are not set; give a variant such as 'B/16' or all of "
            f"{', '.join(SIZE_KEYS)}"
        )
    sizes = [*opts["patch_size"], *(opts[k] for k in SIZE_KEYS[1:])]
    if min(sizes) < 1 or (opts["representation_size"] or 0) < 0:  # 0 / None: no pre-logits
        raise ValueError(
            f"model sizes must be positive: patch_size={opts['patch_size']}, "
            + ", ".join(f"{k}={opts[k]}" for k in (*SIZE_KEYS[1:], "representation_size"))
        )
    _check_choice("posemb", opts["posemb"], POSEMB.names())
    _check_choice("pool", opts["pool"], POOLS.names())
    _check_choice("norm", opts["norm"], NORMS.names())
    _check_choice("head", opts["head"], HEADS.names())
    _check_choice("norm_placement", opts["norm_placement"], ("pre", "post"))
    _check_choice("attn_impl", opts["attn_impl"], kernels.ATTN_IMPLS)
    _check_choice("kernels", opts["kernels"], ("auto", *kernels.KERNELS.names()))
    _check_choice("remat_policy", opts["remat_policy"], tuple(REMAT_POLICIES))
    if opts["remat_policy"] != OPTION_DEFAULTS["remat_policy"] and not opts["remat"]:
        raise ValueError(f"remat_policy={opts['remat_policy']!r} needs remat=True")
    for key in ("dtype", "param_dtype"):
        try:
            jnp.dtype(opts[key])
        except TypeError:
            raise ValueError(
                f"model.{key}={opts[key]!r} is not a dtype; use float32 or bfloat16"
            ) from None
    check_rope_coords(opts["rope_coords"], opts["rope_ref_grid"])
    if opts["rope_coords"] != "index" and not POSEMB.get(opts["posemb"]).rotary:
        rotary = ", ".join(n for n in POSEMB.names() if POSEMB.get(n).rotary)
        raise ValueError(
            f"rope_coords={opts['rope_coords']!r} numbers the patches of a rotary scheme "
            f"({rotary}), not of posemb={opts['posemb']!r}; leave rope_coords='index'"
        )
    if not opts["norm_eps"] > 0:
        raise ValueError(f"norm_eps={opts['norm_eps']!r} must be > 0 (LayerNorm's epsilon)")
    if not isinstance(opts["num_registers"], int) or opts["num_registers"] < 0:
        raise ValueError(f"num_registers={opts['num_registers']!r} must be an int >= 0")
    width, heads = opts["hidden_size"], opts["num_heads"]
    if width % heads:
        raise ValueError(f"num_heads={heads} does not divide hidden_size={width}")
    for key in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
        if not 0.0 <= opts[key] < 1.0:
            raise ValueError(f"model.{key}={opts[key]} must lie in [0, 1)")
    if opts["pool"] == "token" and opts["cls_token"] is False:
        raise ValueError(
            "pool='token' needs a class token; drop cls_token=False or pick another pool"
        )
    check_small_data_options(opts)  # tokenizer, conv_layers, conv_kernel, lsa


def _stride(opts: Dict[str, Any]) -> int:
    """Square images: their side must be a multiple of both patch sides."""
    return math.lcm(*opts["patch_size"])


FAMILIES.register("vit")(
    Family(
        module=VisionTransformer,
        decode_variant=decode_variant,
        validate=validate_options,
        size_keys=SIZE_KEYS,
        default_variant="Ti/16",
        stride=_stride,
    )
)
