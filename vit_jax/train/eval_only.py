"""Evaluation without training: a run's evaluators on one of its saved checkpoints."""

import json
from typing import Dict, Optional, Sequence, Tuple

import jax

from vit_jax import evaluators
from vit_jax.common import files
from vit_jax.config import validate
from vit_jax.train import checkpoint
from vit_jax.train import sharding as shd
from vit_jax.train.checkpoint import CheckpointError
from vit_jax.train.loop import build, eval_variables


def _num_classes(config, directory: str, step: int) -> int:
    """The head's width in the checkpoint (else config.num_classes, else the train split's)."""
    meta = checkpoint.metadata(directory, step)
    head = meta.get("params", {}).get("head", {}).get("kernel")
    if head is not None:
        return int(head.shape[-1])
    if config.num_classes:
        return config.num_classes
    from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

    return data.get_info(config.dataset, config.train_split, config.data_dir).num_classes


def evaluate_checkpoint(
    config, workdir: str, step: Optional[int] = None, best: bool = False, only: Sequence[str] = ()
) -> Tuple[int, Dict[str, Dict[str, float]]]:
    """Runs `config`'s evaluators (all, or those named in `only`) on checkpoint `step` (default:
    the latest) of the run in `workdir` (`best=True`: its best checkpoint); appends one row per
    evaluator to `workdir/eval_only.jsonl`. Returns (step, {name: metrics}).

    `config` is the run's (its `config.json`), or one with other evaluators for the same model.
    """
    validate(config)
    directory = files.join(workdir, "best" if best else "checkpoints")
    steps = checkpoint.saved_steps(directory)
    if not steps:
        hint = "the run kept none: train with keep_best=True" if best else "train the run first"
        raise CheckpointError(f"no checkpoint in {directory}; {hint}")
    step = max(steps) if step is None else step
    if step not in steps:
        raise CheckpointError(f"{directory} has no step {step} (it has: {steps})")
    num_classes = _num_classes(config, directory, step)
    evals = evaluators.from_config(config, only)
    for ev in evals:
        ev.check(num_classes)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    model, _, _, _, abstract, shardings = build(config, num_classes, mesh)
    target = shd.with_shardings(abstract, shardings)
    state = checkpoint.restore(directory, step, target)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    put = lambda batch: shd.to_global(batch, mesh)
    context = evaluators.Context(model, put, replicated, config.loss)
    results = {ev.name: ev.run(context, eval_variables(state, ev.weights)) for ev in evals}
    if jax.process_index() == 0:
        rows = "".join(
            json.dumps({"step": step, "split": name, "checkpoint": directory, **m}) + "\n"
            for name, m in results.items()
        )
        path = files.join(workdir, "eval_only.jsonl")
        files.write_text(path, (files.read_text(path) if files.exists(path) else "") + rows)
    return step, results
