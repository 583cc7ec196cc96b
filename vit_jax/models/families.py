"""Model families found by name (`config.model_name`), as big_vision's `models/`: one module each.

  vit      VisionTransformer (variants.py): "B/16", every position scheme, pooling, heads
  resnet   BiT ResNets and the small CIFAR ResNets (resnet.py): "R50x1", "R20"
  hybrid   the ViT paper's ResNet stem + ViT encoder (hybrid.py): "R50+B/16"

A family is its Flax module class, whose dataclass fields are its options with their defaults
(written once, there: `config.model` of that family is derived from them), a size-string decoder,
the option checks, and the downsampling an image side must be a multiple of. Every family's
module maps `[B, H, W, C]` images to float32 logits (or pooled features without a head) and sows
the pooled vector the head sees as `intermediates/pre_logits_input` (few-shot, k-NN); the head is
named `head`. Add a family with `FAMILIES.register("name")(Family(...))` in its module and import
that module in `vit_jax/models/__init__.py`.
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from vit_jax import kernels
from vit_jax.common.registry import Registry

FAMILIES = Registry("model family (config.model_name)")
DEFAULT = "vit"


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    module: the Flax module class; its fields but `parent`, `name`, `num_classes` are the options.
    decode_variant: size string → options it sets (one-line ValueError for an unknown string).
    validate: the full option dict → None, or a one-line ValueError.
    size_keys: options a variant sets; None in `config.model` means "from the variant".
    default_variant: `config.model.variant` of a fresh config of this family.
    stride: the full options → the downsampling an image side must be a multiple of.
    """

    module: type
    decode_variant: Callable[[str], Dict[str, Any]]
    validate: Callable[[Dict[str, Any]], None]
    size_keys: Tuple[str, ...]
    default_variant: Optional[str]
    stride: Callable[[Dict[str, Any]], int]

    @property
    def options(self) -> Tuple[str, ...]:
        skip = ("parent", "name", "num_classes")
        return tuple(f.name for f in dataclasses.fields(self.module) if f.name not in skip)

    @property
    def defaults(self) -> Dict[str, Any]:
        return {
            f.name: f.default
            for f in dataclasses.fields(self.module)
            if f.name in self.options and f.default is not dataclasses.MISSING
        }


def get(model_name: Optional[str]) -> Family:
    """The family called `model_name` (None: the ViT); unknown names list the choices."""
    return FAMILIES.get(model_name or DEFAULT)


def resolve_options(variant: Optional[str], model_name: str = DEFAULT, **overrides) -> Dict:
    """Every option of the model `create_model(variant, ..., **overrides)` builds, checked.

    The variant's sizes, then `overrides`, then the family's defaults. `kernels` / `attn_impl`
    stay as given ("auto" included).

    Raises:
      ValueError: one line naming the option that cannot work.
    """
    family = get(model_name)
    opts = {**(family.decode_variant(variant) if variant else {}), **overrides}
    if isinstance(opts.get("patch_size"), int):
        opts["patch_size"] = (opts["patch_size"],) * 2
    if opts.get("patch_size") is not None:
        opts["patch_size"] = tuple(opts["patch_size"])
    unknown = sorted(set(opts) - set(family.options))
    if unknown:
        raise ValueError(
            f"unknown model option(s) {unknown} of family {model_name or DEFAULT!r}; valid "
            f"options: {', '.join(family.options)}"
        )
    family.validate(opts)
    return {**family.defaults, **opts}


def config_options(model_config: Mapping[str, Any], model_name: str = DEFAULT) -> Dict:
    """`resolve_options` for a `config.model` mapping: `variant` plus options; sizes left None
    come from the variant."""
    sizes = get(model_name).size_keys
    opts = {
        k: v for k, v in model_config.items() if k != "variant" and not (k in sizes and v is None)
    }
    return resolve_options(model_config.get("variant"), model_name, **opts)


def stride(model_config: Mapping[str, Any], model_name: str = DEFAULT) -> int:
    """The downsampling of a `config.model`: image sides must be multiples of it."""
    return get(model_name).stride(config_options(model_config, model_name))


def create_model(
    variant: Optional[str], num_classes: Optional[int], model_name: str = DEFAULT, **overrides
):
    """Builds a model of family `model_name` from a size string and options.

    Args:
      variant: the family's size string, e.g. "B/16" (vit), "R50x1" (resnet), "R50+B/16" (hybrid);
        or None when `overrides` give every size.
      num_classes: outputs of the head; 0 or None for no head (pooled features).
      model_name: the family, a name in `FAMILIES` ("vit", "resnet", "hybrid").
      **overrides: the family's options, e.g. posemb="rope2d", pool="gap". `kernels` and
        `attn_impl` left at "auto" are resolved here for JAX's backend (`vit_jax.kernels.resolve`).

    Returns:
      The unbound Flax module.
    """
    return build(resolve_options(variant, model_name, **overrides), num_classes, model_name)


def from_config(model_config: Mapping[str, Any], num_classes: Optional[int], model_name=DEFAULT):
    """`create_model` from a `config.model` mapping (see `config_options`)."""
    return build(config_options(model_config, model_name), num_classes, model_name)


def build(opts: Dict[str, Any], num_classes: Optional[int], model_name: str = DEFAULT):
    """The module of family `model_name` with resolved options (`resolve_options`' output)."""
    opts = dict(opts)
    if "kernels" in opts or "attn_impl" in opts:
        k, a = kernels.resolve(opts.get("kernels", "auto"), opts.get("attn_impl", "auto"))
        opts.update({n: v for n, v in (("kernels", k), ("attn_impl", a)) if n in opts})
    return get(model_name).module(num_classes=num_classes, **opts)
