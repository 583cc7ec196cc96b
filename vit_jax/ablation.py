"""Ablation sweeps: train every combination of swept config values × seeds, evaluate each run at
several resolutions, and summarise the sweep as a table and plots.

    from vit_jax import ablation
    runs = ablation.expand(config, ["model.posemb=none,learn,rope2d"], seeds=2)
    ablation.run_sweep(config, runs, "/tmp/sweep", eval_sizes=(24, 40, 48))

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
import csv
import dataclasses
import fcntl
import functools
import itertools
import json
import os
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

from vit_jax import sharding as shd
from vit_jax import train as train_lib
from vit_jax import train_step as ts
from vit_jax.checkpointing import Checkpointer, CheckpointError, check_or_write_config
from vit_jax.config_validate import ConfigError, create_model_from_config, validate
from vit_jax.metrics_log import read_metrics

RESULT = "result.json"
TABLE_FILES = ("table.md", "table.csv")
PLOT_FILES = ("accuracy.png", "resolution.png", "curves.png")
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
            f"cannot sweep unknown config key {key!r}; see vit_jax/config_defaults.py"
        )
    return node, last


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
        node, last = _parent(config, key)
        node[last] = value
    config.seed = run.seed
    return config


def check_eval_sizes(config, sizes: Sequence[int]) -> None:
    """Raises ConfigError unless every eval resolution is positive and divisible by the patch size."""
    patch = create_model_from_config(config, num_classes=2).patch_size[0]
    bad = [s for s in sizes if s <= 0 or s % patch]
    if bad:
        raise ConfigError(
            f"eval size(s) {bad} are not positive multiples of the patch size {patch} of "
            f"model.variant={config.model.variant!r}"
        )


# ------------------------------------------------------------------ running
def _say(message: str) -> None:
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
            _say(f"waiting for {path} (don't also run the sweep under `flock {path}`)")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # a reader (or a killed sweep) never sees half a file


def restore_final_state(config, workdir: str, abstract, shardings):
    """The train state of the run's final checkpoint (step == config.total_steps)."""
    ckpt = Checkpointer(workdir, config.keep_checkpoints, async_save=False)
    try:
        step = ckpt.latest_step()
        if step != config.total_steps:
            raise CheckpointError(
                f"{workdir} has no final checkpoint (latest step {step}, total_steps "
                f"{config.total_steps}); rerun the sweep to finish training it"
            )
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        return ckpt.restore(target, step)
    finally:
        ckpt.close()


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
    eval_fn = jax.jit(functools.partial(ts.eval_step, model=model, loss_name=config.loss))
    out = {}
    for size in sizes:
        resized = copy.deepcopy(config)
        resized.image_size = size
        out[size] = train_lib.evaluate(eval_fn, state, data.eval_iterator(resized), mesh)
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    return out, int(num_params)


def images_per_second(workdir: str) -> float:
    """Median train throughput logged in metrics.jsonl (the median ignores the rows that include
    compilation, one per (re)start)."""
    rows = [
        r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"
    ]
    return statistics.median(r["images_per_sec"] for r in rows) if rows else float("nan")


def result_path(sweep_dir: str, run: Run) -> str:
    return os.path.join(sweep_dir, "runs", run.name, RESULT)


def run_one(base, run: Run, sweep_dir: str, eval_sizes: Sequence[int], train_fn: Callable):
    """Trains (or resumes) one run and evaluates it; returns its result, or None if it was stopped.

    A run with a result.json is skipped, after checking its saved config matches this sweep's.
    """
    config = run_config(base, run)
    workdir = os.path.join(sweep_dir, "runs", run.name)
    path = result_path(sweep_dir, run)
    if os.path.exists(path):
        check_or_write_config(workdir, config)  # a different base config in this sweep dir: error
        _say(f"skip {run.name}: done ({path})")
        with open(path) as f:
            return json.load(f)
    _say(f"run {run.name} in {workdir}")
    start = time.perf_counter()
    final = train_fn(config, workdir)
    if "stopped_at" in final:
        return None
    sizes = sorted({config.image_size, *eval_sizes})
    evals, num_params = evaluate_sizes(config, workdir, sizes)
    result = dict(
        name=run.name, label=run.label, overrides=dict(run.overrides), seed=run.seed,
        image_size=config.image_size, total_steps=config.total_steps,
        eval={str(s): evals[s] for s in sizes}, num_params=num_params,
        images_per_sec=images_per_second(workdir), seconds=time.perf_counter() - start,
    )  # fmt: skip
    _write_json_atomic(path, result)
    top1 = "  ".join(f"{s}px {evals[s]['top1']:.4f}" for s in sizes)
    _say(f"done {run.name}: top-1 {top1}")
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
    os.makedirs(sweep_dir, exist_ok=True)
    for i, run in enumerate(runs):
        _say(f"[{i + 1}/{len(runs)}]")
        done = os.path.exists(result_path(sweep_dir, run))
        with _locked(None if done else lock):  # skipping a finished run needs no CPU
            result = run_one(base, run, sweep_dir, eval_sizes, train_fn)
        if result is None:
            _say(f"stopped during {run.name}; rerun the same command to continue")
            return False
        if not done:
            report(runs, sweep_dir)
    return True


# ------------------------------------------------------------------ summary
def load_results(runs: Sequence[Run], sweep_dir: str) -> List[dict]:
    """The result.json of every finished run, in sweep order."""
    out = []
    for run in runs:
        path = result_path(sweep_dir, run)
        if os.path.exists(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.fmean(values), std


def summarize(results: Sequence[dict]) -> List[dict]:
    """One row per setting (label), in sweep order: seeds, params, images/s, top-1 mean/std per size.

    Returns:
      dicts with label, overrides, seeds, num_params, images_per_sec, train_size, and
      top1 {size: (mean, std)} for every size all of the setting's runs were evaluated at.
    """
    groups: Dict[str, List[dict]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    rows = []
    for label, rs in groups.items():
        sizes = sorted(set.intersection(*(set(map(int, r["eval"])) for r in rs)))
        rows.append(
            dict(
                label=label, overrides=rs[0]["overrides"], seeds=len(rs),
                num_params=rs[0]["num_params"], train_size=rs[0]["image_size"],
                images_per_sec=statistics.fmean(r["images_per_sec"] for r in rs),
                top1={s: _mean_std([r["eval"][str(s)]["top1"] for r in rs]) for s in sizes},
            )
        )  # fmt: skip
    return rows


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" + ("" if std != std else f" ± {100 * std:.1f}")  # std != std: NaN


def _all_sizes(rows: Sequence[dict]) -> List[int]:
    return sorted({s for r in rows for s in r["top1"]})


def markdown_table(rows: Sequence[dict]) -> str:
    """Top-1 (%) mean ± std over seeds per setting and eval resolution; "(train)" marks the training size."""
    sizes, keys = _all_sizes(rows), list(rows[0]["overrides"]) if rows else []
    train_sizes = {r["train_size"] for r in rows}
    size_cols = [f"top-1 @{s}" + (" (train)" if s in train_sizes else "") for s in sizes]
    header = keys + ["seeds", "params", "images/s"] + size_cols
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["overrides"][k]) for k in keys]
        cells += [str(r["seeds"]), f"{r['num_params']:,}", f"{r['images_per_sec']:.0f}"]
        cells += [_pct(*r["top1"][s]) if s in r["top1"] else "" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str) -> None:
    """The table with full precision: one top1_mean_<size> and top1_std_<size> column per size."""
    sizes, keys = _all_sizes(rows), list(rows[0]["overrides"]) if rows else []
    header = keys + ["seeds", "num_params", "images_per_sec", "train_size"]
    header += [f"top1_{stat}_{s}" for s in sizes for stat in ("mean", "std")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            cells = [r["overrides"][k] for k in keys]
            cells += [r["seeds"], r["num_params"], round(r["images_per_sec"], 1), r["train_size"]]
            for s in sizes:
                cells += [f"{v:.6f}" if v == v else "" for v in r["top1"].get(s, ("", ""))]
            w.writerow(cells)


def _pyplot():
    import matplotlib  # noqa: PLC0415  (heavy, only for the plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _err(std: float) -> float:
    return 0.0 if std != std else 100 * std


def plot_accuracy(rows: Sequence[dict], path: str) -> None:
    """Bar chart: top-1 at the training resolution per setting, error bars = std over seeds."""
    plt = _pyplot()
    means = [100 * r["top1"][r["train_size"]][0] for r in rows]
    errs = [_err(r["top1"][r["train_size"]][1]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6))
    ax.bar(range(len(rows)), means, yerr=errs, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=20, ha="right")
    lo = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0.0, lo - 5), min(100.0, max(m + e for m, e in zip(means, errs)) + 2))
    ax.set_ylabel(f"top-1 % @{rows[0]['train_size']}px (mean ± std)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_resolution(rows: Sequence[dict], path: str) -> None:
    """Top-1 against eval resolution, one line per setting; the dotted line marks the training size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in rows:
        sizes = sorted(r["top1"])
        ax.errorbar(
            sizes, [100 * r["top1"][s][0] for s in sizes], [_err(r["top1"][s][1]) for s in sizes],
            marker="o", capsize=3, label=r["label"],
        )  # fmt: skip
    for size in {r["train_size"] for r in rows}:
        ax.axvline(size, color="gray", linestyle=":")
    ax.set_xlabel("eval resolution (px)")
    ax.set_ylabel("top-1 % (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _train_curve(workdir: str, metric: str) -> Dict[int, float]:
    """{step: value} of the train rows (a resumed run logs some steps twice: the last one counts)."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows = read_metrics(path) if os.path.exists(path) else []
    return {r["step"]: r[metric] for r in rows if r["split"] == "train"}


def plot_curves(runs: Sequence[Run], sweep_dir: str, path: str) -> None:
    """Train loss and train accuracy against step, averaged over each setting's finished seeds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    done = {r["name"] for r in load_results(runs, sweep_dir)}
    labels = list(dict.fromkeys(run.label for run in runs))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for label in labels:
            workdirs = [
                os.path.join(sweep_dir, "runs", run.name)
                for run in runs
                if run.label == label and run.name in done
            ]
            curves = [_train_curve(w, metric) for w in workdirs]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if steps:
                means = [statistics.fmean(c[s] for c in curves) for s in steps]
                ax.plot(steps, means, marker=".", markersize=3, label=label)
        ax.set_title(f"train {metric} (mean over seeds)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(runs: Sequence[Run], sweep_dir: str) -> Optional[str]:
    """Writes table.md, table.csv and the PNG plots for the finished runs; returns the Markdown table."""
    rows = summarize(load_results(runs, sweep_dir))
    if not rows:
        return None
    table = markdown_table(rows)
    with open(os.path.join(sweep_dir, "table.md"), "w") as f:
        f.write(table)
    write_csv(rows, os.path.join(sweep_dir, "table.csv"))
    plot_accuracy(rows, os.path.join(sweep_dir, "accuracy.png"))
    plot_resolution(rows, os.path.join(sweep_dir, "resolution.png"))
    plot_curves(runs, sweep_dir, os.path.join(sweep_dir, "curves.png"))
    return table
