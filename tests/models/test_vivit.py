"""The vivit family: tubelets, ViViT's three encoders, the space-time position schemes."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models import posemb3d, vivit

TINY = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2)


def _model(classes=3, **kw):
    opts = {**TINY, "tubelet_size": 2, "num_frames": 4, "pool": "gap", "posemb": "learn_sep", **kw}
    return vit_jax.create_model(None, classes, model_name="vivit", attn_impl="xla", **opts)


def test_tubelet_embedding_equals_a_3d_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 8, 12, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 4, 2, 3, 5)).astype(np.float32)  # non-cubic t × p × q
    bias = rng.normal(size=(5,)).astype(np.float32)
    got = vivit.tubelets(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias))
    want = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(3, 4, 2), padding="VALID",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision="highest",
    ) + bias  # fmt: skip
    assert got.shape == (2, 2, 2, 6, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encoder", vivit.ENCODERS)
@pytest.mark.parametrize("scheme", posemb3d.POSEMB3D.names())
def test_every_encoder_and_scheme_runs_and_resizes_to_other_clips(encoder, scheme):
    model = _model(encoder=encoder, posemb=scheme)
    clips = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 8, 8, 3)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), clips)
    out = model.apply(variables, clips)
    assert out.shape == (2, 3) and np.isfinite(out).all()
    if (vivit.ENCODERS.index(encoder) + posemb3d.POSEMB3D.names().index(scheme)) % 3 == 0:
        other = jnp.concatenate([clips, clips], 1)[:, :6, :, :12]  # 6 frames, 8×12: resized
        assert np.isfinite(model.apply(variables, other)).all()


def _ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _attention(x, p):
    """softmax(q kᵀ/√d) v over axis -2 of x [..., N, D], by einsum."""
    q, k, v = (
        np.einsum("...nd,dhe->...nhe", x, p[n]["kernel"]) + p[n]["bias"]
        for n in ("query", "key", "value")
    )
    logits = np.einsum("...qhe,...khe->...hqk", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("...hqk,...khe->...qhe", w, v)
    return np.einsum("...qhe,hed->...qd", out, p["out"]["kernel"]) + p["out"]["bias"]


def test_factorised_attention_block_equals_an_einsum_reference():
    model = _model(encoder="factorised_attention", posemb="none", final_norm=False)
    rng = np.random.default_rng(2)
    clips = rng.normal(size=(2, 4, 8, 8, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(3), jnp.asarray(clips))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    params = jax.tree.map(lambda a: a + rng.normal(size=a.shape) * 0.1, params)  # no zero inits
    got = model.apply({"params": params}, jnp.asarray(clips))
    state = model.apply({"params": params}, jnp.asarray(clips), mutable=["intermediates"])[1]
    tokens = np.asarray(flax.traverse_util.flatten_dict(state["intermediates"])[
        ("Transformer", "block_0")][0])  # fmt: skip

    emb = params["embedding"]
    x = np.einsum("bTtHpWqc,tpqcd->bTHWd", clips.reshape(2, 2, 2, 2, 4, 2, 4, 3), emb["kernel"])
    x = (x + emb["bias"]).reshape(2, 2, 4, 16)  # [B, t, h·w, D]
    blk = params["Transformer"]["encoderblock_0"]
    x = x + _attention(_ln(x, blk["LayerNorm_0"]), blk["MultiHeadDotProductAttention_0"])
    xt = x.transpose(0, 2, 1, 3)  # [B, h·w, t, D]: attention across frames
    x = x + _attention(_ln(xt, blk["LayerNorm_t"]), blk["TemporalAttention"]).transpose(0, 2, 1, 3)
    mlp = blk["MlpBlock_0"]
    h = _ln(x, blk["LayerNorm_1"]) @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"]
    h = 0.5 * h * (1 + jax.scipy.special.erf(h / np.sqrt(2)))
    x = x + np.asarray(h) @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    np.testing.assert_allclose(tokens, x.reshape(2, 8, 16), rtol=2e-3, atol=2e-3)
    logits = x.reshape(2, 8, 16).mean(1) @ params["head"]["kernel"] + params["head"]["bias"]
    np.testing.assert_allclose(got, logits, rtol=2e-3, atol=2e-3)


def test_sincos3d_table_is_its_formula():
    t, h, w, d = 3, 2, 4, 32
    table = posemb3d.sincos_3d(t, h, w, d)
    ds, dt = posemb3d.sincos_split(d)
    assert (ds, dt) == (24, 8) and table.shape == (t, h, w, d)
    q = ds // 4
    om_s = 1.0 / 10_000 ** (np.arange(q) / (q - 1))
    om_t = 1.0 / 10_000 ** (np.arange(dt // 2) / (dt // 2))
    for tau, y, x in np.ndindex(t, h, w):
        want = np.concatenate([np.sin(x * om_s), np.cos(x * om_s), np.sin(y * om_s), np.cos(y * om_s),
                               np.sin(tau * om_t), np.cos(tau * om_t)])  # fmt: skip
        np.testing.assert_allclose(table[tau, y, x], want, atol=1e-6)


def test_rope3d_angles_are_their_formula_and_relative_in_time_and_space():
    hd = 16  # 8 pairs: 3 for x, 3 for y, 2 for time
    assert posemb3d.rope3d_pairs(hd) == (3, 2)
    grid = (3, 2, 4)
    angles = posemb3d.axial_angles_3d(grid, hd)
    f3, f2 = 100.0 ** (-np.arange(3) / 3), 100.0 ** (-np.arange(2) / 2)
    for i, (tau, y, x) in enumerate(np.ndindex(*grid)):
        np.testing.assert_allclose(angles[i], np.concatenate([x * f3, y * f3, tau * f2]), rtol=1e-6)
    # q·k after rotation depends only on the offset: shift both tokens by (1, 1, 1)
    rope = posemb3d.Rope3D()
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.normal(size=(1, 24, 1, hd)), jnp.float32) for _ in range(2))
    q = jnp.tile(q[:, :1], (1, 24, 1, 1))  # one query vector at every position
    k = jnp.tile(k[:, :1], (1, 24, 1, 1))
    rq, rk = rope.apply({}, q, grid, 0), rope.apply({}, k, grid, 0)
    idx = lambda tau, y, x: (tau * 2 + y) * 4 + x  # noqa: E731
    dot = lambda a, b: float(jnp.sum(rq[0, a] * rk[0, b]))  # noqa: E731
    assert dot(idx(0, 0, 0), idx(1, 1, 2)) == pytest.approx(dot(idx(1, 0, 1), idx(2, 1, 3)), 1e-4)
    assert dot(idx(0, 0, 0), idx(1, 0, 0)) != pytest.approx(dot(idx(0, 0, 0), idx(0, 0, 0)), 1e-3)


def test_learned_tables_joint_and_separable_and_their_resize():
    x = jnp.zeros((1, 2, 2, 3, 8))
    sep = posemb3d.LearnedSeparable()
    v = sep.init(jax.random.PRNGKey(0), x)
    out = sep.apply(v, x)
    p = v["params"]
    np.testing.assert_allclose(out[0], p["space"][None] + p["time"][:, None, None], atol=1e-7)
    joint = posemb3d.Learned3D()
    vj = joint.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(joint.apply(vj, x)[0], vj["params"]["pos_embedding"])
    big = jnp.zeros((1, 4, 2, 3, 8))  # twice the frames: linear along time, space unchanged
    want = jax.image.resize(vj["params"]["pos_embedding"], (4, 2, 3, 8), "linear")
    np.testing.assert_allclose(joint.apply(vj, big)[0], want, atol=1e-6)


def test_without_position_one_frame_tubelets_under_joint_attention_are_a_bag():
    # features (no head): a zero-initialised head would hide every difference
    model = _model(0, encoder="joint", posemb="none", tubelet_size=1)
    clips = jnp.asarray(np.random.default_rng(4).normal(size=(1, 4, 8, 8, 3)), jnp.float32)
    v = model.init(jax.random.PRNGKey(0), clips)
    shuffled = clips[:, ::-1]  # frames reversed: the same bag of tokens
    np.testing.assert_allclose(model.apply(v, clips), model.apply(v, shuffled), atol=1e-5)
    learned = _model(0, encoder="joint", posemb="learn_sep", tubelet_size=1)
    vl = learned.init(jax.random.PRNGKey(0), clips)
    assert not np.allclose(learned.apply(vl, clips), learned.apply(vl, shuffled), atol=1e-5)


def test_scan_matches_the_unrolled_factorised_attention_model():
    clips = jnp.asarray(np.random.default_rng(5).normal(size=(1, 4, 8, 8, 3)), jnp.float32)
    plain = _model(encoder="factorised_attention", posemb="rope3d", depth=2)
    v = plain.init(jax.random.PRNGKey(0), clips)
    scanned = _model(encoder="factorised_attention", posemb="rope3d", depth=2, scan=True)
    enc = dict(v["params"]["Transformer"])
    stacked = jax.tree.map(
        lambda *a: jnp.stack(a), *[enc.pop(f"encoderblock_{i}") for i in range(2)]
    )
    params = {**v["params"], "Transformer": {**enc, "encoderblock": stacked}}
    np.testing.assert_allclose(scanned.apply({"params": params}, clips), plain.apply(v, clips),
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "opts, words",
    [
        (dict(encoder="model4"), "unknown vivit encoder"),
        (dict(posemb="sincos2d"), "unknown vivit posemb"),
        (dict(num_frames=5), "not a multiple of tubelet_size"),
        (dict(encoder="factorised_attention", pool="token"), "no prefix tokens"),
        (dict(tokenizer="spt"), "image-only"),
    ],
)
def test_bad_options_are_one_line_errors(opts, words):
    with pytest.raises(ValueError, match=words):
        _model(**opts)


def test_flops_of_each_encoder_counted_in_the_jaxpr_equal_their_formula():
    from vit_jax.tools import flops  # noqa: PLC0415

    d, mlp, classes, (nt, h, w) = 16, 32, 3, (4, 2, 2)  # 8×8×8 clips, tubelets 2×4×4
    n = nt * h * w
    embed, head = 2 * n * 2 * 4 * 4 * 3 * d, 2 * d * classes
    att, ffn = flops._attention_flops, flops._mlp_flops
    want = {
        "joint": embed + att(n, n, d, d) + ffn(n, d, mlp) + head,
        "factorised_attention": embed + nt * att(h * w, h * w, d, d) + h * w * att(nt, nt, d, d)
        + ffn(n, d, mlp) + head,
        "factorised_encoder": embed + nt * (att(h * w, h * w, d, d) + ffn(h * w, d, mlp))
        + att(nt, nt, d, d) + ffn(nt, d, mlp) + head,
    }  # fmt: skip
    for encoder, formula in want.items():
        model = _model(encoder=encoder, posemb="sincos3d", num_frames=8, kernels="stock")
        assert flops.jaxpr_forward_flops(model, (8, 8, 8)) == formula, encoder
