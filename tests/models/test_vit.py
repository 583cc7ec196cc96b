"""The ViT model: parameter counts and names, shapes, attention, norms, pooling, errors."""

import itertools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models import attention
from vit_jax.models.norms import NORMS
from vit_jax.models.pooling import POOLS
from vit_jax.models.posemb import POSEMB

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
    np.testing.assert_allclose(attention.fused_attention(q, k, v, "xla"), expect, atol=1e-5)
    np.testing.assert_allclose(attention.fused_attention(q, k, v, "manual"), expect, atol=1e-5)


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
        (dict(posemb="rope4d"), "unknown posemb 'rope4d'; choose one of: none, learn"),
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


def test_registers_join_attention_but_not_pooling_nor_the_position_table():
    """Darcet et al. 2024: r learned tokens after the CLS token, without position embedding,
    dropped before pooling; the GAP output is the mean of the final patch tokens only."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model("Ti/4", 0, num_registers=3, pool="gap", **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    assert v["params"]["registers"].shape == (1, 3, 16)
    assert v["params"]["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 4, 16)
    feats = vit_jax.model.get_features(model, v, x)
    assert feats["block_1"].shape == (2, 3 + 4, 16)  # no CLS with gap: registers + 2x2 patches
    ln = v["params"]["Transformer"]["encoder_norm"]
    t = feats["block_1"][:, 3:]  # the patches
    normed = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
    expect = (normed * ln["scale"] + ln["bias"]).mean(1)
    np.testing.assert_allclose(model.apply(v, x), expect, atol=1e-4)
    # The registers take part in attention: other register values change the output.
    moved = jax.tree.map(lambda a: a, v)
    moved["params"]["registers"] = v["params"]["registers"] + 1.0
    assert not np.allclose(model.apply(moved, x), model.apply(v, x), atol=1e-4)
    # All tokens out (pool none): CLS + patches, registers removed.
    tokens = model.clone(pool="none", cls_token=True)
    vt = tokens.init(jax.random.PRNGKey(1), x)
    assert tokens.apply(vt, x).shape == (2, 1 + 4, 16)


def test_attention_rollout_with_registers_covers_the_patch_grid():
    from vit_jax.tools import rollout  # noqa: PLC0415

    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 12, 3))
    model = vit_jax.create_model("Ti/4", 3, num_registers=2, attn_impl="naive", **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    heat = rollout.rollout_heatmap(model, v, x)
    assert heat.shape == (1, 2, 3)
    maps = rollout.attention_maps(model, v, x)
    assert maps[0].shape[-1] == 1 + 2 + 6  # CLS, 2 registers, 6 patches attend to each other
    full = rollout.rollout(maps)
    np.testing.assert_allclose(heat.reshape(1, -1), full[:, 0, 3:], rtol=1e-6)


def test_prefix_posemb_false_leaves_the_class_token_without_position():
    """big_vision's convention: with a `learn` table, the CLS token enters the encoder as the bare
    `cls` parameter; the table keeps its prefix row (Google's layout), which then gets no gradient."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    with_pos = vit_jax.create_model("Ti/4", 3, posemb="learn", **TINY)
    v = with_pos.init(jax.random.PRNGKey(1), x)
    v["params"]["Transformer"]["posembed_input"]["pos_embedding"] = jax.random.normal(
        jax.random.PRNGKey(2), (1, 5, 16)
    )
    v["params"]["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(3), (16, 3))
    without = with_pos.clone(prefix_posemb=False)
    assert jax.tree.map(jnp.shape, without.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
        jnp.shape, v
    )
    # Zeroing the CLS row of the table gives the with-position model the same output.
    zeroed = jax.tree.map(lambda a: a, v)
    table = v["params"]["Transformer"]["posembed_input"]["pos_embedding"]
    zeroed["params"]["Transformer"]["posembed_input"]["pos_embedding"] = table.at[:, 0].set(0.0)
    np.testing.assert_allclose(without.apply(v, x), with_pos.apply(zeroed, x), atol=1e-6)
    assert not np.allclose(without.apply(v, x), with_pos.apply(v, x), atol=1e-4)
    grad = jax.grad(lambda p: without.apply({"params": p}, x).sum())(v["params"])
    row = grad["Transformer"]["posembed_input"]["pos_embedding"]
    assert float(jnp.abs(row[:, 0]).max()) == 0.0 and float(jnp.abs(row[:, 1:]).max()) > 0
