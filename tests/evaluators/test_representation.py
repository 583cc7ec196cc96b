"""Few-shot linear and k-NN evaluators: the jitted solves against float64 NumPy references, λ chosen
on held-out train examples only, and a trained model's representation beating an untrained one."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tiny import tiny_config
from vit_jax import evaluators
from vit_jax import train as train_lib
from vit_jax.evaluators.fewshot import BIAS_CONSTANT, fewshot_accuracy, lsr_cache, lsr_predict
from vit_jax.evaluators.knn import knn_accuracy
from vit_jax.train import sharding as shd


def _clusters(n, d, classes, seed, spread=1.5):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    return (centers[y] + spread * rng.standard_normal((n, d))).astype(np.float32), y


def _ridge_float64(x, y, test_x, classes, l2):
    """(XᵀX + λI)⁻¹XᵀY on whitened features with a bias column of 100, in float64."""
    x, test_x = x.astype(np.float64), test_x.astype(np.float64)
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    prep = lambda a: np.pad((a - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    xw = prep(x)
    targets = 2.0 * np.eye(classes)[y] - 1.0
    w = np.linalg.solve(xw.T @ xw + l2 * np.eye(xw.shape[1]), xw.T @ targets)
    return np.argmax(prep(test_x) @ w, axis=1)


@pytest.mark.parametrize("n", [12, 200])  # D > N (the kernel form) and N > D
@pytest.mark.parametrize("l2", [2.0**-4, 1.0, 2.0**10])
def test_least_squares_matches_a_float64_ridge(n, l2):
    x, y = _clusters(n, 32, 4, seed=n)
    test_x, test_y = _clusters(500, 32, 4, seed=n)  # same centers: same seed
    got = np.asarray(lsr_predict(lsr_cache(jnp.asarray(x), jnp.asarray(y), 4), test_x, l2))
    want = _ridge_float64(x, y, test_x, 4, l2)
    assert abs(np.mean(got == test_y) - np.mean(want == test_y)) <= 1e-3
    assert np.mean(got == want) >= 0.998


def test_the_regulariser_is_chosen_without_looking_at_the_test_split():
    x, y = _clusters(400, 16, 5, seed=1, spread=3.0)
    test_x, test_y = _clusters(300, 16, 5, seed=1, spread=3.0)
    regs = (2.0**-6, 1.0, 2.0**6, 2.0**12)
    a = fewshot_accuracy(x, y, test_x, test_y, 5, (1, 5), regs, seeds=3, holdout=10)
    shuffled = np.random.default_rng(0).permutation(test_y)  # wrong test labels: λ must not move
    b = fewshot_accuracy(x, y, test_x, shuffled, 5, (1, 5), regs, seeds=3, holdout=10)
    assert a["5shot_l2"] == b["5shot_l2"] and a["1shot_l2"] == b["1shot_l2"]
    assert a["5shot"] > 0.5 > b["5shot"]  # the labels do matter for the reported accuracy
    # By hand for one seed and k = 5: the k examples fit, the next 10 per class pick λ.
    rng = np.random.default_rng(0)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(5)]
    fit = np.concatenate([i[:5] for i in per_class])
    val = np.concatenate([i[5:15] for i in per_class])
    scores = [np.mean(_ridge_float64(x[fit], y[fit], x[val], 5, r) == y[val]) for r in regs]
    best = max(r for r, s in zip(regs, scores) if s == max(scores))
    acc = np.mean(_ridge_float64(x[fit], y[fit], test_x, 5, best) == test_y)
    one_seed = fewshot_accuracy(x, y, test_x, test_y, 5, (5,), regs, seeds=1, holdout=10)
    assert one_seed["5shot_l2"] == best
    assert abs(one_seed["5shot"] - acc) <= 1e-3


def test_knn_matches_a_float64_weighted_vote():
    x, y = _clusters(300, 24, 6, seed=3, spread=2.5)
    test_x, test_y = _clusters(130, 24, 6, seed=3, spread=2.5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tn = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sims = tn.astype(np.float64) @ xn.T.astype(np.float64)
    nearest = np.argsort(-sims, axis=1)[:, :20]
    votes = np.zeros((len(test_x), 6))
    for i, idx in enumerate(nearest):
        np.add.at(votes[i], y[idx], np.exp(sims[i, idx] / 0.07))
    want = np.mean(votes.argmax(1) == test_y)
    got = knn_accuracy(x, y, test_x, test_y, 6, 20, 0.07, chunk=50)  # 3 chunks, the last partial
    assert abs(got - want) <= 1e-3 and 0.3 < got < 1.0


def _digits(**kw):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=120, **kw)
    c.evals = ml_collections.ConfigDict(
        dict(fewshot=dict(type="fewshot", shots=(1, 5), seeds=2), knn=dict(type="knn"))
    )
    return c


def test_a_trained_model_has_a_better_representation_than_an_untrained_one(tmp_path):
    c = _digits(total_steps=80, lr=1e-2, warmup_steps=5)
    c.eval_every, c.checkpoint_every = 0, 80
    trained = train_lib.train_and_evaluate(c, str(tmp_path))
    mesh = shd.make_mesh()
    model, _, _, init, _, _ = train_lib.build(c, 10, mesh)
    context = evaluators.Context(model, put=lambda b: b)
    untrained = {}
    for ev in evaluators.from_config(c):
        ev.check(10)
        untrained.update(
            {f"{ev.name}/{k}": v for k, v in ev.run(context, {"params": init()["params"]}).items()}
        )
    for key in ("fewshot/5shot", "knn/top1"):
        assert trained[key] > untrained[key] + 0.1, (key, trained[key], untrained[key])
    assert trained["fewshot/count"] == trained["knn/count"] == 360


def test_evaluators_of_one_round_share_the_representations(monkeypatch):
    """Few-shot and k-NN reading the same splits the same way compute them once per round."""
    from vit_jax.evaluators import features

    c = _digits()
    c.evals.knn16 = dict(type="knn", image_size=16)  # other data options: its own features
    model, _, _, init, _, _ = train_lib.build(c, 10, shd.make_mesh())
    variables = {"params": init()["params"]}
    computed = []
    compute = features.Features._compute
    monkeypatch.setattr(
        features.Features, "_compute",
        lambda self, split, *a: computed.append((split, self.config.image_size))
        or compute(self, split, *a),
    )  # fmt: skip
    evals = evaluators.from_config(c)
    for ev in evals:
        ev.check(10)
    context = evaluators.Context(model, put=lambda b: b)
    shared = {ev.name: ev.run(context, variables) for ev in evals}
    assert sorted(computed) == sorted(
        [(c.train_split, 8), (c.eval_split, 8), (c.train_split, 16), (c.eval_split, 16)]
    )
    x, _ = next(iter(context.features.values()))
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 1.0  # shared by several evaluators: nobody may change it
    alone = {ev.name: ev.run(evaluators.Context(model, put=lambda b: b), variables) for ev in evals}
    assert shared == alone and len(computed) == 4 + 6  # each alone computes its two splits
    context.new_round()
    assert context.features == {}
    evals[0].run(context, variables)
    assert len(computed) == 12


def test_fewshot_and_knn_of_a_finished_run_are_one_command_away(tmp_path):
    c = tiny_config(dataset="digits", batch_size=32, eval_batch_size=120, total_steps=4)
    c.eval_every, c.checkpoint_every = 0, 4
    workdir = str(tmp_path / "run")
    train_lib.train_and_evaluate(c, workdir)
    cmd = [sys.executable, "-m", "vit_jax.evaluate", f"--workdir={workdir}", "--add=fewshot,knn"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [x.split()[2] for x in lines] == ["eval", "fewshot", "knn"]
    assert lines[1].startswith("step 4: fewshot 1shot ") and "25shot" in lines[1]
    rows = [json.loads(x) for x in open(os.path.join(workdir, "eval_only.jsonl"))]
    assert {r["split"] for r in rows} == {"eval", "fewshot", "knn"}
    assert all(0 <= r.get("5shot", r.get("top1")) <= 1 for r in rows)
