"""Scan over layers and remat policies: the stacked layout converts exactly, and a scanned model
computes what the unrolled one does (logits, gradients, features, attention rollout).

Dropout and drop-path in training are not compared: the scanned blocks split the dropout RNG per
block as `nn.scan` does, so the masks differ from the unrolled model's (both are correct).
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vit_jax
from vit_jax.models import scan
from vit_jax.models.layers import DropPath
from vit_jax.models.vit import REMAT_POLICIES
from vit_jax.tools import rollout

TINY = dict(hidden_size=16, depth=3, mlp_dim=32, num_heads=2)
X = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
CLOSE = dict(rtol=1e-5, atol=1e-6)


def _pair(**kw):
    """(unrolled model, scanned model, unrolled variables with random non-zero head)."""
    model = vit_jax.create_model("Ti/4", 5, **TINY, **kw)
    v = model.init(jax.random.PRNGKey(1), X)
    rng = np.random.default_rng(0)
    head = v["params"]["head"]
    v = flax.core.unfreeze(v)
    v["params"]["head"] = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32), head)
    return model, model.clone(scan=True), v


def _close(a, b):
    """Equal up to float32 rounding of sums taken in another order (relative to the leaf's scale)."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def _flat(tree):
    return flax.traverse_util.flatten_dict(tree)


def test_stack_and_unstack_are_exact_inverses_with_the_scanned_models_layout():
    model, scanned, v = _pair()
    stacked = scan.stack_blocks(v)
    want = jax.eval_shape(scanned.init, jax.random.PRNGKey(1), X)
    assert jax.tree.structure(stacked) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or 1 / 0, stacked, want)
    blocks = stacked["params"]["Transformer"]["encoderblock"]
    assert blocks["MlpBlock_0"]["Dense_0"]["kernel"].shape == (3, 16, 32)
    count = lambda t: sum(np.size(x) for x in jax.tree.leaves(t))  # noqa: E731
    assert count(stacked) == count(v)
    np.testing.assert_array_equal(
        blocks["LayerNorm_1"]["scale"][2],
        v["params"]["Transformer"]["encoderblock_2"]["LayerNorm_1"]["scale"],
    )
    back = scan.unstack_blocks(stacked)
    assert _flat(back).keys() == _flat(v).keys()
    jax.tree.map(np.testing.assert_array_equal, back, v)
    assert scan.stack_blocks(stacked) is not None and scan.is_stacked(stacked)
    assert not scan.is_stacked(v) and not scan.is_stacked(scan.unstack_blocks(v))
    # Abstract arrays convert too (restoring a checkpoint in the other layout needs it).
    abstract = scan.unstack_blocks(want)
    assert abstract["params"]["Transformer"]["encoderblock_1"]["LayerNorm_0"]["scale"].shape == (
        16,
    )


def _optimizer(params):
    labels = jax.tree.map(lambda _: "a", params)
    labels["head"] = jax.tree.map(lambda _: "b", params["head"])
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.multi_transform({"a": optax.adamw(1e-3), "b": optax.sgd(0.1, 0.9)}, labels),
    )


def test_conversion_reaches_into_optimizer_states():
    _, _, v = _pair()
    params, stacked_params = v["params"], scan.stack_blocks(v["params"])
    state = _optimizer(params).init(params)  # masked states hold MaskedNodes where not labelled
    stacked = scan.stack_blocks(state)
    want = _optimizer(stacked_params).init(stacked_params)
    assert jax.tree.structure(stacked) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, stacked, want)
    jax.tree.map(np.testing.assert_array_equal, scan.unstack_blocks(stacked), state)
    # match_layout converts each part to the layout of the same part of another tree.
    mixed = {"params": stacked_params, "opt": state}
    got = scan.match_layout({"params": params, "opt": stacked}, mixed)
    assert jax.tree.structure(got) == jax.tree.structure(mixed)
    jax.tree.map(np.testing.assert_array_equal, got, mixed)


def test_stacking_blocks_that_do_not_fit_is_an_error():
    with pytest.raises(ValueError, match=r"cannot stack encoder blocks \[0, 2\]"):
        scan.stack_blocks({"encoderblock_0": {"a": 1.0}, "encoderblock_2": {"a": 1.0}})
    with pytest.raises(ValueError, match="different structures"):
        scan.stack_blocks({"encoderblock_0": {"a": 1.0}, "encoderblock_1": {"b": 1.0}})


@pytest.mark.parametrize(
    "kw",
    [
        dict(posemb="rope2d", num_registers=2, pool="gap", layer_scale=0.1, qk_norm=True),
        dict(norm_placement="post", norm="batchnorm", posemb="relbias2d"),
        dict(remat=True, remat_policy="dots"),
    ],
    ids=["pre_rope2d_registers", "post_batchnorm_relbias2d", "remat"],
)
def test_scanned_logits_and_gradients_equal_the_unrolled_models(kw):
    model, scanned, v = _pair(**kw)
    stacked = scan.stack_blocks(v)
    np.testing.assert_allclose(scanned.apply(stacked, X), model.apply(v, X), **CLOSE)

    w = jax.random.normal(jax.random.PRNGKey(4), (2, 5))
    mutable = ["batch_stats"] if "batch_stats" in v else []

    def loss(m, params, variables):
        out, new = m.apply({**variables, "params": params}, X, train=True, mutable=mutable)
        return jnp.sum(out * w), new

    (l1, s1), g1 = jax.value_and_grad(loss, has_aux=True, argnums=1)(model, v["params"], v)
    (l2, s2), g2 = jax.value_and_grad(loss, has_aux=True, argnums=1)(
        scanned, stacked["params"], stacked
    )
    np.testing.assert_allclose(l2, l1, **CLOSE)
    jax.tree.map(_close, g2, scan.stack_blocks(g1))
    if mutable:  # BatchNorm's running statistics are stacked per block too
        jax.tree.map(_close, s2, scan.stack_blocks(s1))


@pytest.mark.parametrize("use_scan", [False, True])
def test_every_remat_policy_gives_the_same_loss_and_gradients(use_scan):
    model, _, v = _pair(dropout_rate=0.0)
    model = model.clone(scan=use_scan)
    params = scan.stack_blocks(v["params"]) if use_scan else v["params"]
    w = jax.random.normal(jax.random.PRNGKey(4), (2, 5))
    loss = lambda m, p: jnp.sum(m.apply({"params": p}, X, train=True) * w)  # noqa: E731
    l0, g0 = jax.value_and_grad(loss, argnums=1)(model, params)
    for name in REMAT_POLICIES:
        remat = model.clone(remat=True, remat_policy=name)
        l1, g1 = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(remat, params)
        np.testing.assert_allclose(l1, l0, **CLOSE)
        jax.tree.map(_close, g1, g0)


def test_bad_remat_policy_names_the_choices_and_a_policy_needs_remat():
    with pytest.raises(ValueError, match="unknown remat_policy 'dotz'; choose one of: full, dots"):
        vit_jax.create_model("Ti/4", 5, remat=True, remat_policy="dotz", **TINY)
    with pytest.raises(ValueError, match="remat_policy='dots' needs remat=True"):
        vit_jax.create_model("Ti/4", 5, remat_policy="dots", **TINY)
    from vit_jax.config import ConfigError, base_config, validate  # noqa: PLC0415

    c = base_config()
    c.model.remat, c.model.remat_policy = True, "nope"
    with pytest.raises(ConfigError, match=r"config.model: unknown remat_policy 'nope'"):
        validate(c, num_devices=1)


def test_features_and_attention_rollout_equal_the_unrolled_models():
    model, scanned, v = _pair()
    stacked = scan.stack_blocks(v)
    f1 = vit_jax.get_features(model, v, X)
    f2 = vit_jax.get_features(scanned, stacked, X)
    assert sorted(f1) == sorted(f2) == ["block_0", "block_1", "block_2", "pre_logits_input"]
    for k in f1:
        np.testing.assert_allclose(f2[k], f1[k], **CLOSE)
    m1 = rollout.attention_maps(model, v, X)
    m2 = rollout.attention_maps(scanned, stacked, X)
    assert len(m2) == 3 and m2[0].shape == (2, 2, 5, 5)
    for a, b in zip(m1, m2):
        np.testing.assert_allclose(b, a, **CLOSE)
    np.testing.assert_allclose(
        rollout.rollout_heatmap(scanned, stacked, X), rollout.rollout_heatmap(model, v, X), **CLOSE
    )


def test_training_mode_with_dropout_and_drop_path_runs_scanned():
    # Masks differ from the unrolled model's (per-block RNG split), so only the behaviour is checked.
    _, scanned, v = _pair(dropout_rate=0.1, drop_path_rate=0.5)
    stacked = scan.stack_blocks(v)
    run = lambda seed: scanned.apply(  # noqa: E731
        stacked, X, train=True, rngs={"dropout": jax.random.PRNGKey(seed)}
    )
    a, b = run(3), run(3)
    np.testing.assert_array_equal(a, b)  # same RNG, same masks
    assert not np.allclose(a, run(4)) and not np.allclose(a, scanned.apply(stacked, X))
    assert np.isfinite(a).all()


def test_drop_path_takes_a_traced_rate():
    x = jnp.ones((64, 3))
    rng = {"dropout": jax.random.PRNGKey(0)}
    layer = DropPath(0.5)
    f = jax.jit(lambda r: layer.apply({}, x, train=True, rate=r, rngs=rng))
    np.testing.assert_array_equal(f(0.0), x)  # a traced 0 drops nothing
    y = np.asarray(f(0.5))
    assert set(np.unique(y)) == {0.0, 2.0}  # kept branches scaled by 1 / keep
    np.testing.assert_array_equal(DropPath(0.0).apply({}, x, train=True, rate=0.9), x)
