"""big_vision's rsqrt schedule with cooldown and its Adafactor (the Scaling-ViT optimizer), against
the formulas of big_vision/utils.py and big_vision/optax.py written out."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.config import ConfigError, base_config, validate
from vit_jax.train import optim


def config(**kw):
    c = base_config()
    c.update(kw)
    return c


def big_vision_rsqrt(step, total, warmup, cooldown, timescale, base):
    """big_vision.utils.create_learning_rate_schedule(decay_type="rsqrt"), written out."""
    lr = base / math.sqrt(1 + (step - warmup) / timescale) if step >= warmup else base
    if warmup:
        lr *= min(1.0, step / warmup)
    if cooldown:
        lr *= min(1.0, (total - step) / cooldown)
    return lr


def test_rsqrt_with_warmup_and_cooldown_equals_big_vision():
    c = config(
        schedule="rsqrt", lr=8e-4, total_steps=1000, warmup_steps=100, cooldown_steps=200,
        rsqrt_timescale=50,
    )  # fmt: skip
    validate(c)
    s = optim.make_schedule(c)
    for step in (0, 1, 50, 100, 101, 400, 799, 800, 801, 900, 999, 1000):
        want = big_vision_rsqrt(step, 1000, 100, 200, 50, 8e-4)
        assert float(s(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step
    assert float(s(400)) == pytest.approx(8e-4 / math.sqrt(1 + 300 / 50), rel=1e-6)
    assert float(s(1000)) == 0.0


def test_cooldown_on_cosine_ramps_to_zero():
    c = config(schedule="cosine", lr=1.0, total_steps=100, warmup_steps=10, cooldown_steps=20)
    s = optim.make_schedule(c)
    plain = optim.make_schedule(config(schedule="cosine", lr=1.0, total_steps=100, warmup_steps=10))
    assert float(s(50)) == pytest.approx(float(plain(50)))
    assert float(s(90)) == pytest.approx(float(plain(90)) * 0.5)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(rsqrt_timescale=0), "rsqrt_timescale=0 must be positive"),
        (dict(cooldown_steps=-1), "cooldown_steps=-1 must not be negative"),
        (dict(total_steps=100, warmup_steps=50, cooldown_steps=60), "exceed total_steps=100"),
        (dict(schedule="rsqrtt"), "schedule='rsqrtt' is not one of"),
    ],
)
def test_bad_schedule_values(kw, message):
    with pytest.raises(ConfigError, match=message):
        validate(config(**kw))


def test_bv_adafactor_first_updates_follow_the_formula():
    """Step 1: the second moment's decay 1 - 1^-0.8 = 0, so v = g² and the scaled update is
    sign(g) (unfactored [10] vector) or g/sqrt(row·col/mean) (factored [32, 64] matrix); momentum
    0.9 without debiasing keeps 0.1 of it; then −lr(t)·(m + c·θ) with decay on kernels only."""
    c = config(
        optimizer="bv_adafactor", lr=0.5, warmup_steps=0, schedule="constant", total_steps=10,
        weight_decay=0.1, weight_decay_form="schedule", grad_clip=0.0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    params = {
        "b": {"bias": jnp.asarray(rng.normal(size=10), jnp.float32)},
        "d": {"kernel": jnp.asarray(rng.normal(size=(32, 64)), jnp.float32)},
    }
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    tx = optim.make_optimizer(c, params)
    state = tx.init(params)
    moments = [x for x in jax.tree.leaves(state) if x.dtype == jnp.bfloat16]
    assert {tuple(x.shape) for x in moments} == {(10,), (32, 64)}  # momentum in bfloat16
    updates, state = tx.update(grads, state, params)

    g = np.asarray(grads["b"]["bias"], np.float64)
    want_b = -0.5 * 0.1 * g / np.sqrt(g**2 + 1e-30)
    np.testing.assert_allclose(updates["b"]["bias"], want_b, rtol=1e-2)  # bf16 momentum

    gk = np.asarray(grads["d"]["kernel"], np.float64)
    v_row, v_col = (gk**2).mean(1), (gk**2).mean(0)
    v = np.outer(v_row, v_col) / v_row.mean()
    decay = 0.1 / 0.5  # "schedule" form: c = wd / lr, so lr·c·θ = wd·θ
    want_k = -0.5 * (0.1 * gk / np.sqrt(v) + decay * np.asarray(params["d"]["kernel"]))
    np.testing.assert_allclose(updates["d"]["kernel"], want_k, rtol=1e-2, atol=1e-3)
