"""A timm / transformers checkpoint's own settings onto a config: its model and its preprocessing.

`init_from.path` (or `predict --checkpoint`) naming a `.safetensors` checkpoint (a file, a folder,
`hf://ORG/NAME`) with `init_from.from_checkpoint=True` (the default):
* the model (`config.model`: sizes, pool, class token, registers, GELU, ...) is the checkpoint's,
  whatever the config's variant says (the weights fit no other);
* the eval preprocessing (`aug.mean`, `aug.std`, `aug.eval_crop_pct`, `aug.eval_interpolation`)
  is the source library's where the config left the key at its default; a key the config set is
  kept. `image_size` only for `predict` without a config (training keeps the config's resolution:
  the position table is resized).
Every value taken or kept is printed, and the config (so the workdir's config.json) holds them.
"""

import sys
from typing import List, Optional

from vit_jax.config.defaults import aug_defaults, model_defaults
from vit_jax.config.validate import ConfigError
from vit_jax.models import variants
from vit_jax.weights import hub, safetensors_ckpt

_AUG = {
    "mean": "mean",
    "std": "std",
    "crop_pct": "eval_crop_pct",
    "interpolation": "eval_interpolation",
}


def load(path: str, num_heads: Optional[int] = None):
    """The checkpoint at `path` (`safetensors_ckpt.Checkpoint`), or None for another format."""
    if not path or not hub.is_safetensors(path):
        return None
    try:
        return safetensors_ckpt.load(path, num_heads)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def apply(config, ckpt, *, image_size: bool = False, quiet: bool = False) -> List[str]:
    """Sets `config`'s model and preprocessing from `ckpt` (in place); returns the printed lines."""
    if config.get("model_name", "vit") != "vit":
        raise ConfigError(
            f"checkpoint {ckpt.source} is a ViT ({ckpt.layout} layout) but config.model_name="
            f"{config.model_name!r}; set --config.model_name=vit"
        )
    lines = []
    if ckpt.model:
        model = dict(ckpt.model)
        patch = model.pop("patch_size")
        if patch[0] != patch[1]:
            raise ConfigError(
                f"checkpoint {ckpt.source}: non-square patches {patch} are not supported"
            )
        defaults = model_defaults("vit")
        config.model.variant = None
        config.model.patch_size = int(patch[0])
        for key, value in model.items():
            if key in defaults:
                config.model[key] = value
        shown = ", ".join(f"{k}={v}" for k, v in sorted(model.items()) if v not in (None, False, 0))
        lines.append(f"model from {ckpt.source} ({ckpt.layout}): patch_size={patch[0]}, {shown}")
    defaults, kept, taken = aug_defaults(), [], []
    for src, key in _AUG.items():
        if src not in ckpt.preprocess:
            continue
        value = ckpt.preprocess[src]
        value = tuple(value) if isinstance(value, (list, tuple)) else value
        current = config.aug.get(key)
        current = tuple(current) if isinstance(current, (list, tuple)) else current
        if current != defaults.get(key) and current != value:
            kept.append(f"{key}={current} (checkpoint: {value})")
        else:
            config.aug[key] = value
            taken.append(f"aug.{key}={value}")
    if image_size and "image_size" in ckpt.preprocess:
        config.image_size = int(ckpt.preprocess["image_size"])
        taken.append(f"image_size={config.image_size}")
    if taken:
        lines.append("preprocessing from the checkpoint: " + ", ".join(taken))
    if kept:
        lines.append("preprocessing kept from the config: aug." + ", aug.".join(kept))
    if not quiet:
        for line in lines:
            print(line, file=sys.stderr, flush=True)
    return lines


def apply_to_training(config) -> List[str]:
    """`apply` for `init_from.path` when `init_from.from_checkpoint` (the trainer calls this first)."""
    init = config.get("init_from") or {}
    if not init.get("path") or not init.get("from_checkpoint", True):
        return []
    heads = config.model.get("num_heads")
    if heads is None and config.model.get("variant"):
        heads = variants.decode_variant(config.model.variant)["num_heads"]
    ckpt = load(init.path, heads)
    return apply(config, ckpt) if ckpt is not None else []
