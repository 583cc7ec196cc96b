"""Training a model with scan over layers: the optimizer's per-parameter rules (layer_decay
included) give the unrolled model's updates, and checkpoints resume across `model.scan`."""

import shutil

import jax
import numpy as np
import optax
import pytest

import vit_jax
from tests.helpers.tiny import tiny_config
from vit_jax import train as train_lib
from vit_jax.models import scan
from vit_jax.train import checkpoint, optim
from vit_jax.train import sharding as shd
from vit_jax.train.checkpoint import Checkpointer

TINY = dict(hidden_size=16, depth=3, mlp_dim=32, num_heads=2)
X = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))


def _params_and_grads():
    model = vit_jax.create_model("Ti/4", 5, **TINY)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), X)["params"]
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    return params, grads


def _two_updates(config, params, grads):
    tx = optim.make_optimizer(config, params)
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _close(a, b, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "rules,per_block",
    [
        (dict(), False),
        (dict(lr_mults=((".*encoderblock_\\d+/MlpBlock.*", 0.5), ("head/.*", 3.0))), False),
        (dict(layer_decay=0.7, ema_decay=0.9), True),
        (dict(lr_mults=(("Transformer/encoderblock_1/.*", 0.1),)), True),
        (dict(optimizer="adafactor"), True),
    ],
    ids=["default", "same_for_all_blocks", "layer_decay", "one_block", "adafactor"],
)
def test_scanned_updates_equal_the_unrolled_ones(rules, per_block):
    config = tiny_config(weight_decay=0.1, grad_clip=1.0, **rules)
    params, grads = _params_and_grads()
    p1, s1 = _two_updates(config, params, grads)
    p2, s2 = _two_updates(config, scan.stack_blocks(params), scan.stack_blocks(grads))
    jax.tree.map(_close, p2, scan.stack_blocks(p1))
    # Rules that differ between blocks run on the per-block view: that state stays unrolled.
    core = s2[0] if config.ema_decay else s2
    assert scan.is_stacked(core) != per_block
    if config.ema_decay:
        assert scan.is_stacked(optim.ema_of(s2))  # the EMA matches the model's params
    jax.tree.map(_close, s2, scan.match_layout(s1, s2))


def _state(params):
    tx = optax.adamw(1e-3)
    return dict(step=np.int32(3), params=params, opt_state=tx.init(params))


def test_a_checkpoint_restores_into_the_other_layout(tmp_path):
    params, _ = _params_and_grads()
    unrolled = _state(params)
    stacked = _state(scan.stack_blocks(params))
    mesh = shd.make_mesh(1, 1, jax.devices()[:1])
    for name, saved, other in (("u", unrolled, stacked), ("s", stacked, unrolled)):
        ckpt = Checkpointer(str(tmp_path / name), 2, async_save=False)
        ckpt.save(3, saved)
        ckpt.close()
        abstract = jax.eval_shape(lambda s=other: s)
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract, shd.tree_shardings(abstract, mesh),
        )  # fmt: skip
        got = checkpoint.restore(str(tmp_path / name / "checkpoints"), 3, target)
        assert jax.tree.structure(got) == jax.tree.structure(other)
        jax.tree.map(np.testing.assert_array_equal, got, other)
        host = checkpoint.restore(str(tmp_path / name / "checkpoints"), 3, jax.device_get(other))
        jax.tree.map(np.testing.assert_array_equal, host, other)
        as_saved = checkpoint.restore(str(tmp_path / name / "checkpoints"), 3)  # as written
        assert scan.is_stacked(as_saved) == (name == "s")


def _digits_config(**kw):
    c = tiny_config(dataset="digits", image_size=8, batch_size=32, eval_batch_size=64, **kw)
    c.checkpoint_every = 1000
    c.eval_every = 0
    c.layer_decay = 0.8  # scanned: the optimizer's state unrolled, the EMA stacked (both converted)
    c.ema_decay = 0.9
    # SGD: Adam's m / sqrt(v) would magnify the float32 rounding by which the layouts differ.
    c.optimizer, c.momentum, c.lr = "sgd", 0.9, 0.1
    return c


def _final(workdir):
    ckpt = Checkpointer(workdir, 3)
    state = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    return state


def test_a_run_resumes_with_scan_switched_on_and_off(tmp_path):
    # A scanned model initialises its blocks with other random numbers than an unrolled one, so
    # each direction is compared with the same run resumed in its own layout.
    config = _digits_config(total_steps=3)
    for first in (False, True):
        same, other = str(tmp_path / f"{first}_same"), str(tmp_path / f"{first}_other")
        config.model.scan = first
        assert train_lib.train_and_evaluate(config, same, stop_at=2) == {"stopped_at": 2}
        shutil.copytree(same, other)
        train_lib.train_and_evaluate(config, same)
        config.model.scan = not first
        train_lib.train_and_evaluate(config, other)  # resumes at 2 in the other layout
        want, got = _final(same), _final(other)
        assert int(got["step"]) == 3 and scan.is_stacked(got["params"]) != first
        want, got = scan.unstack_blocks(want), scan.unstack_blocks(got)
        for key in ("params", "opt_state"):
            jax.tree.map(lambda a, b: _close(a, b, rtol=1e-4, atol=1e-6), got[key], want[key])


def test_inference_loads_a_scanned_run_into_either_layout(tmp_path):
    from vit_jax.tools import inference  # noqa: PLC0415

    config = tiny_config(image_size=8, num_classes=5)
    config.model.update(dict(norm="batchnorm", scan=True, **TINY))
    model = vit_jax.models.from_config(config.model, 5)
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(1), X))()
    state = dict(step=np.int32(1), params=variables["params"], batch_stats=variables["batch_stats"])
    ckpt = Checkpointer(str(tmp_path), 2, async_save=False)
    ckpt.save(1, state)
    ckpt.close()
    (tmp_path / "config.json").write_text(config.to_json())
    want = model.apply(variables, X)
    for use_scan in (True, False):
        config.model.scan = use_scan
        m, v, _, _ = inference.load_run(str(tmp_path), config)
        assert scan.is_stacked(v) == use_scan and m.scan == use_scan
        np.testing.assert_allclose(m.apply(v, X), want, rtol=1e-5, atol=1e-6)
