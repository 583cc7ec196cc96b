"""Test top-1 at every evaluation step of finished ablation runs, pooled over seeds, and each
setting's per-seed (paired) difference to the first setting, from one or more sweep directories.

  python scripts/step_table.py docs/video/scratch_direction=scratch docs/video/inflation_direction

Each argument is a sweep directory of `scripts/ablate.py`, optionally `=NAME`: then its runs without
swept keys are labelled NAME (else "base") and the others "NAME, <setting>" (two sweeps with the same
settings need names). A run counts once its result.json exists; its curve is the
"eval" rows of its metrics.jsonl. Prints two Markdown tables: mean ± std over seeds per step, and
mean ± std of the per-seed differences to the first setting (bold: paired t-test p < 0.05, as the
harness's paired.md), over the seeds both settings finished.
"""

import glob
import json
import os
import statistics
import sys
from typing import Dict, List, Tuple

Curves = Dict[str, Dict[int, Dict[int, float]]]  # label -> seed -> step -> top-1 (%)


def load(args: List[str]) -> Curves:
    curves: Curves = {}
    for arg in args:
        sweep, _, name = arg.partition("=")
        results = sorted(glob.glob(os.path.join(sweep, "runs", "*", "result.json")))
        if not results:
            raise SystemExit(f"error: no finished runs (runs/*/result.json) in {sweep}")
        for path in results:
            with open(path) as f:
                result = json.load(f)
            label = result["label"]
            if name:
                label = name if label == "base" else f"{name}, {label}"
            if result["seed"] in curves.get(label, {}):
                raise SystemExit(
                    f"error: two runs of {label!r} seed {result['seed']} (another sweep has the "
                    f"same setting); name the sweeps, e.g. {sweep}=NAME"
                )
            steps = {}
            with open(os.path.join(os.path.dirname(path), "metrics.jsonl")) as f:
                for line in f:
                    row = json.loads(line)
                    if row.get("split") == "eval" and "top1" in row:
                        steps[row["step"]] = 100 * row["top1"]
            curves.setdefault(label, {})[result["seed"]] = steps
    return curves


def _mean_std(values: List[float]) -> Tuple[float, float]:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.fmean(values), std


def _steps(curves: Curves) -> List[int]:
    sets = [set(s) for seeds in curves.values() for s in seeds.values()]
    return sorted(set.intersection(*sets))


def _row(cells: List[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def mean_table(curves: Curves) -> str:
    steps = _steps(curves)
    lines = [_row(["setting", "seeds"] + [f"step {s}" for s in steps])]
    lines.append("|" + "---|" * (len(steps) + 2))
    for label, seeds in curves.items():
        cells = []
        for s in steps:
            mean, std = _mean_std([c[s] for c in seeds.values()])
            cells.append(f"{mean:.1f}" + (f" ± {std:.1f}" if std == std else ""))
        lines.append(_row([label, str(len(seeds))] + cells))
    return "\n".join(lines)


def paired_table(curves: Curves) -> str:
    import scipy.stats  # noqa: PLC0415  (a dependency of jax)

    steps = _steps(curves)
    labels = list(curves)
    base = curves[labels[0]]
    lines = [_row(["setting", "seeds"] + [f"step {s}" for s in steps])]
    lines.append("|" + "---|" * (len(steps) + 2))
    for label in labels[1:]:
        seeds = sorted(set(curves[label]) & set(base))
        cells = []
        for s in steps:
            d = [curves[label][k][s] - base[k][s] for k in seeds]
            mean, std = _mean_std(d)
            text = f"{mean:+.1f}" + (f" ± {std:.1f}" if std == std else "")
            bound = scipy.stats.t.ppf(0.975, len(d) - 1) * std / len(d) ** 0.5
            cells.append(f"**{text}**" if len(d) > 1 and abs(mean) > bound else text)
        lines.append(_row([f"{label} − {labels[0]}", str(len(seeds))] + cells))
    return "\n".join(lines)


def main(argv: List[str]) -> None:
    if not argv:
        raise SystemExit("usage: python scripts/step_table.py SWEEP_DIR[=NAME] [SWEEP_DIR ...]")
    curves = load(argv)
    print("Test top-1 (%), mean ± std over seeds:\n")
    print(mean_table(curves))
    if len(curves) > 1:
        print(
            "\nPaired differences (points), mean ± std over seeds; bold: paired t-test p < 0.05:\n"
        )
        print(paired_table(curves))


if __name__ == "__main__":
    main(sys.argv[1:])
