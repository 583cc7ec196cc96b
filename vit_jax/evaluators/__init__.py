"""Evaluators: what a run measures besides its training loss, several per run (`config.evals`).

    config.evals.val = dict(type="classification", split="validation")
    config.evals.val_64px = dict(type="classification", split="validation", image_size=64)
    config.evals.real = dict(type="multilabel", dataset="tfds:imagenet2012_real", label_key="real_label")

Each evaluator has a name (its metrics are logged as `NAME/top1`, ...), a type registered in
`EVALUATORS` (one small module per type: `classification.py`), its own dataset, split,
preprocessing and cadence (`every`), and the weights it scores (`params`, or `ema` with
`config.ema_decay`). With no `config.evals` the run has one classification evaluator named `eval`
on `config.eval_split`. A new evaluator type is a class with `KEYS` (its options and defaults),
`check(num_classes)` and `run(context, variables)`, registered with `@EVALUATORS.register("name")`.

Imports `common`, `models` and `data` (lazily, for TensorFlow); never `config`, `train` or `tools`.
"""

from vit_jax.evaluators import classification, fewshot, knn  # noqa: F401  (register their types)
from vit_jax.evaluators.base import (
    COMMON_KEYS,
    EVALUATORS,
    Context,
    EvalError,
    describe,
    from_config,
    metrics_of,
    names,
    spec_errors,
)

__all__ = [
    "COMMON_KEYS", "EVALUATORS", "Context", "EvalError", "describe", "from_config", "metrics_of", "names",
    "spec_errors",
]  # fmt: skip
