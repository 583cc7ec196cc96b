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

import copy
import json
import math
import statistics
from typing import Dict, List, Sequence, Tuple

from vit_jax.common import files
from vit_jax.tools import ablation
from vit_jax.tools.ablation_report import load_results, pyplot
from vit_jax.train import checkpoint


def split_of(percent: float) -> str:
    """5 → "train[:5%]"."""
    return f"train[:{percent:g}%]"


def runs_of(config, fractions: Sequence[float], seeds: int) -> List[ablation.Run]:
    """The sweep of one family: every fraction at every seed (seeds the outer loop)."""
    spec = "train_split=" + ",".join(split_of(p) for p in fractions)
    return ablation.expand(config, [spec], seeds)


def run_family(
    config, family: str, sweep_dir: str, fractions, seeds: int, lock=None, teacher=None, **kw
):
    """Trains the family's missing runs; True when all are done (False: stopped, rerun).

    teacher: for a distillation family (`config.distill.kind` != "none"), the family whose run of
    the same training-set size and seed is each run's teacher (its workdir's final checkpoint).
    """
    runs = runs_of(config, fractions, seeds)
    out = files.join(sweep_dir, family)
    if teacher is None:
        return ablation.run_sweep(config, runs, out, lock=lock, **kw)
    for run in runs:  # one teacher per run: a sweep of one run each
        c = copy.deepcopy(config)
        c.distill.teacher = files.join(sweep_dir, teacher, "runs", run.name)
        ckpts = files.join(c.distill.teacher, "checkpoints")
        done = files.exists(ablation.result_path(out, run))
        if not done and not checkpoint.saved_steps(ckpts):
            ablation.say(
                f"skip {family} {run.name}: its teacher has no checkpoint in {ckpts} "
                f"(train --families={teacher} on this machine first: checkpoints are not committed)"
            )
            continue
        if not ablation.run_sweep(c, [run], out, lock=lock, **kw):
            return False
    return True


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


def paired(rows: Sequence[dict], family: str, baseline: str) -> Dict[float, dict]:
    """`family` − `baseline` top-1 (points) per training-set size, seed by seed.

    Runs of one seed see the same images in the same order, so the per-seed difference is the
    fair comparison. `significant`: a two-sided paired t-test over the common seeds gives p < 0.05
    (|mean| > t(0.975, n-1)·std/√n); never with one seed.
    """
    import scipy.stats  # noqa: PLC0415  (a dependency of jax)

    cell = {(r["family"], r["percent"]): r for r in rows}
    out = {}
    for (fam, pct), r in sorted(cell.items(), key=lambda kv: kv[0][1]):
        base = cell.get((baseline, pct))
        if fam != family or base is None:
            continue
        seeds = sorted(set(r["top1_by_seed"]) & set(base["top1_by_seed"]))
        if not seeds:
            continue
        d = [100 * (r["top1_by_seed"][s] - base["top1_by_seed"][s]) for s in seeds]
        std = statistics.stdev(d) if len(d) > 1 else math.nan
        bound = scipy.stats.t.ppf(0.975, len(d) - 1) * std / len(d) ** 0.5 if len(d) > 1 else None
        mean = statistics.fmean(d)
        out[pct] = dict(
            seeds=len(d), mean=mean, std=std, significant=bool(bound and abs(mean) > bound)
        )
    return out


def comparisons(families: Sequence[str]) -> List[Tuple[str, str]]:
    """(family, baseline) pairs of the report: every family against the CNN, then what each
    small-data method (and distillation) buys over the plain ViT."""
    pairs = [(f, "resnet") for f in families if f != "resnet" and "resnet" in families]
    plain = "vit_learn"
    return pairs + [
        (f, plain) for f in families if f not in ("resnet", plain) and plain in families
    ]


def paired_markdown(rows: Sequence[dict]) -> str:
    """The paired differences as Markdown (points, mean ± std over seeds; bold: p < 0.05)."""
    percents = sorted({r["percent"] for r in rows})
    families = list(dict.fromkeys(r["family"] for r in rows))
    lines = ["| difference (points) | " + " | ".join(f"{p:g}%" for p in percents) + " |"]
    lines.append("|" + "---|" * (1 + len(percents)))
    for fam, base in comparisons(families):
        diffs = paired(rows, fam, base)
        if not diffs:
            continue
        cells = []
        for p in percents:
            d = diffs.get(p)
            if d is None:
                cells.append("")
                continue
            text = f"{d['mean']:+.1f}" + ("" if math.isnan(d["std"]) else f" ± {d['std']:.1f}")
            cells.append((f"**{text}**" if d["significant"] else text) + f" ({d['seeds']})")
        lines.append(f"| {fam} − {base} | " + " | ".join(cells) + " |")
    note = "\nMean ± std of the per-seed differences (seeds); bold: paired t-test p < 0.05.\n"
    return "\n".join(lines) + "\n" + note


def plot(rows: Sequence[dict], path: str, train_size: int) -> None:
    """Top-1 against training images (log axis), one line per family, seed spread as error bars."""
    plt = pyplot()
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
    table = markdown(rows) + "\n" + paired_markdown(rows)
    files.write_text(files.join(sweep_dir, "summary.md"), table)
    files.write_text(files.join(sweep_dir, "summary.json"), json.dumps(rows, indent=1))
    plot(rows, files.join(sweep_dir, "scaling.png"), train_size)
    return table
