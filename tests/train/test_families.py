"""Every model family through the same loop: training, checkpoints, evaluators, resume, config
checks; and the data-scaling study's sweep and summary on a tiny stand-in."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ENV, ROOT
from tests.helpers.tiny import tiny_config
from vit_jax import models
from vit_jax import train as train_lib
from vit_jax.config import ConfigError, base_config, from_saved, validate, with_model
from vit_jax.tools import data_scaling


def _family_config(name):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=64)
    c.total_steps, c.eval_every, c.checkpoint_every, c.log_every = 6, 0, 3, 3
    c.evals.eval = dict(type="classification")
    c.evals.knn = dict(type="knn", train_split="train[:50%]", k=5)
    if name == "resnet":
        c = with_model(c, "resnet", "R20")
    elif name == "hybrid":
        c = with_model(c, "hybrid", None)
        c.model.update(dict(hidden_size=16, depth=1, mlp_dim=32, num_heads=2, patch_size=1))
        c.model.update(dict(resnet_layers=(1,), pool="gap"))
    return c


@pytest.mark.parametrize("name", ["resnet", "hybrid"])
def test_a_family_trains_evaluates_and_resumes_through_the_loop(tmp_path, name):
    c = _family_config(name)
    validate(c, num_devices=1)
    result = train_lib.train_and_evaluate(c, str(tmp_path))
    assert result["eval/count"] == 360 and 0.0 <= result["eval/top1"] <= 1.0
    assert 0.0 <= result["knn/top1"] <= 1.0  # k-NN on the family's pooled features
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_name"] == name
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert all(math.isfinite(x) for x in losses) and len(losses) == 2
    # a saved run of the family reads back as its own family (rerun = resume: nothing to train)
    again = train_lib.train_and_evaluate(from_saved(saved), str(tmp_path))
    assert again["eval/top1"] == result["eval/top1"]
    if name == "resnet":  # BatchNorm statistics (the CIFAR layout) were trained and saved
        assert saved["model"]["variant"] == "R20"


def test_family_config_errors_are_one_line():
    c = tiny_config(dataset="digits")
    c.model_name = "resnet"  # a ViT config's model keys under another family
    with pytest.raises(ConfigError, match="options of model_name='vit'") as e:
        validate(c, num_devices=1)
    assert "\n" not in str(e.value)
    c = tiny_config(dataset="digits")
    c.model_name = "cnn"
    with pytest.raises(ConfigError, match="unknown model family"):
        validate(c, num_devices=1)
    c = with_model(tiny_config(dataset="digits"), "hybrid", "R50+B/16")
    c.image_size = 40
    with pytest.raises(ConfigError, match="image_size=40 is not divisible by the downsampling"):
        validate(c, num_devices=1)
    c = base_config("resnet")
    c.model.layout = "densenet"
    with pytest.raises(ConfigError, match="layout"):
        validate(c, num_devices=1)


def test_every_family_default_config_validates_and_states_its_defaults_once():
    for name in models.FAMILIES.names():
        c = base_config(name)
        c.dataset = "digits"
        c.image_size = 224
        validate(c, num_devices=1)
        family = models.families.get(name)
        for key, default in family.defaults.items():
            if key not in family.size_keys:
                assert c.model[key] == default, (name, key)


def _study_configs():
    spec = importlib.util.spec_from_file_location(
        "data_scaling_config", os.path.join(ROOT, "configs", "data_scaling.py")
    )  # by path: scripts/data_scaling.py has the same module name
    configs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(configs)
    return configs


def test_data_scaling_configs_validate(tmp_path):
    configs = _study_configs()
    (tmp_path / "config.json").write_text("{}")  # a teacher workdir, as validation sees it
    for name in configs.FAMILIES:
        c = configs.get_config(name, teacher=str(tmp_path))
        c.dataset = "digits"
        validate(c, num_devices=1)
    student = configs.get_config("vit_distill")
    assert (student.distill.kind, student.distill.alpha) == ("hard", 0.5)
    assert student.model.distill_token and configs.TEACHERS["vit_distill"] in configs.FAMILIES
    assert configs.FAMILIES.index("vit_distill") > configs.FAMILIES.index("resnet")
    with pytest.raises(ValueError, match="unknown family"):
        configs.get_config("mlp")


def _stand_in(config, workdir):
    """A fake run: top-1 = the fraction of train, so the summary can be checked exactly."""
    os.makedirs(workdir, exist_ok=True)
    pct = data_scaling._percent(config.train_split)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(dict(split="train", step=1, loss=1.0, images_per_sec=100.0)) + "\n")
    return {"eval/top1": pct / 100 + config.seed / 1000}


def test_data_scaling_sweeps_each_fraction_and_summarises(tmp_path, monkeypatch):
    c = _family_config("resnet")
    monkeypatch.setattr(
        data_scaling.ablation,
        "evaluate_sizes",
        lambda cfg, wd, sizes: ({s: dict(top1=_stand_in(cfg, wd)["eval/top1"]) for s in sizes}, 7),
    )
    assert data_scaling.run_family(c, "resnet", str(tmp_path), [10, 50], 2, train_fn=_stand_in)
    assert len(list((tmp_path / "resnet" / "runs").glob("*/result.json"))) == 4
    table = data_scaling.report(str(tmp_path), {"resnet": c}, [10, 50], 2, train_size=1000)
    rows = json.loads((tmp_path / "summary.json").read_text())
    by_pct = {r["percent"]: r for r in rows}
    assert by_pct[10]["top1"] == pytest.approx((0.100 + 0.101) / 2)
    assert by_pct[50]["top1_std"] == pytest.approx(math.sqrt(0.001**2 / 2))
    assert "| resnet |" in table and "10%" in table and (tmp_path / "scaling.png").stat().st_size
    # rerun: everything is done, nothing trains
    boom = lambda *a: pytest.fail("a finished run trained again")  # noqa: E731
    assert data_scaling.run_family(c, "resnet", str(tmp_path), [10, 50], 2, train_fn=boom)


def test_data_scaling_script_summary_keeps_the_sizes_it_did_not_run(tmp_path, monkeypatch):
    """`--fractions=2` (one size trained on this machine) must not drop the committed runs of
    the other planned sizes from summary.md, as `--families` must not drop other families."""
    c = _study_configs().get_config("resnet")
    c.dataset = "digits"
    monkeypatch.setattr(
        data_scaling.ablation,
        "evaluate_sizes",
        lambda cfg, wd, sizes: ({s: dict(top1=_stand_in(cfg, wd)["eval/top1"]) for s in sizes}, 7),
    )
    assert data_scaling.run_family(c, "resnet", str(tmp_path), [2, 100], 1, train_fn=_stand_in)
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "data_scaling.py"), "--dataset=digits"]
    cmd += [f"--workdir={tmp_path}", "--report_only", "--fractions=2"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert {r["percent"]: r["top1"] for r in rows} == pytest.approx({2.0: 0.02, 100.0: 1.0})
    assert "| resnet |" in proc.stdout and "100%" in proc.stdout


def test_data_scaling_distillation_takes_the_teacher_run_of_the_same_size_and_seed(
    tmp_path, monkeypatch, capsys
):
    c = _family_config("vit")
    c.distill.update(dict(kind="hard", alpha=0.5))
    monkeypatch.setattr(
        data_scaling.ablation,
        "evaluate_sizes",
        lambda cfg, wd, sizes: ({s: dict(top1=0.5) for s in sizes}, 7),
    )
    monkeypatch.setattr(data_scaling.ablation, "validate", lambda config: None)
    runs = data_scaling.runs_of(c, [10], 2)  # seeds 0 and 1 at train[:10%]
    teacher_of = {}
    for run in runs:  # teacher workdirs; only seed 0's has a checkpoint
        wd = tmp_path / "resnet" / "runs" / run.name
        (wd / "checkpoints").mkdir(parents=True)
        teacher_of[run.seed] = str(wd)
    (tmp_path / "resnet" / "runs" / runs[0].name / "checkpoints" / "6").mkdir()
    seen = []

    def train(config, workdir):
        seen.append((config.seed, config.train_split, config.distill.teacher))
        return _stand_in(config, workdir)

    assert data_scaling.run_family(
        c, "vit_distill", str(tmp_path), [10], 2, teacher="resnet", train_fn=train
    )
    assert seen == [(0, "train[:10%]", teacher_of[0])]
    assert "its teacher has no checkpoint" in capsys.readouterr().err
    assert len(list((tmp_path / "vit_distill" / "runs").glob("*/result.json"))) == 1


def test_data_scaling_paired_differences_and_their_significance():
    def row(family, pct, by_seed):
        return dict(family=family, percent=pct, top1_by_seed=by_seed)

    rows = [
        row("resnet", 10, {0: 0.50, 1: 0.52, 2: 0.51}),
        row("cct", 10, {0: 0.55, 1: 0.58, 2: 0.56}),  # +5, +6, +5 points: clear
        row("resnet", 100, {0: 0.70, 1: 0.71, 2: 0.72}),
        row("cct", 100, {0: 0.71, 1: 0.70, 2: 0.72}),  # +1, -1, 0: noise
        row("vit_learn", 100, {0: 0.60}),
    ]
    d = data_scaling.paired(rows, "cct", "resnet")
    assert d[10]["mean"] == pytest.approx(16 / 3) and d[10]["seeds"] == 3
    assert d[10]["std"] == pytest.approx(math.sqrt(1 / 3)) and d[10]["significant"]
    assert d[100]["mean"] == pytest.approx(0.0, abs=1e-9) and not d[100]["significant"]
    one = data_scaling.paired(rows, "vit_learn", "resnet")[100]  # one seed: never significant
    assert one["mean"] == pytest.approx(-10.0) and not one["significant"]
    assert data_scaling.comparisons(["vit_learn", "cct", "resnet"]) == [
        ("vit_learn", "resnet"), ("cct", "resnet"), ("cct", "vit_learn"),
    ]  # fmt: skip
    table = data_scaling.paired_markdown(rows)
    assert "| cct − resnet | **+5.3 ± 0.6** (3) | +0.0 ± 1.0 (3) |" in table
