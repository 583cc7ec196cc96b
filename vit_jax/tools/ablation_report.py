"""The summary of an ablation sweep: top-1 mean ± std over seeds per setting and eval resolution as
table.md / table.csv, each setting's per-seed difference to the first setting with a paired t-test
as paired.md, and the plots accuracy.png, resolution.png, curves.png (see `ablation.py`)."""

import csv
import io
import json
import re
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vit_jax.common import files
from vit_jax.train.metrics_log import read_metrics

RESULT = "result.json"
TABLE_FILES = ("table.md", "table.csv", "paired.md")
PLOT_FILES = ("accuracy.png", "resolution.png", "curves.png")


def result_path(sweep_dir: str, run) -> str:
    """`sweep_dir/runs/<run.name>/result.json`: written once a run and its evals are done."""
    return files.join(sweep_dir, "runs", run.name, RESULT)


# ------------------------------------------------------------------ summary
def load_results(runs: Sequence[Any], sweep_dir: str) -> List[dict]:
    """The result.json of every finished run, in sweep order."""
    out = []
    for run in runs:
        path = result_path(sweep_dir, run)
        if files.exists(path):
            out.append(json.loads(files.read_text(path)))
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
                representation={
                    k: _mean_std([r["representation"][k] for r in rs])
                    for k in _representation_keys(rs)
                },
            )
        )  # fmt: skip
    return rows


def _representation_keys(results: Sequence[dict]) -> List[str]:
    """Few-shot and k-NN accuracies every run of a setting has ("fewshot/5shot", "knn/top1")."""
    common = set.intersection(*(set(r.get("representation", {})) for r in results))
    return sorted((k for k in common if not k.endswith(("_std", "_l2", "/count"))), key=_natural)


def _natural(key: str):
    """ "fewshot/5shot" before "fewshot/10shot": numbers compared as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" + ("" if std != std else f" ± {100 * std:.1f}")  # std != std: NaN


def _all_sizes(rows: Sequence[dict]) -> List[int]:
    return sorted({s for r in rows for s in r["top1"]})


def _all_representation(rows: Sequence[dict]) -> List[str]:
    return sorted({k for r in rows for k in r.get("representation", {})}, key=_natural)


def markdown_table(rows: Sequence[dict]) -> str:
    """Top-1 (%) mean ± std over seeds per setting and eval resolution; "(train)" marks the training size."""
    sizes, keys = _all_sizes(rows), list(rows[0]["overrides"]) if rows else []
    train_sizes = {r["train_size"] for r in rows}
    size_cols = [f"top-1 @{s}" + (" (train)" if s in train_sizes else "") for s in sizes]
    rep = _all_representation(rows)
    header = keys + ["seeds", "params", "images/s"] + size_cols + rep
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["overrides"][k]) for k in keys]
        cells += [str(r["seeds"]), f"{r['num_params']:,}", f"{r['images_per_sec']:.0f}"]
        cells += [_pct(*r["top1"][s]) if s in r["top1"] else "" for s in sizes]
        cells += [_pct(*r["representation"][k]) if k in r["representation"] else "" for k in rep]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str) -> None:
    """The table with full precision: one top1_mean_<size> and top1_std_<size> column per size."""
    sizes, keys = _all_sizes(rows), list(rows[0]["overrides"]) if rows else []
    header = keys + ["seeds", "num_params", "images_per_sec", "train_size"]
    header += [f"top1_{stat}_{s}" for s in sizes for stat in ("mean", "std")]
    rep = _all_representation(rows)
    header += [f"{k}_{stat}" for k in rep for stat in ("mean", "std")]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(header)
    for r in rows:
        cells = [r["overrides"][k] for k in keys]
        cells += [r["seeds"], r["num_params"], round(r["images_per_sec"], 1), r["train_size"]]
        for s in sizes:
            cells += [f"{v:.6f}" if v == v else "" for v in r["top1"].get(s, ("", ""))]
        for k in rep:
            cells += [f"{v:.6f}" if v == v else "" for v in r["representation"].get(k, ("", ""))]
        w.writerow(cells)
    files.write_text(path, f.getvalue())


# ------------------------------------------------------------------ paired differences
def _metrics_of(result: dict) -> Dict[str, float]:
    """{"top-1 @32": %, "fewshot/5shot": %, ...} of one run."""
    sizes = sorted(result["eval"], key=int)
    out = {f"top-1 @{s}": 100 * result["eval"][s]["top1"] for s in sizes}
    keys = sorted(_representation_keys([result]), key=_natural)
    out.update({k: 100 * result["representation"][k] for k in keys})
    return out


def paired_differences(results: Sequence[dict]) -> List[dict]:
    """Each setting minus the first setting, seed by seed, per metric (percentage points).

    Runs of the same seed share their batches and the initialisation of the common layers, so the
    per-seed difference is the fair comparison. A difference is `significant` when a two-sided paired
    t-test over the seeds both settings finished gives p < 0.05 (|mean| > t(0.975, n-1)·std/√n).

    Returns:
      [{label, seeds, diffs: {metric: (mean, std, significant)}}], settings in sweep order after
      the first; an empty list with fewer than two settings.
    """
    import scipy.stats  # noqa: PLC0415  (a dependency of jax)

    groups: Dict[str, Dict[int, dict]] = {}
    for r in results:
        groups.setdefault(r["label"], {})[r["seed"]] = _metrics_of(r)
    labels = list(groups)
    if len(labels) < 2:
        return []
    base = groups[labels[0]]
    rows = []
    for label in labels[1:]:
        seeds = sorted(set(groups[label]) & set(base))
        metrics = (
            [m for m in base[seeds[0]] if all(m in groups[label][s] for s in seeds)]
            if seeds
            else []
        )
        diffs = {}
        for m in metrics:
            d = [groups[label][s][m] - base[s][m] for s in seeds]
            mean, std = _mean_std(d)
            bound = (
                scipy.stats.t.ppf(0.975, len(d) - 1) * std / len(d) ** 0.5 if len(d) > 1 else None
            )
            diffs[m] = (mean, std, bound is not None and abs(mean) > bound)
        rows.append(dict(label=label, seeds=len(seeds), diffs=diffs))
    return rows


def paired_markdown(rows: Sequence[dict], baseline: str) -> str:
    """The paired differences as Markdown: mean ± std points, significant ones in bold."""
    metrics = list(dict.fromkeys(m for r in rows for m in r["diffs"]))
    header = ["setting", "seeds"] + [f"{m} − {baseline}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["label"], str(r["seeds"])]
        for m in metrics:
            if m not in r["diffs"]:
                cells.append("")
                continue
            mean, std, significant = r["diffs"][m]
            text = f"{mean:+.1f}" + (f" ± {std:.1f}" if std == std else "")  # NaN: one seed
            cells.append(f"**{text}**" if significant else text)
        lines.append("| " + " | ".join(cells) + " |")
    note = "\nPoints, mean ± std of the per-seed differences; bold: paired t-test p < 0.05.\n"
    return "\n".join(lines) + "\n" + note


def pyplot():
    import matplotlib  # noqa: PLC0415  (heavy, only for the plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _err(std: float) -> float:
    return 0.0 if std != std else 100 * std


def plot_accuracy(rows: Sequence[dict], path: str) -> None:
    """Bar chart: top-1 at the training resolution per setting, error bars = std over seeds."""
    plt = pyplot()
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
    files.write_figure(fig, path, dpi=90)
    plt.close(fig)


def plot_resolution(rows: Sequence[dict], path: str) -> None:
    """Top-1 against eval resolution, one line per setting; the dotted line marks the training size."""
    plt = pyplot()
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
    files.write_figure(fig, path, dpi=90)
    plt.close(fig)


def _train_curve(workdir: str, metric: str) -> Dict[int, float]:
    """{step: value} of the train rows (a resumed run logs some steps twice: the last one counts)."""
    path = files.join(workdir, "metrics.jsonl")
    rows = read_metrics(path) if files.exists(path) else []
    return {r["step"]: r[metric] for r in rows if r["split"] == "train"}


def _moving_average(values: Sequence[float], window: int) -> List[float]:
    """Trailing mean over `window` values (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def train_curves(
    runs: Sequence[Any], sweep_dir: str, metric: str = "loss", window: int = 8, results=None
) -> Dict[str, dict]:
    """Train `metric` per setting, and its paired difference to the sweep's first (finished) setting.

    Every setting of a sweep sees the same batches at the same step of a seed, so the batch-to-batch
    noise of a logged train metric is common to all of them; the difference to the first setting at
    the same step and seed cancels it. Both are averaged over the setting's finished seeds (only the
    steps every one of them logged) and smoothed by a trailing mean over `window` logs.

    Returns:
      {label: {"steps": [...], "mean": [...], "diff": [...] or None (no seed in common with the
      baseline)}}, labels in sweep order; the first label is the baseline (its diff is 0).
      `results`: the finished runs' results if already loaded (default: read them).
    """
    results = load_results(runs, sweep_dir) if results is None else results
    done = {r["name"] for r in results}
    by_label: Dict[str, Dict[int, Dict[int, float]]] = {}
    for run in runs:
        if run.name in done:
            curve = _train_curve(files.join(sweep_dir, "runs", run.name), metric)
            by_label.setdefault(run.label, {})[run.seed] = curve
    if not by_label:
        return {}
    base = next(iter(by_label.values()))
    out = {}
    for label, seeds in by_label.items():
        paired = [seed for seed in seeds if seed in base]
        curves = list(seeds.values()) + [base[seed] for seed in paired]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        mean = [statistics.fmean(c[s] for c in seeds.values()) for s in steps]
        diff = None
        if paired:
            diff = [statistics.fmean(seeds[k][s] - base[k][s] for k in paired) for s in steps]
            diff = _moving_average(diff, window)
        out[label] = dict(steps=steps, mean=_moving_average(mean, window), diff=diff)
    return out


def plot_curves(
    runs: Sequence[Any], sweep_dir: str, path: str, window: int = 8, results=None
) -> None:
    """Train loss per setting (mean over seeds), and its paired difference to the first setting."""
    plt = pyplot()
    curves = train_curves(runs, sweep_dir, "loss", window, results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    base = next(iter(curves), "")
    for label, c in curves.items():
        axes[0].plot(c["steps"], c["mean"], label=label)
        if c["diff"] is not None:
            axes[1].plot(c["steps"], c["diff"], label=label)
    axes[0].set_title(f"train loss (mean over seeds, trailing mean of {window} logs)")
    axes[1].set_title(f"train loss minus {base}'s (same seed and step)")
    axes[1].axhline(0.0, color="black", linewidth=0.6)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    files.write_figure(fig, path, dpi=90)
    plt.close(fig)


def report(runs: Sequence[Any], sweep_dir: str) -> Optional[str]:
    """Writes table.md, table.csv and the PNG plots for the finished runs; returns the Markdown table."""
    results = load_results(runs, sweep_dir)
    rows = summarize(results)
    if not rows:
        return None
    table = markdown_table(rows)
    files.write_text(files.join(sweep_dir, "table.md"), table)
    paired = paired_differences(results)
    if paired:
        files.write_text(
            files.join(sweep_dir, "paired.md"), paired_markdown(paired, rows[0]["label"])
        )
    write_csv(rows, files.join(sweep_dir, "table.csv"))
    plot_accuracy(rows, files.join(sweep_dir, "accuracy.png"))
    plot_resolution(rows, files.join(sweep_dir, "resolution.png"))
    plot_curves(runs, sweep_dir, files.join(sweep_dir, "curves.png"), results=results)
    return table
