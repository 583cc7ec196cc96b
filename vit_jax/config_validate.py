"""Up-front config checks: every problem is one line naming the key and how to fix it."""

import jax

import vit_jax
from vit_jax import cpu_devices
from vit_jax.config_defaults import base_config

_CHOICES = dict(
    optimizer=("adamw", "sgd", "lion", "adafactor"),
    schedule=("cosine", "linear", "constant"),
    loss=("softmax_xent", "sigmoid_xent", "mse"),
    nan_policy=("stop", "skip"),
)


class ConfigError(ValueError):
    """A config value that cannot work."""


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if hasattr(v, "items") and not isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_keys(config) -> None:
    """Unknown keys (typos) and values of the wrong type, against `base_config()`."""
    base = _flat(base_config())
    got = _flat(config)
    unknown = sorted(set(got) - set(base))
    if unknown:
        raise ConfigError(
            f"unknown config key(s): {', '.join(unknown)}; see vit_jax/config_defaults.py"
        )
    for key, default in base.items():
        value = got.get(key, default)
        if default is None or value is None or isinstance(default, (tuple, list)):
            continue
        if isinstance(default, bool) != isinstance(value, bool):
            raise ConfigError(f"config.{key}={value!r} should be a bool")
        if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            raise ConfigError(f"config.{key}={value!r} should be a number")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"config.{key}={value!r} should be a string")


def check_values(config, num_devices: int = None) -> None:
    """Impossible settings: choices, signs, divisibility, patch vs image size."""
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise ConfigError(f"config.{key}={config[key]!r} is not one of {', '.join(choices)}")
    for key in (
        "lr",
        "total_steps",
        "batch_size",
        "eval_batch_size",
        "image_size",
        "grad_accum_steps",
    ):
        if not config[key] > 0:
            raise ConfigError(f"config.{key}={config[key]} must be positive")
    for key in (
        "warmup_steps", "weight_decay", "grad_clip", "label_smoothing", "log_every", "eval_every",
        "checkpoint_every",
    ):  # fmt: skip
        if config[key] < 0:
            raise ConfigError(f"config.{key}={config[key]} must not be negative")
    try:
        cpu_devices.choose(config.cpu_devices, (), 1)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    decay = config.schedule != "constant"  # cosine/linear need at least one step after warmup
    if config.warmup_steps > config.total_steps - decay:
        raise ConfigError(
            f"config.warmup_steps={config.warmup_steps} leaves no steps of total_steps="
            f"{config.total_steps} for the {config.schedule} schedule; lower warmup_steps"
        )
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by "
            f"grad_accum_steps={config.grad_accum_steps}"
        )
    n = num_devices or jax.device_count()
    micro = config.batch_size // config.grad_accum_steps
    if micro % n:
        raise ConfigError(
            f"micro-batch {micro} (batch_size / grad_accum_steps) is not divisible by the {n} devices; "
            f"use a multiple of {n}"
        )
    if config.eval_batch_size % n:
        raise ConfigError(
            f"config.eval_batch_size={config.eval_batch_size} is not divisible by the {n} devices"
        )
    try:
        model = create_model_from_config(config, num_classes=2)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None
    ph, pw = model.patch_size
    if config.image_size % ph or config.image_size % pw:
        raise ConfigError(
            f"config.image_size={config.image_size} is not divisible by the patch size {ph} of "
            f"model.variant={config.model.variant!r}"
        )


def create_model_from_config(config, num_classes: int):
    """`vit_jax.create_model(config.model.variant, num_classes, **rest of config.model)`."""
    sizes = ("hidden_size", "depth", "mlp_dim", "num_heads")
    opts = {
        k: v for k, v in config.model.items() if k != "variant" and not (k in sizes and v is None)
    }
    return vit_jax.create_model(config.model.variant, num_classes, **opts)


def validate(config, num_devices: int = None) -> None:
    """Runs every check; raises ConfigError with one line."""
    check_keys(config)
    check_values(config, num_devices)
