"""Ablation sweeps: typed sweep parsing, grid expansion, a tiny real sweep that is interrupted,
resumed and then skipped, its multi-resolution evals, table and plots."""

import csv
import fcntl
import functools
import json
import os

import pytest

from tests.helpers.tiny import tiny_config
from vit_jax import train as train_lib
from vit_jax.config import ConfigError
from vit_jax.tools import ablation, ablation_report


def test_sweep_values_are_parsed_to_the_key_type():
    c = tiny_config()
    assert ablation.parse_sweep(c, "model.posemb=none,learn") == ("model.posemb", ["none", "learn"])
    assert ablation.parse_sweep(c, "lr=1e-3,0.01")[1] == [0.001, 0.01]
    assert ablation.parse_sweep(c, "batch_size=8,16")[1] == [8, 16]
    assert ablation.parse_sweep(c, "model.qk_norm=true,False")[1] == [True, False]
    # Keys whose default is None are typed by their reference; "none" keeps the default.
    assert ablation.parse_sweep(c, "model.layer_scale=none,1e-4")[1] == [None, 1e-4]
    assert ablation.key_type(c, "model.layer_scale") is float and c.model.layer_scale is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("model.posemb", "should look like KEY=V1,V2"),
        ("model.posmeb=none", "unknown config key 'model.posmeb'"),
        ("model.depth=two", "--sweep model.depth='two': expected a int"),
        ("model.qk_norm=maybe", "expected a bool"),
        ("aug.mean=0.5", "cannot sweep aug.mean: its values are tuples"),
        ("seed=1,2", "--seeds=N"),
    ],
)
def test_bad_sweeps_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        ablation.expand(tiny_config(), [spec])


def test_grid_expansion_puts_seeds_outermost():
    c = tiny_config(seed=5)
    runs = ablation.expand(c, ["model.posemb=none,learn", "lr=0.1,0.2,0.3"], seeds=2)
    assert len(runs) == 12 and len({r.name for r in runs}) == 12
    assert [r.seed for r in runs] == [5] * 6 + [6] * 6
    assert runs[1].overrides == (("model.posemb", "none"), ("lr", 0.2))
    assert runs[1].label == "posemb=none, lr=0.2"
    assert runs[1].name == "model.posemb=none_lr=0.2_seed=5"
    config = ablation.run_config(c, runs[7])
    assert (config.model.posemb, config.lr, config.seed) == ("none", 0.2, 6)
    assert c.model.posemb == "learn" and c.seed == 5  # the base is untouched


def test_eval_sizes_must_fit_the_patch_size():
    with pytest.raises(ConfigError, match=r"eval size\(s\) \[10\] .* patch size 4"):
        ablation.run_sweep(
            tiny_config(), ablation.expand(tiny_config(), []), "/nonexistent", [12, 10]
        )


def _stop_at_2(config, workdir):
    return train_lib.train_and_evaluate(config, workdir, stop_at=2)


def _must_not_train(config, workdir):
    raise AssertionError(f"trained {workdir} again")


def test_tiny_sweep_resumes_skips_and_reports(tmp_path, capsys):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=120, total_steps=4)
    c.eval_every = 0
    c.evals.eval = dict(type="classification")  # the default, named; and the representation's
    c.evals.fewshot = dict(type="fewshot", shots=(1, 5), seeds=1)
    c.evals.knn = dict(type="knn")
    runs = ablation.expand(c, ["model.posemb=none,learn"], seeds=1)
    sweep = str(tmp_path)
    run_dir = functools.partial(os.path.join, sweep, "runs")
    result_path = lambda run: run_dir(run.name, ablation_report.RESULT)

    # A sweep stopped (as by SIGTERM) in its first run stops there, without a result.
    assert not ablation.run_sweep(c, runs, sweep, [12], train_fn=_stop_at_2)
    assert not os.path.exists(result_path(runs[0])) and not os.path.exists(run_dir(runs[1].name))

    # The same sweep again resumes that run from its step-2 checkpoint and runs the other.
    assert ablation.run_sweep(c, runs, sweep, [12])
    assert "resumed from step 2" in capsys.readouterr().err
    results = [json.load(open(result_path(r))) for r in runs]
    for r in results:
        assert sorted(r["eval"]) == ["12", "8"] and r["total_steps"] == 4
        assert all(e["count"] == 360 and 0 <= e["top1"] <= 1 for e in r["eval"].values())
        assert r["images_per_sec"] > 0
    # "learn" adds a [1 + 2*2, 16] table (CLS slot + 2x2 patch grid) to the same model.
    assert results[1]["num_params"] - results[0]["num_params"] == 5 * 16
    # The restore-and-evaluate path agrees with the trainer's own final eval.
    again, _ = ablation.evaluate_sizes(ablation.run_config(c, runs[0]), run_dir(runs[0].name), [8])
    assert again[8]["top1"] == pytest.approx(results[0]["eval"]["8"]["top1"])

    # Table and plots: one row per scheme, a column per eval resolution.
    md = open(tmp_path / "table.md").read().splitlines()
    assert md[0] == (
        "| model.posemb | seeds | params | images/s | top-1 @8 (train) | top-1 @12 "
        "| fewshot/1shot | fewshot/5shot | knn/top1 |"
    )
    for r in results:  # the run's final few-shot and k-NN metrics, as its metrics.jsonl has them
        rows = [json.loads(x) for x in open(run_dir(r["name"], "metrics.jsonl"))]
        knn = [x for x in rows if x["split"] == "knn"][-1]
        assert r["representation"]["knn/top1"] == knn["top1"]
        assert 0 < r["representation"]["fewshot/5shot"] <= 1
    assert [line.split(" | ")[0] for line in md[2:]] == ["| none", "| learn"]
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [r["model.posemb"] for r in rows] == ["none", "learn"]
    assert float(rows[1]["top1_mean_12"]) == pytest.approx(
        results[1]["eval"]["12"]["top1"], abs=1e-6
    )
    assert rows[0]["top1_std_8"] == ""  # one seed: no spread to report
    for name in ablation_report.PLOT_FILES:
        assert (tmp_path / name).stat().st_size > 5_000

    # A third time every run is skipped: not trained, result files untouched, and the CPU lock is
    # not needed (here another holder has it, e.g. the sweep itself was started under `flock`).
    stamps = [os.stat(result_path(r)).st_mtime_ns for r in runs]
    with open(tmp_path / "cpu.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        lock = str(tmp_path / "cpu.lock")
        assert ablation.run_sweep(c, runs, sweep, [12], train_fn=_must_not_train, lock=lock)
    assert capsys.readouterr().err.count("[ablate] skip ") == 2
    assert [os.stat(result_path(r)).st_mtime_ns for r in runs] == stamps


def test_finished_runs_refuse_a_different_base_config(tmp_path):
    c = tiny_config(dataset="digits")
    run = ablation.expand(c, [])[0]
    workdir = tmp_path / "runs" / run.name
    workdir.mkdir(parents=True)
    from vit_jax.train.checkpoint import CheckpointError, check_or_write_config

    check_or_write_config(str(workdir), ablation.run_config(c, run))
    (workdir / ablation_report.RESULT).write_text("{}")
    with pytest.raises(CheckpointError, match=r"different config \(lr: 0.01 -> 0.5\)"):
        ablation.run_one(tiny_config(dataset="digits", lr=0.5), run, str(tmp_path), [], None)


def test_train_curves_average_seeds_and_pair_with_the_first_setting(tmp_path):
    """Paired differences cancel what both settings share at a step (the batch): written curves."""
    runs = ablation.expand(tiny_config(), ["model.posemb=none,learn"], 2)
    batch_noise = {0: [0.3, -0.2, 0.5, 0.0], 1: [-0.1, 0.4, 0.0, 0.2]}
    for run in runs:
        workdir = tmp_path / "runs" / run.name
        workdir.mkdir(parents=True)
        gain = 0.0 if "none" in run.label else 0.1 * (1 + run.seed)  # learn: 0.1 / 0.2 lower
        lines = [
            json.dumps(dict(step=25 * (i + 1), split="train", loss=2.0 - 0.1 * i + n - gain))
            for i, n in enumerate(batch_noise[run.seed])
        ]
        if run.seed == 1 and "learn" in run.label:
            lines.append(json.dumps(dict(step=25, split="train", loss=9.0)))  # resumed: last counts
            lines = lines[1:] + [json.dumps(dict(step=25, split="knn", top1=0.5))]
            lines.insert(0, json.dumps(dict(step=25, split="train", loss=5.0)))
        (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (workdir / ablation_report.RESULT).write_text(json.dumps(dict(name=run.name)))
    curves = ablation_report.train_curves(runs, str(tmp_path), "loss", window=2)
    assert list(curves) == ["posemb=none", "posemb=learn"]
    none, learn = curves["posemb=none"], curves["posemb=learn"]
    assert none["steps"] == learn["steps"] == [25, 50, 75, 100]
    raw_none = [2.0 - 0.1 * i + (batch_noise[0][i] + batch_noise[1][i]) / 2 for i in range(4)]
    smoothed = [raw_none[0]] + [(raw_none[i - 1] + raw_none[i]) / 2 for i in range(1, 4)]
    assert none["mean"] == pytest.approx(smoothed)
    assert none["diff"] == pytest.approx([0.0] * 4)
    # learn seed 1 logged 9.0 last at step 25 (none: 1.9), seed 0 is 0.1 below none: the mean
    first = (-0.1 + (9.0 - (2.0 - 0.1))) / 2
    assert learn["diff"][0] == pytest.approx(first)
    assert learn["diff"][2:] == pytest.approx([-0.15, -0.15])  # the batch noise cancels


def test_paired_differences_and_their_t_test():
    """Per-seed differences to the first setting; bold exactly where scipy's paired t-test has p < .05."""
    import numpy as np
    import scipy.stats

    schemes = dict(
        none=[0.40, 0.45, 0.50], a=[0.42, 0.475, 0.52], b=[0.43, 0.44, 0.53], c=[0.41, 0.47]
    )
    knn = lambda v, seed: v + 0.1 * seed - 0.01 * seed**2
    results = [
        dict(
            name=f"{k}_{seed}", label=f"posemb={k}", seed=seed,
            eval={"8": dict(top1=v), "12": dict(top1=v / 2)},
            representation={"knn/top1": knn(v, seed)} if k != "c" else {},
        )
        for k, values in schemes.items()
        for seed, v in enumerate(values)
    ]  # fmt: skip
    rows = ablation_report.paired_differences(results)
    assert [(r["label"], r["seeds"]) for r in rows] == [
        ("posemb=a", 3), ("posemb=b", 3), ("posemb=c", 2)
    ]  # fmt: skip
    assert list(rows[0]["diffs"]) == ["top-1 @8", "top-1 @12", "knn/top1"]
    assert list(rows[2]["diffs"]) == ["top-1 @8", "top-1 @12"]  # c has no k-NN
    assert rows[1]["diffs"]["top-1 @8"][:2] == pytest.approx((5 / 3, np.std([3, -1, 3], ddof=1)))
    significant = 0
    for row in rows:
        ours = np.array(schemes[row["label"][len("posemb=") :]])
        base = np.array(schemes["none"][: len(ours)])
        seeds = np.arange(len(ours))
        expected = {
            "top-1 @8": (100 * ours, 100 * base),
            "top-1 @12": (50 * ours, 50 * base),
            "knn/top1": (100 * knn(ours, seeds), 100 * knn(base, seeds)),
        }
        for metric, (mean, std, sig) in row["diffs"].items():
            x, y = expected[metric]
            assert mean == pytest.approx(np.mean(x - y)) and std == pytest.approx(
                np.std(x - y, ddof=1)
            )
            assert sig == bool(scipy.stats.ttest_rel(x, y).pvalue < 0.05), (row["label"], metric)
            significant += sig
    assert 0 < significant < 8  # the data has both kinds
    table = ablation_report.paired_markdown(rows, "posemb=none")
    assert table.splitlines()[0] == (
        "| setting | seeds | top-1 @8 − posemb=none | top-1 @12 − posemb=none "
        "| knn/top1 − posemb=none |"
    )
    assert "| posemb=b | 3 | +1.7 ± 2.3 |" in table
    assert ablation_report.paired_differences(results[:3]) == []  # one setting: nothing to pair
