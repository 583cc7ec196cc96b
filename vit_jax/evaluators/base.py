"""The evaluator registry, the per-evaluator options and building evaluators from a run's config."""

import copy
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

from vit_jax.common.errors import Error
from vit_jax.common.registry import Registry

EVALUATORS = Registry("evaluator type")

# Options every evaluator has; None takes the run's value (`config.eval_every`, the trained weights).
COMMON_KEYS = dict(type="classification", every=None, weights="params")
WEIGHTS = ("params", "ema")
DEFAULT_NAME = "eval"  # the evaluator of a run without `config.evals`


# Evaluator data options → the run's config key each overrides (None keeps the run's value).
RUN_KEYS = dict(
    dataset="dataset", split="eval_split", image_size="image_size", batch_size="eval_batch_size",
    crop_pct="aug.eval_crop_pct", label_key="label_key", clips="eval_clips",
)  # fmt: skip


def with_options(config, spec: dict):
    """A copy of the run's config with the evaluator's data options (`RUN_KEYS`) applied."""
    config = copy.deepcopy(config)
    for option, key in RUN_KEYS.items():
        if spec.get(option) is not None:
            *parents, last = key.split(".")
            node = config
            for p in parents:
                node = node[p]
            node[last] = spec[option]
    return config


class EvalError(Error, ValueError):
    """An evaluator that cannot run: a bad option, or a dataset that is not there."""


@dataclasses.dataclass
class Context:
    """What evaluators need from the run: the model, how a host batch becomes a global array
    (`put`), and the sharding of jitted outputs (replicated, so every process can read them).

    `features` holds the representations computed in the current evaluation round, so evaluators
    that read the same split the same way with the same weights (few-shot and k-NN) compute it
    once; whoever runs a round on a context it keeps empties it first (`new_round`).
    """

    model: Any
    put: Callable[[dict], dict]
    out_sharding: Any = None
    loss: str = "softmax_xent"
    features: Dict[Any, Any] = dataclasses.field(default_factory=dict)

    def new_round(self) -> None:
        """Forgets the last round's representations (the weights have changed since)."""
        self.features.clear()


_LABELS = {"top1": "top-1", "top5": "top-5"}


def describe(step: int, name: str, metrics: Dict[str, float]) -> str:
    """One line, e.g. `step 600: eval loss 0.1053  top-1 0.9583  top-5 1.0000  (360 examples)`."""
    shown = "  ".join(
        f"{_LABELS.get(k, k)} {v:.4f}"
        for k, v in metrics.items()
        if k not in ("count", "skipped") and not k.endswith(("_std", "_l2"))
    )
    skipped = f", {int(metrics['skipped'])} without labels skipped" if "skipped" in metrics else ""
    return f"step {step}: {name} {shown}  ({int(metrics['count'])} examples{skipped})"


def names(config) -> List[str]:
    """The evaluator names of a run, in name order (a ConfigDict iterates its keys sorted)."""
    evals = config.get("evals") or {}
    return list(evals) or [DEFAULT_NAME]


def _specs(config) -> Dict[str, dict]:
    evals = config.get("evals") or {}
    if not evals:
        return {DEFAULT_NAME: dict(type="classification")}
    return {name: dict(spec) for name, spec in evals.items()}


def spec_errors(config) -> Optional[str]:
    """The first problem with `config.evals` (unknown type or key, bad value), or None."""
    for name, spec in _specs(config).items():
        where = f"config.evals.{name}"
        if not isinstance(spec, dict) or "/" in name:
            return f"{where} must be a dict of evaluator options (and its name has no '/')"
        kind = spec.get("type", COMMON_KEYS["type"])
        if kind not in EVALUATORS:
            return f"{where}.type={kind!r} is not one of {', '.join(EVALUATORS.names())}"
        cls = EVALUATORS.get(kind)
        unknown = sorted(set(spec) - set(COMMON_KEYS) - set(cls.KEYS))
        if unknown:
            known = ", ".join([*COMMON_KEYS, *cls.KEYS])
            return (
                f"{where}: unknown option(s) {', '.join(unknown)} for type {kind!r}; it has {known}"
            )
        if spec.get("weights", "params") not in WEIGHTS:
            return f"{where}.weights={spec['weights']!r} is not one of {', '.join(WEIGHTS)}"
        every = spec.get("every")
        if every is not None and (not isinstance(every, int) or every < 0):
            return f"{where}.every={every!r} must be an int >= 0 (0: only at the end)"
        problem = cls.spec_error(config, {**cls.KEYS, **spec})
        if problem:
            return f"{where}: {problem}"
    return None


def metrics_of(config) -> Dict[str, Sequence[str]]:
    """{evaluator name: the metric names it reports}."""
    out = {}
    for name, spec in _specs(config).items():
        cls = EVALUATORS.get(spec.get("type", COMMON_KEYS["type"]))
        out[name] = tuple(cls.metric_names({**COMMON_KEYS, **cls.KEYS, **spec}))
    return out


def from_config(config, only: Sequence[str] = ()) -> List[Any]:
    """The evaluators of `config` (all, or those named in `only`), in config order."""
    specs = _specs(config)
    missing = [n for n in only if n not in specs]
    if missing:
        raise EvalError(
            f"no evaluator named {', '.join(missing)} in the run (it has: {', '.join(specs)})"
        )
    problem = spec_errors(config)
    if problem:
        raise EvalError(problem)
    out = []
    for name, spec in specs.items():
        if only and name not in only:
            continue
        cls = EVALUATORS.get(spec.get("type", COMMON_KEYS["type"]))
        full = {**COMMON_KEYS, **cls.KEYS, **spec}
        every = config.eval_every if full["every"] is None else full["every"]
        out.append(cls(name, full, copy.deepcopy(config), every))
    return out


class Evaluator:
    """Base class: name, options (`spec`), the run's config, cadence and weights."""

    KEYS: Dict[str, Any] = {}

    def __init__(self, name: str, spec: dict, config, every: int):
        self.name = name
        self.spec = spec
        self.config = config
        self.every = every
        self.weights = spec["weights"]
        self.implicit = not (config.get("evals") or {})  # the default `eval` evaluator

    @classmethod
    def spec_error(cls, config, spec: dict) -> Optional[str]:
        del config, spec
        return None

    @classmethod
    def metric_names(cls, spec: dict) -> Sequence[str]:
        """The metrics `run` returns (the first is the default `best_metric`)."""
        del spec
        return ("top1",)

    def key(self, option: str) -> str:
        """The config key a user sets to change `option`, for messages."""
        return f"config.evals.{self.name}.{option}"

    def due(self, step: int, final: bool) -> bool:
        return final or (self.every > 0 and step % self.every == 0)
