"""Schedules, optimizers, weight-decay mask and losses against formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers.tiny import tiny_config
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
