"""The data-scaling study (docs/data_efficiency.md): model families × training-set size × seeds.

Each family is one config (`configs/data_scaling.py:FAMILY`); each training-set size a
class-balanced prefix of train (`train[:P%]`: folder splits are stratified), all trained for the
same number of steps, so every size sees the same number of images (small ones more epochs). Each
family's runs are an ablation sweep over `train_split` (`vit_jax.tools.ablation`): resumable, one
result.json per finished run, finished runs skipped, so the study continues on another machine
from what is committed. The cross-family summary (`summary.md`, `summary.json`, `scaling.png`)
is rewritten after each run.

    sweep_dir/<family>/runs/<run>/result.json   one per finished run (the ablation's layout)
    sweep_dir/summary.md, summary.json, scaling.png
"""

import json
import math
import statistics
from typing import Dict, List, Sequence

from vit_jax.common import files
from vit_jax.tools import ablation
from vit_jax.tools.ablation_report import _pyplot, load_results


def split_of(percent: float) -> str:
    """5 → "train[:5%]"."""
    return f"train[:{percent:g}%]"


def runs_of(config, fractions: Sequence[float], seeds: int) -> List[ablation.Run]:
    """The sweep of one family: every fraction at every seed (seeds the outer loop)."""
    spec = "train_split=" + ",".join(split_of(p) for p in fractions)
    return ablation.expand(config, [spec], seeds)


def run_family(config, family: str, sweep_dir: str, fractions, seeds: int, lock=None, **kw):
    """Trains the family's missing runs; True when all are done (False: stopped, rerun)."""
    runs = runs_of(config, fractions, seeds)
    return ablation.run_sweep(config, runs, files.join(sweep_dir, family), lock=lock, **kw)


def _percent(split: str) -> float:
    return float(split[len("train[:") : -len("%]")])


def collect(sweep_dir: str, families: Dict[str, object], fractions, seeds: int) -> List[dict]:
    """One row per (family, fraction) with finished runs: top-1 (mean, std, per seed), few-shot
    and k-NN means, params and images/s."""
    rows = []
    for family, config in families.items():
        runs = runs_of(config, fractions, seeds)
        results = load_results(runs, files.join(sweep_dir, family))
        by_split: Dict[str, List[dict]] = {}
        for r in results:
            by_split.setdefault(r["overrides"]["train_split"], []).append(r)
        for split, rs in by_split.items():
            size = str(rs[0]["image_size"])
            top1 = {r["seed"]: r["eval"][size]["top1"] for r in rs}
            rep_keys = sorted(set.intersection(*(set(r["representation"]) for r in rs)))
            rep = {
                k: statistics.fmean(r["representation"][k] for r in rs)
                for k in rep_keys
                if k.endswith("shot") or k == "knn/top1"
            }
            values = list(top1.values())
            rows.append(
                dict(
                    family=family, percent=_percent(split), seeds=len(rs), top1_by_seed=top1,
                    top1=statistics.fmean(values),
                    top1_std=statistics.stdev(values) if len(values) > 1 else math.nan,
                    representation=rep, num_params=rs[0]["num_params"],
                    images_per_sec=statistics.fmean(r["images_per_sec"] for r in rs),
                    train_seconds=statistics.fmean(r["seconds"] for r in rs),
                )
            )  # fmt: skip
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """Top-1 (%) mean ± std per family (rows) and training-set size (columns)."""
    percents = sorted({r["percent"] for r in rows})
    families = list(dict.fromkeys(r["family"] for r in rows))
    cell = {(r["family"], r["percent"]): r for r in rows}
    head = "| family | params | images/s | " + " | ".join(f"{p:g}%" for p in percents) + " |"
    lines = [head, "|" + "---|" * (3 + len(percents))]
    for fam in families:
        any_row = next(r for r in rows if r["family"] == fam)
        cells = []
        for p in percents:
            r = cell.get((fam, p))
            if r is None:
                cells.append("")
            else:
                std = "" if math.isnan(r["top1_std"]) else f" ± {100 * r['top1_std']:.1f}"
                cells.append(f"{100 * r['top1']:.1f}{std} ({r['seeds']})")
        lines.append(
            f"| {fam} | {any_row['num_params'] / 1e6:.2f} M | {any_row['images_per_sec']:.0f} | "
            + " | ".join(cells) + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str, train_size: int) -> None:
    """Top-1 against training images (log axis), one line per family, seed spread as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for fam in dict.fromkeys(r["family"] for r in rows):
        rs = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["percent"])
        x = [train_size * r["percent"] / 100 for r in rs]
        y = [100 * r["top1"] for r in rs]
        err = [0 if math.isnan(r["top1_std"]) else 100 * r["top1_std"] for r in rs]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("training images (class-balanced subset of CIFAR-10 train)")
    ax.set_ylabel("top-1 on the test set (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.write_figure(fig, path, dpi=110)
    plt.close(fig)


def report(sweep_dir: str, families: Dict[str, object], fractions, seeds: int, train_size: int):
    """Writes summary.md, summary.json and scaling.png; returns the table (None: no runs yet)."""
    rows = collect(sweep_dir, families, fractions, seeds)
    if not rows:
        return None
    table = markdown(rows)
    files.write_text(files.join(sweep_dir, "summary.md"), table)
    files.write_text(files.join(sweep_dir, "summary.json"), json.dumps(rows, indent=1))
    plot(rows, files.join(sweep_dir, "scaling.png"), train_size)
    return table
