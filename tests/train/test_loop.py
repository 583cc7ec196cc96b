"""End-to-end training: the quickstart learns, resume is bitwise exact, 2 processes match 1."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.tiny import tiny_config
from vit_jax import train as train_lib
from vit_jax.train.checkpoint import Checkpointer

sys.path.insert(0, os.path.join(ROOT, "configs"))


def _digits_config(**kw):
    c = tiny_config(dataset="digits", image_size=8, batch_size=32, eval_batch_size=64, **kw)
    c.checkpoint_every = 1000
    c.eval_every = 0
    return c


def _final_params(workdir, config):
    ckpt = Checkpointer(workdir, 3)
    step = ckpt.latest_step()
    state = ckpt.manager.restore(step)
    ckpt.close()
    return step, state


def test_quickstart_config_learns_digits(tmp_path):
    import quickstart

    c = quickstart.get_config()
    c.progress_bar = False
    result = train_lib.train_and_evaluate(c, str(tmp_path))
    assert result["count"] == 360  # the whole digits test split, once
    assert result["top1"] >= 0.90, result
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    train = [r for r in rows if r["split"] == "train"]
    assert train[-1]["loss"] < 0.25 * train[0]["loss"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def test_resume_is_bitwise_identical_to_a_straight_run(tmp_path):
    c = _digits_config(total_steps=6)
    c.model.dropout_rate = 0.1  # the dropout RNG must resume too
    c.aug.crop_area_min = 0.5  # and the augmentation stream
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_lib.train_and_evaluate(c, straight)
    out = train_lib.train_and_evaluate(c, split, stop_at=3)
    assert out == {"stopped_at": 3}
    assert _final_params(split, c)[0] == 3
    train_lib.train_and_evaluate(c, split)  # same command again: resumes at 3
    s1, a = _final_params(straight, c)
    s2, b = _final_params(split, c)
    assert s1 == s2 == 6 and int(a["step"]) == int(b["step"]) == 6
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    script = os.path.join(ROOT, "tests", "helpers", "two_process_check.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    single = subprocess.run(
        [sys.executable, script, str(tmp_path / "one")], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = []
    for pid in range(2):
        penv = dict(
            env,
            VIT_JAX_COORDINATOR=f"127.0.0.1:{port}",
            VIT_JAX_NUM_PROCESSES="2",
            VIT_JAX_PROCESS_ID=str(pid),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, script, str(tmp_path / "two"), "distributed"],
                env=penv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    two = json.loads(outs[0][0].strip().splitlines()[-1])
    assert two["process_count"] == 2 and one["process_count"] == 1
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert two["losses"][-1] < two["losses"][0]
    assert two["count"] == one["count"] == 360  # each process evaluated its shard, summed once


@pytest.mark.parametrize("name", ["quickstart", "cifar10", "imagenet_s16", "i21k_b16", "finetune"])
def test_every_config_validates(name):
    from vit_jax.config import validate

    mod = __import__(name)
    c = mod.get_config()
    if c.dataset.startswith("folder:"):
        c.dataset = "digits"
    validate(c, num_devices=1)


def test_an_evaluation_that_fails_loses_no_training_and_a_rerun_evaluates(tmp_path, monkeypatch):
    """The final checkpoint is written before the final evaluation; rerunning the finished run
    evaluates it without training again."""
    from vit_jax.data import DataError  # noqa: PLC0415
    from vit_jax.train import loop  # noqa: PLC0415

    c = _digits_config(total_steps=3)
    workdir = str(tmp_path / "run")
    real = loop.run_evaluators

    def broken(*args):
        raise DataError("cannot read image test/7/0001.jpg: corrupt JPEG")

    monkeypatch.setattr(loop, "run_evaluators", broken)
    with pytest.raises(DataError, match="corrupt JPEG"):
        train_lib.train_and_evaluate(c, workdir)
    step, state = _final_params(workdir, c)
    assert step == 3 and int(state["step"]) == 3  # the training is saved
    monkeypatch.setattr(loop, "run_evaluators", real)
    result = train_lib.train_and_evaluate(c, workdir)
    assert result["count"] == 360 and 0.0 <= result["top1"] <= 1.0
    assert _final_params(workdir, c)[0] == 3  # evaluated, not trained further


@pytest.mark.parametrize(
    "change,error",
    [
        (
            dict(num_classes=5),
            r"config.num_classes=5 is smaller than the 10 classes of config.train_split",
        ),
        (
            dict(eval_split="test[:0]"),
            r"config.eval_split='test\[:0\]' of digits holds no examples",
        ),
        (dict(keep_checkpoints=0), r"config.keep_checkpoints=0 would keep no checkpoint"),
    ],
)
def test_inputs_that_would_train_nonsense_or_lose_the_run_fail_before_training(
    tmp_path, change, error
):
    c = _digits_config(total_steps=2, **change)
    with pytest.raises(ValueError, match=error):
        train_lib.train_and_evaluate(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_relative_workdir_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    """Orbax needs absolute paths: a relative --workdir (the ablation's docs/ablation/v2) works."""
    from vit_jax.train.eval_only import evaluate_checkpoint  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    c = _digits_config(total_steps=4)
    c.checkpoint_every = 2
    assert train_lib.train_and_evaluate(c, "runs/rel", stop_at=2) == {"stopped_at": 2}
    result = train_lib.train_and_evaluate(c, "runs/rel")
    assert result["count"] == 360
    step, again = evaluate_checkpoint(c, "runs/rel")
    assert step == 4 and again["eval"]["top1"] == result["top1"]
