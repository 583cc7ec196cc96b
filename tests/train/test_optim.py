"""Schedules, optimizers, weight-decay mask and losses against formulas."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tiny import tiny_config
from vit_jax import config as config_lib
from vit_jax import models
from vit_jax.train import optim
from vit_jax.train import step as ts


def test_warmup_cosine_schedule_values():
    c = tiny_config(lr=1.0, warmup_steps=10, total_steps=110, schedule="cosine", min_lr_ratio=0.1)
    s = optim.make_schedule(c)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        float(s(60)), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), rtol=1e-5
    )
    np.testing.assert_allclose(float(s(110)), 0.1, rtol=1e-5)


def test_linear_and_constant_schedules():
    c = tiny_config(lr=2.0, warmup_steps=4, total_steps=14, schedule="linear")
    s = optim.make_schedule(c)
    np.testing.assert_allclose(
        [float(s(i)) for i in (2, 4, 9, 14)], [1.0, 2.0, 1.0, 0.0], atol=1e-6
    )
    c.schedule = "constant"
    s = optim.make_schedule(c)
    np.testing.assert_allclose([float(s(i)) for i in (2, 4, 100)], [1.0, 2.0, 2.0], atol=1e-6)


def test_decay_mask_only_kernels():
    params = {
        "embedding": {"kernel": 1, "bias": 1},
        "cls": 1,
        "Transformer": {"posembed_input": {"pos_embedding": 1}, "encoder_norm": {"scale": 1}},
        "head": {"kernel": 1, "bias": 1},
    }
    mask = optim.decay_mask(params)
    assert mask["embedding"] == {"kernel": True, "bias": False}
    assert mask["cls"] is False
    assert mask["Transformer"]["posembed_input"]["pos_embedding"] is False
    assert mask["Transformer"]["encoder_norm"]["scale"] is False
    assert mask["head"]["kernel"] is True


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "adafactor"])
def test_every_optimizer_decreases_a_quadratic(name):
    c = tiny_config(optimizer=name, lr=0.05, warmup_steps=0, total_steps=50, schedule="constant")
    params = {"w": {"kernel": jnp.ones((4, 4)) * 2.0}, "b": {"bias": jnp.ones(4)}}
    tx = optim.make_optimizer(c, params)
    state = tx.init(params)
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
    start = float(loss(params))
    for _ in range(20):
        g = jax.grad(loss)(params)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < 0.8 * start


def test_weight_decay_is_decoupled_and_masked():
    c = tiny_config(
        optimizer="adamw", lr=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant"
    )
    c.grad_clip = 0.0
    params = {"d": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
    tx = optim.make_optimizer(c, params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["d"]["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)  # -lr * wd * w
    np.testing.assert_allclose(updates["d"]["bias"], 0.0)


def test_freeze_encoder_only_updates_the_head():
    c = tiny_config(freeze_encoder=True, warmup_steps=0, schedule="constant")
    params = {"head": {"kernel": jnp.ones(2)}, "Transformer": {"x": {"kernel": jnp.ones(2)}}}
    tx = optim.make_optimizer(c, params)
    g = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(g, tx.init(params), params)
    assert np.all(np.asarray(updates["Transformer"]["x"]["kernel"]) == 0)
    assert np.all(np.asarray(updates["head"]["kernel"]) < 0)


def test_losses_and_label_smoothing_match_formulas():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    y = jnp.array([[0.0, 1.0, 0.0]])
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    np.testing.assert_allclose(ts.softmax_xent(logits, y), [-np.log(p[1])], rtol=1e-5)
    sig = 1 / (1 + np.exp(-np.array([2.0, 0.0, -1.0])))
    expect = -(np.log(1 - sig[0]) + np.log(sig[1]) + np.log(1 - sig[2]))
    np.testing.assert_allclose(ts.sigmoid_xent(logits, y), [expect], rtol=1e-5)
    np.testing.assert_allclose(ts.mse(logits, y), [(4 + 1 + 1) / 3], rtol=1e-6)
    np.testing.assert_allclose(ts.smooth(y, 0.3), [[0.1, 0.8, 0.1]], rtol=1e-6)


# ------------------------------------------------------------------ the two forms of weight decay
def _one_update(c, params, grads, step):
    """The update of `make_optimizer(c)` at schedule step `step` (the state's counts set to it)."""
    tx = optim.make_optimizer(c, params)
    state = optax.tree_utils.tree_set(tx.init(params), count=jnp.asarray(step, jnp.int32))
    updates, _ = tx.update(grads, state, params)
    return updates


@pytest.mark.parametrize("form", ["lr", "schedule"])
@pytest.mark.parametrize("step", [10, 35])  # the peak, and the middle of the cosine decay
def test_adamw_update_of_each_decay_form_equals_its_formula(form, step):
    """One AdamW step written out. Adam's direction u = m̂/(√v̂ + ε), from zero moments and one
    gradient g at count `step` (bias correction 1 − β^(step+1)); then
      "lr":       Δ = −lr(t)·(u + wd·θ)              (optax / PyTorch AdamW)
      "schedule": Δ = −s(t)·(lr·u + wd·θ), s = lr(t)/lr (big_vision: scale_by_adam → scale(lr) →
                  add_decayed_weights(wd) → scale_by_schedule(s) → scale(−1))."""
    c = tiny_config(lr=1e-3, weight_decay=1e-4, weight_decay_form=form, warmup_steps=10)
    c.total_steps, c.grad_clip = 60, 0.0
    theta = jnp.array([2.0, -3.0, 0.5])
    g = jnp.array([0.1, 0.2, -0.3])
    params = {"d": {"kernel": theta, "bias": theta}}
    grads = {"d": {"kernel": g, "bias": g}}
    updates = _one_update(c, params, grads, step)
    # Adam from zero state, one gradient at count `step`: bias correction uses count + 1.
    t = step + 1
    m_hat = (1 - c.b1) * g / (1 - c.b1**t)
    v_hat = (1 - c.b2) * g**2 / (1 - c.b2**t)
    u = m_hat / (np.sqrt(v_hat) + 1e-8)
    lr_t = float(optim.make_schedule(c)(step))
    s_t = lr_t / c.lr
    if form == "lr":
        expect_kernel = -lr_t * (u + c.weight_decay * theta)
    else:
        expect_kernel = -s_t * (c.lr * u + c.weight_decay * theta)
    # float32: u and wd·θ partly cancel, so compare with an absolute floor far below wd·θ·lr.
    np.testing.assert_allclose(updates["d"]["kernel"], expect_kernel, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(updates["d"]["bias"], -lr_t * u, rtol=1e-5)  # bias: no decay


def test_the_forms_differ_by_the_peak_lr_on_a_zero_gradient():
    """The issue's example: wd=1e-4 at lr=1e-3 shrinks weights by 1e-7 per peak step as optax's
    AdamW form and by 1e-4 as big_vision's, 1000x more."""
    theta = {"k": {"kernel": jnp.full((3,), 2.0)}}
    zero = jax.tree.map(jnp.zeros_like, theta)
    shrink = {}
    for form in ("lr", "schedule"):
        c = tiny_config(lr=1e-3, weight_decay=1e-4, weight_decay_form=form, warmup_steps=10)
        c.grad_clip, c.total_steps = 0.0, 100
        up = _one_update(c, theta, zero, 10)["k"]["kernel"]
        shrink[form] = float(-up[0] / 2.0)
    np.testing.assert_allclose(shrink["lr"], 1e-7, rtol=1e-5)
    np.testing.assert_allclose(shrink["schedule"], 1e-4, rtol=1e-5)


def test_imagenet_s16_decays_like_big_vision():
    """configs/imagenet_s16.py (big_vision wd=0.0001): one update at peak lr with zero gradient
    shrinks a kernel by 1e-4, and half as much halfway down the cosine."""
    c = config_lib.load_config(os.path.join(ROOT, "configs", "imagenet_s16.py"))
    theta = {"head": {"kernel": jnp.full((4,), 3.0)}}
    zero = jax.tree.map(jnp.zeros_like, theta)
    up = _one_update(c, theta, zero, c.warmup_steps)["head"]["kernel"]
    np.testing.assert_allclose(up, -1e-4 * 3.0, rtol=1e-4)
    middle = (c.warmup_steps + c.total_steps) // 2
    up = _one_update(c, theta, zero, middle)["head"]["kernel"]
    s = float(optim.make_schedule(c)(middle)) / c.lr
    assert abs(s - 0.5) < 1e-3
    np.testing.assert_allclose(up, -s * 1e-4 * 3.0, rtol=1e-4)


@pytest.mark.parametrize("name", ["sgd", "lion", "adafactor"])
def test_schedule_form_decay_on_a_zero_gradient_for_every_optimizer(name):
    c = tiny_config(optimizer=name, lr=0.5, weight_decay=0.01, weight_decay_form="schedule")
    c.update(dict(warmup_steps=0, schedule="constant", grad_clip=0.0, momentum=0.9))
    theta = {"w": {"kernel": jnp.full((40, 40), 2.0)}}
    zero = jax.tree.map(jnp.zeros_like, theta)
    up = _one_update(c, theta, zero, 3)["w"]["kernel"]
    np.testing.assert_allclose(up, -0.01 * 2.0, rtol=1e-5)  # wd·θ, independent of lr = 0.5
    c.weight_decay_form = "lr"
    up = _one_update(c, theta, zero, 3)["w"]["kernel"]
    np.testing.assert_allclose(up, -0.5 * 0.01 * 2.0, rtol=1e-5)  # lr·wd·θ


# ------------------------------------------------------------------ per-parameter rules
def _vit_params(depth=2):
    c = tiny_config()
    c.model.depth = depth
    model = models.from_config(c.model, 3)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]


def test_layer_decay_multipliers_follow_beit():
    """BEiT/timm: embedding, CLS and position table d^(L+1); block i d^(L-i); norm and head 1."""
    params = _vit_params(depth=2)
    c = tiny_config(layer_decay=0.5)
    rules = {"/".join(k): r for k, r in optim.param_rules(c, params).items()}
    assert rules["embedding/kernel"].lr_mult == 0.125
    assert rules["cls"].lr_mult == 0.125
    assert rules["Transformer/posembed_input/pos_embedding"].lr_mult == 0.125
    assert rules["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].lr_mult == 0.25
    assert rules["Transformer/encoderblock_1/LayerNorm_0/scale"].lr_mult == 0.5
    assert rules["Transformer/encoder_norm/scale"].lr_mult == 1.0
    assert rules["head/kernel"].lr_mult == 1.0
    assert {r.wd_mult for n, r in rules.items() if n.endswith("kernel")} == {1.0}
    assert {r.wd_mult for n, r in rules.items() if not n.endswith("kernel")} == {0.0}


def test_lr_mults_wd_mults_and_frozen_reach_the_updates():
    """SGD without momentum at constant lr: Δ = −lr·m·(g + c·θ) per parameter, where the rule's
    lr multiplier m and the decay c = wd·w (the "lr" form, coupled as torch SGD)."""
    c = tiny_config(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.01)
    c.update(dict(warmup_steps=0, schedule="constant", grad_clip=0.0))
    c.lr_mults = (("head/.*", 10.0), ("Transformer/.*", 0.5))
    c.wd_mults = (("head/kernel", 2.0), (".*/kernel", 1.0))
    c.frozen = ("embedding/.*",)
    params = {
        "embedding": {"kernel": jnp.ones(2)},
        "Transformer": {"b": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}},
        "head": {"kernel": jnp.ones(2), "bias": jnp.ones(2)},
    }
    g = jax.tree.map(lambda x: 0.3 * x, params)
    up = _one_update(c, params, g, 0)
    np.testing.assert_allclose(up["embedding"]["kernel"], 0.0)
    np.testing.assert_allclose(up["Transformer"]["b"]["kernel"], -0.1 * 0.5 * (0.3 + 0.01))
    np.testing.assert_allclose(up["Transformer"]["b"]["bias"], -0.1 * 0.5 * 0.3, rtol=1e-6)
    np.testing.assert_allclose(up["head"]["kernel"], -0.1 * 10 * (0.3 + 0.02), rtol=1e-6)
    np.testing.assert_allclose(up["head"]["bias"], -0.1 * 10 * 0.3, rtol=1e-6)


def test_schedule_form_decay_ignores_the_lr_multiplier():
    """big_vision: lr_mults scale the optimizer's direction only; the decay stays wd·s(t)·θ."""
    c = tiny_config(lr=1e-3, weight_decay=1e-4, weight_decay_form="schedule")
    c.update(dict(warmup_steps=0, schedule="constant", grad_clip=0.0))
    c.lr_mults = (("head/.*", 10.0),)
    params = {"head": {"kernel": jnp.full(2, 2.0)}, "body": {"kernel": jnp.full(2, 2.0)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    up = _one_update(c, params, zero, 0)
    np.testing.assert_allclose(up["head"]["kernel"], -1e-4 * 2.0, rtol=1e-5)
    np.testing.assert_allclose(up["body"]["kernel"], -1e-4 * 2.0, rtol=1e-5)


def test_frozen_gradients_do_not_count_in_the_clipping_norm():
    c = tiny_config(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=1.0)
    c.update(dict(warmup_steps=0, schedule="constant"))
    c.frozen = ("body/.*",)
    params = {"head": {"kernel": jnp.zeros(2)}, "body": {"kernel": jnp.zeros(2)}}
    grads = {"head": {"kernel": jnp.array([0.3, 0.4])}, "body": {"kernel": jnp.array([1e3, 0])}}
    up = _one_update(c, params, grads, 0)
    np.testing.assert_allclose(up["head"]["kernel"], [-0.3, -0.4], rtol=1e-6)  # norm 0.5 < 1
    np.testing.assert_allclose(up["body"]["kernel"], 0.0)


def test_without_rules_the_state_is_the_one_older_runs_saved():
    """clip → optax.adamw, as before per-parameter rules: old checkpoints restore."""
    params = _vit_params()
    c = tiny_config()
    old = optax.chain(
        optax.clip_by_global_norm(c.grad_clip),
        optax.adamw(optim.make_schedule(c), weight_decay=c.weight_decay, mask=optim.decay_mask),
    )
    new = optim.make_optimizer(c, params)
    assert jax.tree.structure(new.init(params)) == jax.tree.structure(old.init(params))


def test_ema_of_the_weights_after_two_updates():
    c = tiny_config(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, ema_decay=0.9)
    c.update(dict(warmup_steps=0, schedule="constant", grad_clip=0.0))
    params = {"w": {"kernel": jnp.array([1.0, 2.0])}}
    tx = optim.make_optimizer(c, params)
    state = tx.init(params)
    p, ema = params["w"]["kernel"], np.array([1.0, 2.0])
    for _ in range(2):
        g = {"w": {"kernel": jnp.array([1.0, -1.0])}}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        p = p - 0.1 * np.array([1.0, -1.0])
        ema = 0.9 * ema + 0.1 * p
    np.testing.assert_allclose(params["w"]["kernel"], p, rtol=1e-6)
    np.testing.assert_allclose(optim.ema_of(state)["w"]["kernel"], ema, rtol=1e-6)
    assert optim.ema_of(optim.make_optimizer(tiny_config(), params).init(params)) is None
