"""The ViT model: parameter counts and names, shapes, attention, norms, pooling, errors."""

import itertools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax import attention, layers, norms
from vit_jax.norms import NORMS
from vit_jax.pooling import POOLS
from vit_jax.posemb import POSEMB

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2)


def _param_count(variant, size=224, **kw):
    model = vit_jax.create_model(variant, 1000, **kw)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize(
    "variant,count",
    [
        ("Ti/16", 5_717_416),
        ("S/16", 22_050_664),
        ("B/16", 86_567_656),
        ("L/16", 304_326_632),
        ("H/14", 632_045_800),
    ],
)
def test_parameter_counts_match_the_paper_models(variant, count):
    assert _param_count(variant) == count


def test_parameter_names_and_shapes_match_google_checkpoints():
    model = vit_jax.create_model("B/16", 1000, representation_size=768)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))[
        "params"
    ]
    flat = {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(shapes).items()}
    assert flat["embedding/kernel"] == (16, 16, 3, 768)
    assert flat["cls"] == (1, 1, 768)
    assert flat["Transformer/posembed_input/pos_embedding"] == (1, 197, 768)
    blk = "Transformer/encoderblock_11/"
    for n in ("query", "key", "value"):
        assert flat[blk + f"MultiHeadDotProductAttention_0/{n}/kernel"] == (768, 12, 64)
        assert flat[blk + f"MultiHeadDotProductAttention_0/{n}/bias"] == (12, 64)
    assert flat[blk + "MultiHeadDotProductAttention_0/out/kernel"] == (12, 64, 768)
    assert flat[blk + "MlpBlock_0/Dense_0/kernel"] == (768, 3072)
    assert flat[blk + "MlpBlock_0/Dense_1/kernel"] == (3072, 768)
    for n in ("LayerNorm_0", "LayerNorm_1"):
        assert flat[blk + n + "/scale"] == (768,)
    assert flat["Transformer/encoder_norm/bias"] == (768,)
    assert flat["pre_logits/kernel"] == (768, 768)
    assert flat["head/kernel"] == (768, 1000)
    assert len(flat) == 4 + 12 * 16 + 2 + 2 + 2  # nothing unexpected


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_output_shapes_for_every_posemb_pool_norm(dtype):
    x = jnp.zeros((2, 8, 12, 3))  # non-square: a 2 x 3 patch grid
    for pe, pool, norm in itertools.product(POSEMB.names(), POOLS.names(), NORMS.names()):
        model = vit_jax.create_model(
            "Ti/4", 5, posemb=pe, pool=pool, norm=norm, dtype=dtype, **TINY
        )
        out, _ = jax.eval_shape(lambda m=model: m.init_with_output(jax.random.PRNGKey(0), x))
        if pool == "none":
            tokens = 6 + (0 if pool != "token" else 1)
            assert out.shape == (2, tokens, 5), (pe, pool, norm)
        else:
            assert out.shape == (2, 5), (pe, pool, norm)
        assert out.dtype == jnp.float32


@pytest.mark.parametrize("posemb", POSEMB.names())
def test_every_posemb_runs_in_bfloat16_and_float32(posemb):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    outs = {}
    for dtype in ("float32", "bfloat16"):
        model = vit_jax.create_model(
            "Ti/4", 3, posemb=posemb, dtype=dtype, head_bias_init=0.0, **TINY
        )
        model = model.clone(num_classes=0)  # features, so the zero-init head does not hide errors
        v = model.init(jax.random.PRNGKey(1), x)
        leaf = jax.tree.leaves(v["params"])[0]
        assert leaf.dtype == jnp.float32  # params stay float32
        outs[dtype] = model.apply(v, x)
        assert outs[dtype].shape == (2, 16) and np.isfinite(outs[dtype]).all()
    np.testing.assert_allclose(outs["bfloat16"], outs["float32"], atol=0.1, rtol=0.1)


def test_attention_paths_equal_a_naive_numpy_implementation():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 3, 8)).astype(np.float32) for _ in range(3))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    expect = np.einsum("bhqk,bkhd->bqhd", w, v)
    out, weights = attention.naive_attention(q, k, v)
    np.testing.assert_allclose(out, expect, atol=1e-5)
    np.testing.assert_allclose(weights, w, atol=1e-6)
    fused = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(fused, expect, atol=1e-5)
    # The odd-length padding used for cuDNN (5 tokens → 6, the extra key masked) changes nothing.
    np.testing.assert_allclose(attention.even_length_attention(q, k, v, "xla"), expect, atol=1e-5)
    np.testing.assert_allclose(attention.fused_attention(q, k, v), expect, atol=1e-5)


def _numpy_attention_and_grads(q, k, v, dout):
    """softmax(q kᵀ/√d) v and its gradients w.r.t. q, k, v, written out in float64 numpy."""
    q, k, v, dout = (x.astype(np.float64) for x in (q, k, v, dout))
    scale = q.shape[-1] ** -0.5
    p = np.exp(np.einsum("bqhd,bkhd->bhqk", q, k) * scale)
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", p, v)
    dv = np.einsum("bhqk,bqhd->bkhd", p, dout)
    dp = np.einsum("bqhd,bkhd->bhqk", dout, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    return out, (np.einsum("bhqk,bkhd->bqhd", ds, k), np.einsum("bhqk,bqhd->bkhd", ds, q), dv)


def test_manual_attention_values_and_gradients_equal_the_formula():
    rng = np.random.default_rng(1)
    q, k, v, dout = (rng.standard_normal((2, 7, 3, 8)).astype(np.float32) for _ in range(4))
    expect_out, expect_grads = _numpy_attention_and_grads(q, k, v, dout)
    out, vjp = jax.vjp(attention.manual_attention, q, k, v)
    np.testing.assert_allclose(out, expect_out, atol=1e-5)
    for got, want in zip(vjp(jnp.asarray(dout)), expect_grads):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # On CPU the default path is this one; XLA's own path agrees with it through autodiff.
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(attention.fused_attention(q, k, v), out)
    xla_grads = jax.vjp(lambda *a: attention.fused_attention(*a, "xla"), q, k, v)[1](dout)
    for got, want in zip(xla_grads, expect_grads):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # bfloat16 inputs: float32 softmax inside, bf16 results close to the float64 formula.
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    out, vjp = jax.vjp(attention.manual_attention, *bf)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(np.float32), expect_out, atol=0.05)
    for got, want in zip(vjp(jnp.asarray(dout, jnp.bfloat16)), expect_grads):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(got.astype(np.float32), want, atol=0.1)


def test_gelu_exact_equals_the_erf_formula_and_its_derivative():
    from scipy.special import erf  # noqa: PLC0415

    x = np.linspace(-8, 8, 2001).astype(np.float32)
    xd = x.astype(np.float64)
    want = 0.5 * xd * (1 + erf(xd / np.sqrt(2)))
    dwant = 0.5 * (1 + erf(xd / np.sqrt(2))) + xd * np.exp(-0.5 * xd**2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(layers.gelu_exact(x), want, atol=2e-6, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(layers.gelu_exact))(x), dwant, atol=2e-6)
    # Same as JAX's erfc-based exact GELU, and the tanh form stays available.
    np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
    np.testing.assert_allclose(layers.gelu(x, True), jax.nn.gelu(x, approximate=True), atol=1e-6)
    bf = layers.gelu_exact(jnp.asarray(x, jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(bf.astype(np.float32), want, atol=0.04, rtol=0.01)


@pytest.mark.parametrize(
    "x_shape,w_shape,dims",
    [
        ((2, 5, 6), (6, 4), (((2,), (0,)), ((), ()))),  # Dense
        ((2, 5, 6), (6, 3, 2), (((2,), (0,)), ((), ()))),  # query/key/value DenseGeneral
        ((2, 5, 3, 2), (3, 2, 6), (((2, 3), (0, 1)), ((), ()))),  # attention `out`
    ],
)
def test_dense_dot_general_values_and_gradients_equal_lax(x_shape, w_shape, dims):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
    want, want_vjp = jax.vjp(lambda a, b: jax.lax.dot_general(a, b, dims), x, w)
    got, got_vjp = jax.vjp(lambda a, b: layers.dense_dot_general(a, b, dims), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(want.shape, np.float32)
    for a, b in zip(got_vjp(g), want_vjp(g)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # The hand-written backward is the one in use (a custom_vjp in the traced program).
    assert "custom_vjp" in str(
        jax.make_jaxpr(layers.dense_dot_general, static_argnums=2)(x, w, dims)
    )


def test_layer_norm_values_and_gradients_equal_float64_autodiff():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 7, 24)) * 3 + 2).astype(np.float32)  # Offset rows, as in a ViT.
    scale, bias, g = (rng.standard_normal(s).astype(np.float32) for s in (24, 24, x.shape))
    got, vjp = jax.vjp(lambda *a: norms.layer_norm(*a, 1e-6), x, scale, bias)

    def formula(x, scale, bias):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * scale + bias

    with jax.enable_x64(True):
        args64 = [np.float64(a) for a in (x, scale, bias)]
        want, want_vjp = jax.vjp(formula, *args64)
        want_grads = want_vjp(np.float64(g))
    assert want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(vjp(g), want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_module_matches_flax_layer_norm(dtype):
    """Same parameters, output dtype, values and gradients as nn.LayerNorm (which it replaces on
    CPU; the model's `layernorm` entry builds it there)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16)) * 3 + 1
    ours, flax_ln = norms.LayerNorm(dtype=dtype), flax.linen.LayerNorm(1e-6, dtype=dtype)
    params = flax_ln.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda t: t + jax.random.normal(jax.random.PRNGKey(2), t.shape), params)
    assert jax.tree.structure(ours.init(jax.random.PRNGKey(1), x)) == jax.tree.structure(params)
    a, b = ours.apply(params, x), flax_ln.apply(params, x)
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-6)

    def grads(module):
        loss = lambda p, x: jnp.sin(module.apply(p, x).astype(jnp.float32)).sum()  # noqa: E731
        return jax.tree.leaves(jax.grad(loss, (0, 1))(params, x))

    for u, v in zip(grads(ours), grads(flax_ln)):
        np.testing.assert_allclose(u, v, atol=1e-5)
    made = NORMS.get("layernorm")(train=False, dtype=None, param_dtype=jnp.float32, name="n")
    assert type(made) is norms.LayerNorm  # These tests run on CPU.


def test_dense_dot_general_leaves_batched_contractions_to_lax():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 6), np.float32), rng.standard_normal((2, 6, 4), np.float32)
    dims = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(
        layers.dense_dot_general(x, w, dims), jax.lax.dot_general(x, w, dims)
    )
    assert "custom_vjp" not in str(
        jax.make_jaxpr(layers.dense_dot_general, static_argnums=2)(x, w, dims)
    )


def test_model_attn_impls_agree_and_naive_records_attention_maps():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model("Ti/4", 0, **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    ref, state = model.clone(attn_impl="naive").apply(v, x, mutable=["intermediates"])
    out = model.apply(v, x)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    maps = state["intermediates"]["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
    w = maps["attention_weights"][0]
    assert w.shape == (2, 2, 5, 5)  # [B, heads, 1 + 4 tokens, 1 + 4 tokens]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_intermediate_features_per_block():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model("Ti/4", 0, **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    feats = vit_jax.model.get_features(model, v, x)
    assert set(feats) >= {"block_0", "block_1", "pre_logits_input"}
    assert feats["block_1"].shape == (2, 5, 16)
    # The pooled token is the CLS of the last block after the final norm.
    ln = v["params"]["Transformer"]["encoder_norm"]
    t = feats["block_1"][:, 0]
    mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
    normed = (t - mu) / np.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
    np.testing.assert_allclose(feats["pre_logits_input"], normed, atol=1e-4)


def test_gap_without_posemb_is_invariant_to_permuting_patches():
    model = vit_jax.create_model("Ti/4", 0, posemb="none", pool="gap", **TINY)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 12, 3))
    v = model.init(jax.random.PRNGKey(1), x)
    patches = x.reshape(1, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 6, 4, 4, 3)
    perm = np.array([4, 0, 5, 2, 1, 3])
    shuffled = (
        patches[:, perm].reshape(1, 2, 3, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape)
    )
    assert not np.allclose(shuffled, x)
    np.testing.assert_allclose(model.apply(v, shuffled), model.apply(v, x), atol=1e-5)
    # With a position embedding the same permutation changes the output.
    model2 = model.clone(posemb="sincos2d")
    assert not np.allclose(model2.apply(v, shuffled), model2.apply(v, x), atol=1e-3)


def test_batchnorm_updates_stats_in_training_and_uses_them_in_eval():
    model = vit_jax.create_model("Ti/4", 3, norm="batchnorm", **TINY)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), x)
    stats = v["batch_stats"]["Transformer"]["encoderblock_0"]["LayerNorm_0"]
    np.testing.assert_array_equal(stats["mean"], 0.0)
    _, new = model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)}
    )
    new_stats = new["batch_stats"]["Transformer"]["encoderblock_0"]["LayerNorm_0"]
    assert not np.allclose(new_stats["mean"], 0.0)
    # Eval uses running statistics: different stats give different outputs, and eval is deterministic.
    out_old = model.clone(num_classes=0).apply(v, x)
    v2 = {"params": v["params"], "batch_stats": new["batch_stats"]}
    out_new = model.clone(num_classes=0).apply(v2, x)
    assert not np.allclose(out_old, out_new)
    np.testing.assert_array_equal(model.clone(num_classes=0).apply(v2, x), out_new)


def test_batchnorm_running_mean_formula():
    model = vit_jax.create_model("Ti/4", 3, norm="batchnorm", posemb="none", **TINY)
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    v = model.init(jax.random.PRNGKey(1), x)
    _, new = model.apply(v, x, train=True, mutable=["batch_stats"])
    # The first norm sees the patch embedding (+ CLS = 0): mean over batch and tokens.
    p = v["params"]
    emb = (
        jax.lax.conv_general_dilated(
            x, p["embedding"]["kernel"], (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + p["embedding"]["bias"]
    )
    tokens = jnp.concatenate([jnp.zeros((4, 1, 16)), emb.reshape(4, 4, 16)], axis=1)
    got = new["batch_stats"]["Transformer"]["encoderblock_0"]["LayerNorm_0"]["mean"]
    np.testing.assert_allclose(got, 0.1 * tokens.mean((0, 1)), rtol=1e-4, atol=1e-6)


def test_post_norm_layer_scale_qk_norm_map_and_heads():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model(
        "Ti/4", 4, norm_placement="post", layer_scale=0.1, qk_norm=True, pool="map",
        representation_size=8, head_bias=False, **TINY,
    )  # fmt: skip
    v = model.init(jax.random.PRNGKey(1), x)
    p = v["params"]
    blk = p["Transformer"]["encoderblock_0"]
    np.testing.assert_allclose(blk["ls1"]["scale"], 0.1)
    assert "query_norm" in blk["MultiHeadDotProductAttention_0"]
    assert "probe" in p["MAPHead_0"] and "bias" not in p["head"]
    np.testing.assert_array_equal(p["head"]["kernel"], 0.0)  # zero-initialised classifier
    np.testing.assert_array_equal(model.apply(v, x), 0.0)
    reg = model.clone(head="regression", head_bias=True)
    v = reg.init(jax.random.PRNGKey(1), x)
    out = reg.apply(v, x)
    assert out.shape == (2, 4) and np.abs(out).max() > 0


def test_dropout_and_drop_path_only_in_training_and_remat_is_exact():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model("Ti/4", 0, dropout_rate=0.1, drop_path_rate=0.5, **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    train_out = model.apply(v, x, train=True, rngs=rngs)
    assert not np.allclose(train_out, model.apply(v, x))
    remat = model.clone(remat=True)

    w = jax.random.normal(jax.random.PRNGKey(4), (2, 16))

    def loss(m, params):  # not invariant under the final LayerNorm, so gradients are not ~0
        return jnp.sum(m.apply({"params": params}, x, train=True, rngs=rngs) * w)

    g1 = jax.grad(lambda p: loss(model, p))(v["params"])
    g2 = jax.grad(lambda p: loss(remat, p))(v["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(posemb="rope3d"), "unknown posemb 'rope3d'; choose one of: none, learn"),
        (dict(norm="groupnorm"), "unknown norm 'groupnorm'"),
        (dict(pool="max"), "unknown pool 'max'"),
        (dict(num_heads=5), "num_heads=5 does not divide hidden_size=16"),
        (dict(posemb_typo=1), "unknown model option"),
        (dict(drop_path_rate=1.5), "drop_path_rate=1.5 must lie in"),
        (dict(dtype="float13"), "is not a dtype"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, message):
    opts = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        vit_jax.create_model("Ti/4", 3, **opts)


def test_bad_variant_and_patch_not_dividing_image():
    with pytest.raises(ValueError, match="unknown model variant 'X/16'"):
        vit_jax.create_model("X/16", 3)
    model = vit_jax.create_model("Ti/4", 3, **TINY)
    with pytest.raises(ValueError, match="image size 10x8 is not divisible by the patch size 4x4"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 10, 8, 3)))
