"""Experiment configs: every key with its default (`defaults.py`), the up-front checks
(`validate.py`) and `resolve_kernels`, which fixes `auto` kernel choices for this machine.

Imports `common`, `models` (option checks) and `data.options` (data defaults); never `train`.
"""

from vit_jax import kernels
from vit_jax.config.defaults import (
    aug_defaults,
    base_config,
    from_saved,
    load_config,
    model_defaults,
    with_model,
)
from vit_jax.config.validate import ConfigError, check_keys, check_values, eval_batch_size, validate


def resolve_kernels(config, backend: str = None) -> None:
    """Replaces `model.kernels` / `model.attn_impl` "auto" by the choice for `backend` (default:
    JAX's), in place, so the model and the run's config.json see the same concrete names. Call once,
    in the CLI, after the CPU device split (it starts JAX's backend)."""
    if "kernels" not in config.model:  # a family without kernel choices (resnet)
        return
    try:
        config.model.kernels, config.model.attn_impl = kernels.resolve(
            config.model.kernels, config.model.attn_impl, backend
        )
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None


__all__ = [
    "ConfigError", "aug_defaults", "base_config", "check_keys", "check_values", "eval_batch_size",
    "from_saved", "load_config", "model_defaults", "resolve_kernels", "with_model", "validate",
]  # fmt: skip
