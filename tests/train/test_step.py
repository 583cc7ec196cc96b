"""Train/eval steps: gradient accumulation, NaN handling, eval counting, multi-device equality."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np

from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.tiny import batch, tiny_config
from vit_jax import train as train_lib
from vit_jax.train import step as ts
from vit_jax.train.sharding import make_mesh


def _setup(config, classes=3):
    mesh = make_mesh(devices=jax.devices()[:1])
    model, tx, schedule, init, _, _ = train_lib.build(config, classes, mesh)
    step = functools.partial(
        ts.train_step, model=model, tx=tx, schedule=schedule, accum_steps=config.grad_accum_steps,
        nan_policy=config.nan_policy,
    )  # fmt: skip
    return model, init(), jax.jit(step)


def test_gradient_accumulation_equals_one_full_batch_step():
    results = []
    for k in (1, 4):
        c = tiny_config(grad_accum_steps=k, optimizer="sgd", weight_decay=0.0)
        c.model.dropout_rate = 0.0
        _, state, step = _setup(c)
        new, metrics = step(state, batch())
        results.append((new, metrics))
    (a, ma), (b, mb) = results
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
    np.testing.assert_allclose(ma["grad_norm"], mb["grad_norm"], rtol=1e-4)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
        a["params"],
        b["params"],
    )
    assert int(a["step"]) == int(b["step"]) == 1


def test_loss_decreases_on_a_learnable_batch():
    _, state, step = _setup(tiny_config(total_steps=30, warmup_steps=2))
    losses = []
    for _ in range(30):
        state, m = step(state, batch())
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(losses[0], np.log(3), rtol=1e-3)  # zero-init head: uniform softmax
    assert losses[-1] < 0.5 * losses[0]


def test_nan_skip_keeps_params_and_flags_non_finite():
    _, state, step = _setup(tiny_config(nan_policy="skip"))
    bad = batch()
    bad["image"][0, 0, 0, 0] = np.nan
    before = jax.tree.map(np.asarray, state["params"])
    new, m = step(state, bad)
    assert not bool(m["finite"])
    jax.tree.map(np.testing.assert_array_equal, before, new["params"])
    assert int(new["step"]) == 1


def test_same_global_batch_on_1_and_8_devices_data_and_fsdp():
    """Runs in a subprocess so XLA can simulate 8 CPU devices."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "helpers", "multidevice_check.py")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MATCH data=8" in out.stdout and "MATCH data=2,fsdp=4" in out.stdout, out.stdout
