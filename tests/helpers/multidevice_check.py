"""Same global batch, 3 steps, on 1 device vs data=8 vs data=2 x fsdp=4 (8 simulated CPU devices)."""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers.tiny import batch, tiny_config  # noqa: E402
from vit_jax import train as train_lib  # noqa: E402
from vit_jax.train import sharding as shd  # noqa: E402
from vit_jax.train import step as ts  # noqa: E402

assert jax.device_count() == 8, jax.devices()


def run(data, fsdp, devices):
    # SGD: Adam divides by sqrt(v), which turns float32 reduction-order noise in near-zero
    # gradients into O(lr) differences and would hide real mismatches behind a loose tolerance.
    c = tiny_config(batch_size=16, optimizer="sgd", lr=0.1)
    c.model.hidden_size = 64  # big enough that FSDP really shards (leaves >= 4096 elements)
    c.model.mlp_dim = 128
    mesh = shd.make_mesh(data, fsdp, devices=devices)
    model, tx, schedule, init, _, shardings = train_lib.build(c, 3, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    step = jax.jit(
        functools.partial(ts.train_step, model=model, tx=tx, schedule=schedule),
        in_shardings=(shardings, shd.batch_sharding(mesh)),
        out_shardings=(shardings, None),
    )
    losses = []
    for i in range(3):
        state, m = step(state, shd.to_global(batch(seed=i), mesh))
        losses.append(float(m["loss"]))
    sharded = [x.sharding.spec for x in jax.tree.leaves(state["params"])]
    return losses, jax.device_get(state["params"]), sharded


ref_losses, ref_params, _ = run(1, 1, jax.devices()[:1])
for data, fsdp in [(8, 1), (2, 4)]:
    losses, params, specs = run(data, fsdp, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params
    )
    if fsdp > 1:
        assert any("fsdp" in str(s) for s in specs), specs
    print(f"MATCH data={data}" + (f",fsdp={fsdp}" if fsdp > 1 else ""), losses)
