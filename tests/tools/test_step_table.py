"""scripts/step_table.py: per-step top-1 of sweep runs, pooled over seeds, and paired differences."""

import json
import os
import sys

import pytest

from tests.helpers.paths import ROOT


def _run(sweep, name, label, seed, top1, finished=True):
    run = sweep / "runs" / name
    run.mkdir(parents=True)
    rows = [{"step": 10, "split": "train", "loss": 1.0}]
    rows += [{"step": s, "split": "eval", "top1": v, "loss": 0.5} for s, v in top1.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (run / "result.json").write_text(json.dumps({"label": label, "seed": seed}))


@pytest.fixture(scope="module")
def step_table():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import step_table

    return step_table


def test_means_and_paired_differences(tmp_path, step_table):
    base, sweep = tmp_path / "scratch", tmp_path / "sweep"
    _run(base, "seed=0", "base", 0, {20: 0.50, 40: 0.80})
    _run(base, "seed=1", "base", 1, {20: 0.60, 40: 0.90})
    _run(sweep, "x=a_seed=0", "x=a", 0, {20: 0.70, 40: 0.81})
    _run(sweep, "x=a_seed=1", "x=a", 1, {20: 0.90, 40: 0.93})
    _run(sweep, "x=a_seed=2", "x=a", 2, {20: 0.10, 40: 0.10}, finished=False)  # ignored
    curves = step_table.load([f"{base}=scratch", str(sweep)])
    assert list(curves) == ["scratch", "x=a"]
    assert sorted(curves["x=a"]) == [0, 1]
    means = step_table.mean_table(curves).splitlines()
    assert means[0] == "| setting | seeds | step 20 | step 40 |"
    # scratch: mean 55.0, std of (50, 60) = 7.07; x=a: 80.0 ± 14.14 and 87.0 ± 8.49
    assert means[2] == "| scratch | 2 | 55.0 ± 7.1 | 85.0 ± 7.1 |"
    assert means[3] == "| x=a | 2 | 80.0 ± 14.1 | 87.0 ± 8.5 |"
    paired = step_table.paired_table(curves).splitlines()
    # per-seed differences: step 20 (+20, +30): +25.0 ± 7.1 (t = 5.0 < t(0.975, 1) = 12.7, not
    # bold); step 40 (+1, +3): +2.0 ± 1.4
    assert paired[2] == "| x=a − scratch | 2 | +25.0 ± 7.1 | +2.0 ± 1.4 |"


def test_a_consistent_difference_is_bold(tmp_path, step_table):
    base, sweep = tmp_path / "b", tmp_path / "s"
    for seed, (b, s) in enumerate([(0.50, 0.60), (0.60, 0.70), (0.40, 0.51)]):
        _run(base, f"seed={seed}", "base", seed, {10: b})
        _run(sweep, f"x=a_seed={seed}", "x=a", seed, {10: s})
    paired = step_table.paired_table(step_table.load([str(base), str(sweep)])).splitlines()
    # differences 10, 10, 11: +10.3 ± 0.6, t = 31 > 4.30
    assert paired[2] == "| x=a − base | 3 | **+10.3 ± 0.6** |"


def test_named_sweeps_keep_equal_settings_apart(tmp_path, step_table):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(one, "x=a_seed=0", "x=a", 0, {10: 0.5})
    _run(two, "x=a_seed=0", "x=a", 0, {10: 0.7})
    with pytest.raises(SystemExit, match="error: two runs of 'x=a' seed 0"):
        step_table.load([str(one), str(two)])
    curves = step_table.load([str(one), f"{two}=head"])
    assert curves == {"x=a": {0: {10: 50.0}}, "head, x=a": {0: {10: 70.0}}}


def test_a_sweep_without_finished_runs_is_one_error_line(tmp_path, step_table):
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match="error: no finished runs"):
        step_table.load([str(tmp_path)])
