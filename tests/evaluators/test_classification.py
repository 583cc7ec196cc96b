"""Evaluators: the classification and multi-label maths against NumPy, several evaluators in one
run (names, cadence, resolution, EMA weights, best checkpoint), and evaluation without training."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tiny import batch, tiny_config
from vit_jax import evaluators, models
from vit_jax import train as train_lib
from vit_jax.evaluators.classification import Classification, MultiLabel
from vit_jax.train import checkpoint
from vit_jax.train.eval_only import evaluate_checkpoint


def test_classification_step_counts_masked_examples_and_topk():
    c = tiny_config()
    model = models.from_config(c.model, 6)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    params["head"]["kernel"] = jax.random.normal(
        jax.random.PRNGKey(1), params["head"]["kernel"].shape
    )
    b = batch(classes=6)
    b["mask"] = np.arange(16) < 11
    out = jax.jit(functools.partial(Classification.step, model=model))({"params": params}, b)
    logits = np.asarray(model.apply({"params": params}, b["image"]), np.float64)
    valid = slice(0, 11)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(out["count"]) == 11
    np.testing.assert_allclose(
        float(out["loss"]), -logp[np.arange(16), b["label"]][valid].sum(), rtol=1e-5
    )
    assert float(out["top1"]) == (logits.argmax(-1) == b["label"])[valid].sum()
    top5 = np.argsort(-logits, -1)[:, :5]
    assert float(out["top5"]) == (top5 == b["label"][:, None]).any(-1)[valid].sum()


class _FixedLogits:
    """A stand-in model whose output is `variables["logits"]`."""

    def apply(self, variables, images, train=False):
        del images, train
        return variables["logits"]


def test_multilabel_step_is_real_top1_and_skips_empty_label_sets():
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 5], [2, 1, 0], [0, 0, 9]], np.float32)
    labels = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]], np.int32)
    mask = np.array([True, True, True, True, False])  # the last is padding
    b = dict(image=np.zeros((5, 8, 8, 3), np.float32), label=labels, mask=mask)
    out = jax.jit(functools.partial(MultiLabel.step, model=_FixedLogits()))({"logits": logits}, b)
    m = MultiLabel.finish(jax.device_get(out))
    # argmax 0 ∈ {0,1} hit; 1 ∉ {0,2} miss; 2 ∈ {2} hit; example 3 has no labels: skipped.
    assert m == dict(top1=2 / 3, count=3.0, skipped=1.0)


def test_evaluator_options_are_checked():
    c = tiny_config()
    c.evals = ml_collections.ConfigDict(dict(a=dict(split="test", crop_pct=1.5)))
    assert "crop_pct=1.5" in evaluators.spec_errors(c)
    c.evals = ml_collections.ConfigDict(dict(a=dict(type="multilabel", image_size=12)))
    assert evaluators.spec_errors(c) is None
    assert [e.name for e in evaluators.from_config(c)] == ["a"]
    with pytest.raises(evaluators.EvalError, match="no evaluator named b"):
        evaluators.from_config(c, only=["b"])


def _three_evals_config(total_steps=8):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=72, total_steps=total_steps)
    c.checkpoint_every, c.eval_every, c.keep_best = 4, 4, True
    c.evals.test = dict(split="test")
    c.evals.test_16px = dict(split="test", image_size=16, every=0)  # only at the end
    c.evals.train_slice = dict(split="train[:10%]", batch_size=48)
    c.best_metric = "test_16px/top1"
    return c


def test_three_evaluators_log_under_their_names_and_eval_only_reproduces_them(tmp_path):
    c = _three_evals_config()
    workdir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(c, workdir)
    rows = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [(r["step"], r["split"], r["count"]) for r in rows if r["split"] != "train"]
    assert evals == [
        (4, "test", 360), (4, "train_slice", 144),
        (8, "test", 360), (8, "test_16px", 360), (8, "train_slice", 144),
    ]  # fmt: skip
    assert result["top1"] == result["test/top1"]  # the first evaluator's, as before
    assert checkpoint.saved_steps(os.path.join(workdir, "best")) == [8]  # test_16px ran at 8 only
    # Eval-only on the finished run (the saved config.json) gives the same numbers.
    saved = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "config.json"))))
    step, again = evaluate_checkpoint(saved, workdir, only=["test_16px", "train_slice"])
    assert step == 8 and sorted(again) == ["test_16px", "train_slice"]
    for name, m in again.items():
        for k in ("loss", "top1", "top5", "count"):
            np.testing.assert_allclose(m[k], result[f"{name}/{k}"], rtol=1e-6)
    lines = open(os.path.join(workdir, "eval_only.jsonl")).read().splitlines()
    assert [json.loads(x)["split"] for x in lines] == ["test_16px", "train_slice"]
    # An earlier checkpoint: step 4's test metrics equal the ones logged during training.
    _, at4 = evaluate_checkpoint(saved, workdir, step=4, only=["test"])
    logged = next(r for r in rows if r["split"] == "test" and r["step"] == 4)
    np.testing.assert_allclose(at4["test"]["loss"], logged["loss"], rtol=1e-6)


def test_ema_weights_are_evaluated_when_asked(tmp_path):
    """An evaluator with weights="ema" scores the EMA kept in the optimizer state: its metrics
    equal a direct evaluation of `ema_of(opt_state)` from the checkpoint, and differ from the
    params' evaluator."""
    from vit_jax.train import sharding as shd  # noqa: PLC0415
    from vit_jax.train.optim import ema_of  # noqa: PLC0415

    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=72, total_steps=6)
    c.ema_decay, c.eval_every, c.checkpoint_every = 0.5, 0, 6
    c.evals.raw = dict(split="test")
    c.evals.ema = dict(split="test", weights="ema")
    result = train_lib.train_and_evaluate(c, str(tmp_path))
    assert result["raw/count"] == result["ema/count"] == 360
    assert result["raw/loss"] != result["ema/loss"]
    mesh = shd.make_mesh()
    model, _, _, _, abstract, _ = train_lib.build(c, 10, mesh)
    state = checkpoint.restore(str(tmp_path / "checkpoints"), 6, abstract)
    (ema_eval,) = evaluators.from_config(c, only=["ema"])
    direct = ema_eval.run(
        evaluators.Context(model, put=lambda b: b), {"params": ema_of(state["opt_state"])}
    )
    for k in ("loss", "top1", "top5"):
        np.testing.assert_allclose(direct[k], result[f"ema/{k}"], rtol=1e-6)


def test_eval_only_command_line(tmp_path):
    c = _three_evals_config(total_steps=4)
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(c, workdir)
    cmd = [sys.executable, "-m", "vit_jax.evaluate", f"--workdir={workdir}", "--evals=test"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("step 4: test loss ")
    bad = subprocess.run(cmd[:-1] + ["--evals=nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: no evaluator named nope in the run (it has: test, test_16px, train_slice)"
    )


def test_an_evaluator_whose_dataset_is_missing_fails_before_training(tmp_path):
    """One line naming the evaluator and the dataset, and nothing written to the workdir."""
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=72)
    c.evals.test = dict(split="test")
    c.evals.v2 = dict(dataset="tfds:imagenet_v2", split="test", image_size=16)
    c.data_dir = str(tmp_path / "tfds")
    with pytest.raises(evaluators.EvalError) as e:
        train_lib.train_and_evaluate(c, str(tmp_path / "run"))
    message = str(e.value)
    assert message.startswith("evaluator 'v2': tfds dataset 'imagenet_v2' is not prepared")
    assert "\n" not in message
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
    "family, options, what",
    [
        ("resnet", dict(variant="R20"), "model_name='resnet'"),
        ("hybrid", dict(), "model_name='hybrid'"),
        ("vit", dict(tokenizer="spt"), "tokenizer='spt'"),
        ("vit", dict(tokenizer="conv", conv_layers=2), "tokenizer='conv'"),
    ],
)
def test_patch_size_needs_a_vit_patch_embedding(family, options, what):
    from vit_jax.config import with_model

    c = tiny_config() if family == "vit" else with_model(tiny_config(), family)
    c.model.update(options)
    c.evals = ml_collections.ConfigDict(dict(flexi=dict(split="test", patch_size=8)))
    assert evaluators.spec_errors(c) == (
        f"config.evals.flexi: patch_size=8 resizes a ViT's patch-embedding kernel (FlexiViT), "
        f"which a {what} model does not have: drop patch_size"
    )
    c.evals.flexi.patch_size = None
    assert evaluators.spec_errors(c) is None


def test_flexi_resize_without_a_patch_embedding_is_one_line():
    from vit_jax.weights import flexi

    model = models.create_model("Ti/4", 3, tokenizer="spt", hidden_size=16, depth=1, mlp_dim=32,
                                num_heads=2)  # fmt: skip
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="no patch-embedding kernel embedding/kernel"):
        flexi.with_patch_size(variables, 8)
