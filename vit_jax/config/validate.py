"""Up-front config checks: every problem is one line naming the key and how to fix it."""

import re

import jax

from vit_jax import evaluators, models
from vit_jax.common import cpu_devices, files, trees
from vit_jax.common.errors import Error
from vit_jax.config.defaults import base_config
from vit_jax.data.options import read_config

_CHOICES = dict(
    optimizer=("adamw", "sgd", "lion", "adafactor", "bv_adafactor"),
    schedule=("cosine", "linear", "constant", "rsqrt"),
    loss=("softmax_xent", "sigmoid_xent", "mse"),
    nan_policy=("stop", "skip"),
    weight_decay_form=("lr", "schedule"),
)


class ConfigError(Error, ValueError):
    """A config value that cannot work."""


def eval_batch_size(config) -> int:
    """The global eval batch size: `config.eval_batch_size`, or `batch_size` when it is None."""
    return config.eval_batch_size or config.batch_size


def check_keys(config) -> None:
    """Unknown keys (typos) and values of the wrong type, against `base_config()`."""
    name = config.get("model_name", "vit")
    try:
        base = trees.flatten(base_config(name))
    except ValueError as e:
        raise ConfigError(f"config.model_name: {e}") from None
    got = trees.flatten(config)
    free = ("evals.", "distill.teacher_model.")  # free-form blocks, checked where they are used
    unknown = sorted(k for k in set(got) - set(base) if not k.startswith(free))
    if unknown and all(k.startswith("model.") for k in unknown):
        others = [f for f in models.FAMILIES.names() if f != name]
        owner = [
            f for f in others if {k[6:] for k in unknown} <= set(models.FAMILIES.get(f).options)
        ]
        hint = (
            f"they are options of model_name={owner[0]!r}; a config of family {name!r} starts "
            f"from base_config({name!r})"
            if owner
            else f"see the fields of {models.FAMILIES.get(name).module.__name__}"
        )
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} of model_name={name!r}; {hint}")
    if unknown:
        raise ConfigError(
            f"unknown config key(s): {', '.join(unknown)}; see vit_jax/config/defaults.py"
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
    positive = (
        "lr", "total_steps", "batch_size", "image_size", "grad_accum_steps", "distributed_timeout_s",
    )  # fmt: skip
    for key in (*positive, "rsqrt_timescale"):
        if not config[key] > 0:
            raise ConfigError(f"config.{key}={config[key]} must be positive")
    if config.eval_batch_size is not None and config.eval_batch_size <= 0:
        raise ConfigError(f"config.eval_batch_size={config.eval_batch_size} must be positive")
    for key in (
        "warmup_steps", "weight_decay", "grad_clip", "label_smoothing", "log_every", "eval_every",
        "checkpoint_every", "cooldown_steps",
    ):  # fmt: skip
        if config[key] < 0:
            raise ConfigError(f"config.{key}={config[key]} must not be negative")
    for key in ("b1", "b2", "label_smoothing"):
        if not 0.0 <= config[key] < 1.0:
            raise ConfigError(f"config.{key}={config[key]} must lie in [0, 1)")
    if not 0.0 <= config.min_lr_ratio <= 1.0:
        raise ConfigError(f"config.min_lr_ratio={config.min_lr_ratio} must lie in [0, 1]")
    if not 0.0 <= config.layer_decay <= 1.0:
        raise ConfigError(f"config.layer_decay={config.layer_decay} must lie in [0, 1] (0: off)")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ConfigError(f"config.ema_decay={config.ema_decay} must lie in [0, 1) (0: off)")
    check_param_rules(config)
    if config.momentum is not None and config.momentum < 0:
        raise ConfigError(f"config.momentum={config.momentum} must not be negative")
    if config.profile_steps < 0:
        raise ConfigError(f"config.profile_steps={config.profile_steps} must not be negative")
    try:
        read_config(config)  # the data keys, checked where the data pipeline defines them
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.keep_checkpoints < 1:
        raise ConfigError(
            f"config.keep_checkpoints={config.keep_checkpoints} would keep no checkpoint (every save "
            "deleted, the run unresumable); use 1 or more"
        )
    if config.num_classes is not None and config.num_classes < 1:
        raise ConfigError(f"config.num_classes={config.num_classes} must be positive (or None)")
    try:
        cpu_devices.choose(config.cpu_devices, (), 1)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    decay = config.schedule != "constant"  # cosine/linear need at least one step after warmup
    if config.warmup_steps + config.cooldown_steps > config.total_steps - decay:
        if config.cooldown_steps:
            raise ConfigError(
                f"config.warmup_steps={config.warmup_steps} + cooldown_steps="
                f"{config.cooldown_steps} exceed total_steps={config.total_steps}; lower them"
            )
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
    if eval_batch_size(config) % n:
        raise ConfigError(
            f"config.eval_batch_size={eval_batch_size(config)} is not divisible by the {n} devices"
        )
    check_model(config)
    check_evals(config)
    check_distill(config)


def check_evals(config) -> None:
    """The evaluators' options (`vit_jax.evaluators`), `best_metric` and the weights they score."""
    problem = evaluators.spec_errors(config)
    if problem:
        raise ConfigError(problem)
    metrics = evaluators.metrics_of(config)
    name, _, metric = config.best_metric.partition("/")
    if config.best_metric and metric not in metrics.get(name, ()):
        choices = ", ".join(f"{n}/{m}" for n, ms in metrics.items() for m in ms[:3])
        raise ConfigError(
            f"config.best_metric={config.best_metric!r} is not NAME/METRIC of an evaluator; "
            f"e.g. {choices}"
        )
    for name, spec in (config.evals or {}).items():
        if spec.get("weights") == "ema" and not config.ema_decay:
            raise ConfigError(
                f"config.evals.{name}.weights='ema' needs an EMA of the weights; set "
                "config.ema_decay (e.g. 0.9999)"
            )


def _pairs(key: str, value, single: bool):
    """`value` as [(regex, number)], or a ConfigError naming the expected form."""
    example = "('embedding/.*', 'head/.*')" if single else "(('head/.*', 10.0),)"
    items = list(value) if isinstance(value, (tuple, list)) else None
    try:
        pairs = [(x, 0.0) if single else (x[0], float(x[1])) for x in items]
        if all(isinstance(p, str) for p, _ in pairs) and (
            single or all(len(x) == 2 for x in items)
        ):
            return pairs
    except (TypeError, ValueError, IndexError):
        pass
    raise ConfigError(f"config.{key}={value!r} must look like {example}")


def check_param_rules(config) -> None:
    """`lr_mults` / `wd_mults`: (regex, number) pairs; `frozen`: regexes; every regex compiles."""
    for key in ("lr_mults", "wd_mults", "frozen"):
        for pattern, mult in _pairs(key, config[key], single=key == "frozen"):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"config.{key}: bad regex {pattern!r} ({e})") from None
            if key == "lr_mults" and not mult > 0:
                raise ConfigError(
                    f"config.lr_mults: multiplier {mult} of {pattern!r} must be positive "
                    "(freeze parameters with config.frozen)"
                )
            if mult < 0:
                raise ConfigError(f"config.{key}: multiplier {mult} of {pattern!r} is negative")


def check_model(config) -> None:
    """The model options (without building the model) and the image size against the model's
    downsampling (a ViT's patch size; a hybrid's stem times its patch)."""
    name = config.get("model_name", "vit")
    try:
        step = models.stride(config.model, name)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None
    if config.image_size % step:
        what = (
            "the patch size" if name == "vit" else f"the downsampling (stem × patch) of the {name}"
        )
        raise ConfigError(
            f"config.image_size={config.image_size} is not divisible by {what} {step} of the model "
            f"(model.variant={config.model.variant!r}, model.patch_size)"
        )


def check_distill(config) -> None:
    """`config.distill` (vit_jax/train/distill.py): kind, alpha, tau, the teacher and the
    distillation token. The teacher's number of classes is checked when it is loaded."""
    d = config.distill
    kinds = ("none", "soft", "hard")
    if d.kind not in kinds:
        raise ConfigError(f"config.distill.kind={d.kind!r} is not one of {', '.join(kinds)}")
    if not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(f"config.distill.alpha={d.alpha} must lie in [0, 1]")
    if not d.tau > 0:
        raise ConfigError(f"config.distill.tau={d.tau} must be positive")
    if d.kind == "none":
        if config.model.get("distill_token"):
            raise ConfigError(
                "config.model.distill_token=True needs a teacher for its head; set "
                "config.distill.kind (soft or hard) and config.distill.teacher"
            )
        return
    if not d.teacher:
        raise ConfigError(
            f"config.distill.kind={d.kind!r} needs config.distill.teacher: a finished run's "
            "workdir or an .npz file"
        )
    if config.loss == "mse":
        raise ConfigError("config.distill.kind needs a classification loss, not config.loss='mse'")
    if not files.exists(d.teacher):
        raise ConfigError(f"config.distill.teacher={d.teacher!r} does not exist")
    if d.teacher.endswith(".npz"):
        if not d.teacher_model:
            raise ConfigError(
                "config.distill.teacher_model is empty: an .npz teacher needs its model as "
                "config.model keys, e.g. dict(variant='B/16') in a config file"
            )
        try:
            models.config_options(d.teacher_model, d.teacher_model_name)
        except ValueError as e:
            raise ConfigError(f"config.distill.teacher_model: {e}") from None
    elif not files.exists(files.join(d.teacher, "config.json")):
        raise ConfigError(
            f"config.distill.teacher={d.teacher!r} is neither an .npz file nor a run's workdir "
            "(no config.json)"
        )
    elif d.teacher_model:
        raise ConfigError(
            "config.distill.teacher_model is for an .npz teacher; a workdir teacher's model comes "
            "from its config.json: leave teacher_model empty"
        )


def validate(config, num_devices: int = None) -> None:
    """Runs every check; raises ConfigError with one line."""
    check_keys(config)
    check_values(config, num_devices)
