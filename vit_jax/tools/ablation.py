"""Ablation sweeps: train every combination of swept config values × seeds, evaluate each run at
several resolutions, and summarise the sweep as a table and plots.

    from vit_jax.tools import ablation
    runs = ablation.expand(config, ["model.posemb=none,learn,rope2d"], seeds=2)
    ablation.run_sweep(config, runs, "/tmp/sweep", eval_sizes=(24, 40, 48))

The table and plots are written by `ablation_report.py`.

The sweep directory holds one trainer workdir per run and the summary:

    runs/<name>/               checkpoints/, metrics.jsonl, config.json (the trainer's workdir)
    runs/<name>/result.json    written atomically once the run and its evals are done: the "done" mark
    table.md, table.csv        top-1 mean ± std over seeds per setting and eval resolution
    accuracy.png, resolution.png, curves.png

Rerunning the same sweep skips runs with a result.json; an unfinished run resumes from its latest
checkpoint (the trainer does that for any existing workdir).
"""

import contextlib
import copy
import dataclasses
import fcntl
import functools
import itertools
import json
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

from vit_jax import evaluators, models
from vit_jax import train as train_lib
from vit_jax.common import files
from vit_jax.config import ConfigError, validate
from vit_jax.tools.ablation_report import report, result_path
from vit_jax.train import checkpoint
from vit_jax.train import sharding as shd
from vit_jax.train.checkpoint import CheckpointError, check_or_write_config
from vit_jax.train.metrics_log import read_metrics

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


# ------------------------------------------------------------------ sweep expansion
@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the sweep: the swept (key, value) pairs, in --sweep order, and a seed."""

    overrides: Tuple[Tuple[str, Any], ...]
    seed: int

    @property
    def label(self) -> str:
        """The setting without the seed, e.g. "posemb=learn" (runs with the same label are pooled)."""
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.overrides) or "base"

    @property
    def name(self) -> str:
        """Directory name, e.g. "model.posemb=learn_seed=0"."""
        parts = [f"{k}={v}" for k, v in self.overrides] + [f"seed={self.seed}"]
        return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


def _parent(config, key: str):
    """The ConfigDict that holds `key` ("model.posemb" → config.model) and the last key part."""
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node.get(part) if hasattr(node, "get") else None
    if node is None or not hasattr(node, "keys") or last not in node:
        raise ConfigError(
            f"cannot sweep unknown config key {key!r}; see vit_jax/config/defaults.py"
        )
    return node, last


def set_value(config, key: str, value) -> None:
    """`config.<key> = value` for a dotted key ("model.posemb"); ConfigError for an unknown key."""
    node, last = _parent(config, key)
    node[last] = value


def key_type(config, key: str) -> type:
    """The Python type of `config.<key>`, also for keys whose default is None (typed references)."""
    node, last = _parent(config, key)
    if node[last] is not None:
        return type(node[last])
    # get_ref turns a plain field into a reference, so ask a copy.
    return copy.deepcopy(node).get_ref(last).get_type()


def parse_value(config, key: str, text: str):
    """`text` as a value of `config.<key>`'s type ("3" → 3, "true" → True, "none" → None if nullable).

    Raises:
      ConfigError naming the key, the text and the expected type.
    """
    kind = key_type(config, key)
    node, last = _parent(config, key)
    if node[last] is None and text.lower() == "none":
        return None
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
    elif kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    elif kind is str:
        return text
    else:
        raise ConfigError(
            f"cannot sweep {key}: its values are {kind.__name__}s (bool, int, float, str only)"
        )
    raise ConfigError(f"--sweep {key}={text!r}: expected a {kind.__name__}")


def parse_sweep(config, spec: str) -> Tuple[str, List[Any]]:
    """ "model.posemb=none,learn" → ("model.posemb", ["none", "learn"]), values typed by the config."""
    key, sep, values = spec.partition("=")
    texts = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not texts:
        raise ConfigError(
            f"--sweep {spec!r} should look like KEY=V1,V2,..., e.g. model.posemb=none,learn"
        )
    if key == "seed":
        raise ConfigError("sweep seeds with --seeds=N (seeds config.seed .. config.seed + N - 1)")
    return key, [parse_value(config, key, t) for t in texts]


def expand(config, specs: Sequence[str], seeds: int = 1) -> List[Run]:
    """Every combination of the swept values (a grid over several specs) for each of `seeds` seeds.

    Seeds are the outer loop, so an interrupted sweep already has every setting at the first seed.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds} must be at least 1")
    parsed = [parse_sweep(config, s) for s in specs]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"a key is swept twice in {keys}; put all its values in one --sweep")
    combos = list(itertools.product(*(values for _, values in parsed)))
    return [Run(tuple(zip(keys, combo)), config.seed + i) for i in range(seeds) for combo in combos]


def run_config(base, run: Run):
    """A copy of `base` with the run's overrides and seed applied."""
    config = copy.deepcopy(base)
    for key, value in run.overrides:
        set_value(config, key, value)
    config.seed = run.seed
    return config


REPRESENTATION = ("fewshot", "knn")  # evaluator types whose metrics become table columns


def check_eval_sizes(config, sizes: Sequence[int]) -> None:
    """Raises ConfigError unless every eval resolution is positive and divisible by the patch size."""
    patch = models.stride(config.model, config.model_name)
    bad = [s for s in sizes if s <= 0 or s % patch]
    if bad:
        raise ConfigError(
            f"eval size(s) {bad} are not positive multiples of the patch size {patch} of "
            f"model.variant={config.model.variant!r}"
        )


# ------------------------------------------------------------------ running
def say(message: str) -> None:
    print(f"[ablate] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Optional[str]):
    """Holds an exclusive flock on `path` (as `flock PATH cmd` would), or nothing when path is None."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Also blocks forever if the sweep itself runs under `flock PATH`: say so.
            say(f"waiting for {path} (don't also run the sweep under `flock {path}`)")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def restore_final_state(config, workdir: str, abstract, shardings):
    """The train state of the run's final checkpoint (step == config.total_steps)."""
    directory = files.join(workdir, "checkpoints")
    steps = checkpoint.saved_steps(directory)
    if config.total_steps not in steps:
        raise CheckpointError(
            f"{workdir} has no final checkpoint (latest step {max(steps, default=None)}, "
            f"total_steps {config.total_steps}); rerun the sweep to finish training it"
        )
    target = shd.with_shardings(abstract, shardings)
    return checkpoint.restore(directory, config.total_steps, target)


def evaluate_sizes(config, workdir: str, sizes: Sequence[int]) -> Tuple[Dict[int, dict], int]:
    """Evaluates the run's final params at each image size; returns ({size: metrics}, #params).

    The model resizes learned position tables (and recomputes fixed ones) to the input grid at call
    time, so evaluating at another resolution only needs eval images of that size.
    """
    from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

    info = data.get_info(config.dataset, config.train_split, config.data_dir)
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    model, _, _, _, abstract, shardings = train_lib.build(
        config, config.num_classes or info.num_classes, mesh
    )
    state = restore_final_state(config, workdir, abstract, shardings)
    sized = copy.deepcopy(config)
    sized.evals = {f"px{s}": dict(image_size=s) for s in sizes}
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    put = functools.partial(shd.to_global, mesh=mesh)
    context = evaluators.Context(model, put, replicated, config.loss)
    variables = train_lib.eval_variables(state)
    by_name = {ev.name: ev for ev in evaluators.from_config(sized)}  # (sorted by name, not size)
    out = {s: by_name[f"px{s}"].run(context, variables) for s in sizes}
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    return out, int(num_params)


def images_per_second(workdir: str) -> float:
    """Median train throughput logged in metrics.jsonl (the median ignores the rows that include
    compilation, one per (re)start)."""
    rows = [r for r in read_metrics(files.join(workdir, "metrics.jsonl")) if r["split"] == "train"]
    return statistics.median(r["images_per_sec"] for r in rows) if rows else float("nan")


def run_one(base, run: Run, sweep_dir: str, eval_sizes: Sequence[int], train_fn: Callable):
    """Trains (or resumes) one run and evaluates it; returns its result, or None if it was stopped.

    A run with a result.json is skipped, after checking its saved config matches this sweep's.
    """
    config = run_config(base, run)
    workdir = files.join(sweep_dir, "runs", run.name)
    path = result_path(sweep_dir, run)
    if files.exists(path):
        check_or_write_config(workdir, config)  # a different base config in this sweep dir: error
        say(f"skip {run.name}: done ({path})")
        return json.loads(files.read_text(path))
    say(f"run {run.name} in {workdir}")
    start = time.perf_counter()
    final = train_fn(config, workdir)
    if "stopped_at" in final:
        return None
    sizes = sorted({config.image_size, *eval_sizes})
    evals, num_params = evaluate_sizes(config, workdir, sizes)
    # The frozen-representation evaluators of the config (few-shot, k-NN): their final metrics.
    names = [e.name for e in evaluators.from_config(config) if e.spec["type"] in REPRESENTATION]
    representation = {k: v for k, v in final.items() if k.split("/")[0] in names}
    result = dict(
        name=run.name, label=run.label, overrides=dict(run.overrides), seed=run.seed,
        image_size=config.image_size, total_steps=config.total_steps,
        eval={str(s): evals[s] for s in sizes}, representation=representation,
        num_params=num_params,
        images_per_sec=images_per_second(workdir), seconds=time.perf_counter() - start,
    )  # fmt: skip
    if jax.process_index() == 0:  # the other processes of a multi-host sweep write nothing
        with files.atomic_write(path) as f:
            json.dump(result, f, indent=2)
    top1 = "  ".join(f"{s}px {evals[s]['top1']:.4f}" for s in sizes)
    say(f"done {run.name}: top-1 {top1}")
    return result


def run_sweep(
    base,
    runs: Sequence[Run],
    sweep_dir: str,
    eval_sizes: Sequence[int] = (),
    train_fn: Callable = train_lib.train_and_evaluate,
    lock: Optional[str] = None,
) -> bool:
    """Runs every run not yet done, refreshing the table and plots after each; False if stopped.

    Args:
      base: the base config; each run applies its overrides and seed to a copy.
      runs: from `expand`.
      sweep_dir: the sweep directory (created).
      eval_sizes: extra eval resolutions (the training one is always evaluated).
      train_fn: `train_and_evaluate` or a stand-in with its signature (tests).
      lock: a file to flock around each run, so other heavy jobs can run between runs.

    Returns:
      True when every run is done; False when a run was stopped by SIGTERM/SIGINT (its checkpoint
      is saved: rerun to continue).
    """
    for run in runs:  # every problem up front, not an hour into the sweep
        config = run_config(base, run)
        validate(config)
        check_eval_sizes(config, eval_sizes)
    files.makedirs(sweep_dir)
    for i, run in enumerate(runs):
        say(f"[{i + 1}/{len(runs)}]")
        done = files.exists(result_path(sweep_dir, run))
        with _locked(None if done else lock):  # skipping a finished run needs no CPU
            result = run_one(base, run, sweep_dir, eval_sizes, train_fn)
        if result is None:
            say(f"stopped during {run.name}; rerun the same command to continue")
            return False
        if not done and jax.process_index() == 0:
            report(runs, sweep_dir)
    return True
