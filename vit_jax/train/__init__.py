"""Training: the loop (`loop.py`), the jitted steps (`step.py`), optimizer and schedule (`optim.py`),
device mesh and shardings (`sharding.py`), train-state checkpoints and config.json
(`checkpoint.py`), metric logs (`metrics_log.py`).

Imports `common`, `kernels`, `models`, `weights`, `data`, `evaluators` and `config`; never `tools`
or a command line.
"""

from vit_jax.train.loop import (
    NonFiniteError,
    build,
    eval_variables,
    run_evaluators,
    train_and_evaluate,
)  # fmt: skip

__all__ = ["NonFiniteError", "build", "eval_variables", "run_evaluators", "train_and_evaluate"]
