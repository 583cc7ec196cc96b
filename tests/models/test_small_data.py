"""Small-data ViTs: CCT's conv tokenizer and sequence pooling, Shifted Patch Tokenization and
Locality Self-Attention, each against a reference written here (lax ops or NumPy)."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models import scan, tokenizers
from vit_jax.models.attention import MultiHeadDotProductAttention
from vit_jax.models.pooling import POOLS

TINY = dict(hidden_size=16, depth=1, mlp_dim=32, num_heads=2)
F32 = types.SimpleNamespace(compute_dtype=jnp.float32, params_dtype=jnp.float32)


def _images(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _params(model, images):
    return model.init(jax.random.PRNGKey(1), images)["params"]


# ------------------------------------------------------------------ conv tokenizer (CCT)
def _cct_reference(x, kernels, kernel_size):
    """CCT's Tokenizer with lax ops: per stage conv (stride max(1, k//2-1), padding k//2, no bias),
    ReLU, max-pool 3x3 stride 2 padding 1."""
    s, p = max(1, kernel_size // 2 - 1), kernel_size // 2
    for w in kernels:
        x = jax.lax.conv_general_dilated(
            x, w, (s, s), [(p, p), (p, p)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )  # fmt: skip
        x = jax.lax.reduce_window(
            jnp.maximum(x, 0.0), -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
            ((0, 0), (1, 1), (1, 1), (0, 0)),
        )  # fmt: skip
    return x


@pytest.mark.parametrize(
    "layers,kernel,grid", [(1, 3, 16), (2, 3, 8), (1, 7, 8)]
)  # 32x32 images: 32 / 2^layers for 3x3 (stride 1); 7x7 convs have stride 2
def test_conv_tokenizer_equals_a_lax_reference(layers, kernel, grid):
    x = _images((2, 32, 32, 3))
    tok = tokenizers.ConvTokenizer(24, layers, kernel)
    params = _params(tok, x)
    kernels = [params[f"conv_{i}"]["kernel"] for i in range(layers)]
    widths = [k.shape[-1] for k in kernels]
    assert widths == [64] * (layers - 1) + [24]  # CCT: 64 inner channels, hidden_size last
    assert all(k.shape[:3] == (kernel, kernel, c) for k, c in zip(kernels, [3] + widths))
    assert set(params) == {f"conv_{i}" for i in range(layers)}  # no conv bias
    out = tok.apply({"params": params}, x)
    assert out.shape == (2, grid, grid, 24)
    assert tokenizers.conv_downsampling(layers, kernel) == 32 // grid
    np.testing.assert_allclose(out, _cct_reference(x, kernels, kernel), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers,posemb", [(1, "learn"), (2, "learn"), (2, "learn2d")])
def test_conv_tokenizer_model_token_grid(layers, posemb):
    """32x32 images (32x16 for learn2d, whose row/col tables show the grid's two sides)."""
    patch = 2**layers
    model = vit_jax.create_model(
        None, 10, **TINY, patch_size=patch, tokenizer="conv", conv_layers=layers, pool="seq",
        posemb=posemb,
    )  # fmt: skip
    x = _images((2, 32, 16 if posemb == "learn2d" else 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    h, w = 32 // patch, x.shape[2] // patch
    assert vit_jax.get_features(model, variables, x)["block_0"].shape == (2, h * w, 16)  # no CLS
    table = variables["params"]["Transformer"]["posembed_input"]
    shapes = {k: v.shape for k, v in table.items()}
    if posemb == "learn":
        assert shapes == {"pos_embedding": (1, h * w, 16)}
    else:
        assert shapes == {"row": (h, 16), "col": (w, 16)}
    assert "embedding" not in variables["params"]


def test_cct_7_3x1_parameter_count_against_the_paper():
    """CCT-7/3x1 (CIFAR-10, 32 px): width 256, 7 blocks, MLP 512, 4 heads; the paper: 3.76M."""
    model = vit_jax.create_model(
        None, 10, patch_size=2, hidden_size=256, depth=7, mlp_dim=512, num_heads=4,
        tokenizer="conv", conv_layers=1, conv_kernel=3, pool="seq", posemb="learn",
    )  # fmt: skip
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    d, m, tokens = 256, 512, 16 * 16
    block = 2 * 2 * d + 3 * (d * d + d) + (d * d + d) + (d * m + m) + (m * d + d)
    hand = 3 * 3 * 3 * d + tokens * d + 7 * block + 2 * d + (d + 1) + (d * 10 + 10)
    assert count == hand == 3_765_515
    # CCT's code has qkv = Linear(d, 3d, bias=False); ours has query/key/value biases: 7 * 3d.
    cct = count - 7 * 3 * d
    assert cct == 3_760_139 and round(cct / 1e6, 2) == 3.76


# ------------------------------------------------------------------ sequence pooling
class _Pool(nn.Module):
    num_prefix: int

    @nn.compact
    def __call__(self, x):
        return POOLS.get("seq")(x, num_prefix=self.num_prefix, model=F32)


@pytest.mark.parametrize("num_prefix", [0, 1])
def test_seq_pool_equals_numpy(num_prefix):
    x = _images((3, 6, 8))
    pool = _Pool(num_prefix)
    params = _params(pool, x)
    w, b = np.asarray(params["seq_pool"]["kernel"]), np.asarray(params["seq_pool"]["bias"])
    assert w.shape == (8, 1) and b.shape == (1,)
    xs = np.asarray(x, np.float64)[:, num_prefix:]  # patch tokens only
    score = (xs @ w + b)[..., 0]
    a = np.exp(score - score.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    want = np.einsum("bt,btd->bd", a, xs)
    out = pool.apply({"params": params}, x)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ shifted patch tokenization
def _np_shift(x, dy, dx):
    out = np.zeros_like(x)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            if 0 <= i - dy < x.shape[1] and 0 <= j - dx < x.shape[2]:
                out[:, i, j] = x[:, i - dy, j - dx]
    return out


def test_shift_images_equals_numpy():
    x = np.arange(2 * 6 * 8 * 3, dtype=np.float32).reshape(2, 6, 8, 3)
    out = np.asarray(tokenizers.shift_images(jnp.asarray(x), (2, 1)))
    assert out.shape == (2, 6, 8, 15)
    want = [x] + [_np_shift(x, 2 * dy, 1 * dx) for dy, dx in tokenizers.SPT_SHIFTS]
    np.testing.assert_array_equal(out, np.concatenate(want, -1))
    # by hand: the first shift moves content down 2 rows, right 1 column, zeros moving in
    np.testing.assert_array_equal(out[:, 3, 4, 3:6], x[:, 1, 3])
    np.testing.assert_array_equal(out[:, :2, :, 3:6], 0.0)
    np.testing.assert_array_equal(out[:, :, :1, 3:6], 0.0)
    np.testing.assert_array_equal(out[:, 0, 0, 12:15], x[:, 2, 1])  # up 2, left 1


@pytest.mark.parametrize("patch", [(4, 4), (4, 2)])
def test_shifted_patch_tokenizer_equals_numpy(patch):
    ph, pw = patch
    x = _images((2, 8, 8, 3))
    tok = tokenizers.ShiftedPatchTokenizer(16, patch)
    params = _params(tok, x)
    xs = np.asarray(x, np.float64)
    cat = np.concatenate(
        [xs] + [_np_shift(xs, dy * (ph // 2), dx * (pw // 2)) for dy, dx in tokenizers.SPT_SHIFTS],
        -1,
    )
    h, w = 8 // ph, 8 // pw
    flat = np.stack(
        [
            np.stack(
                [
                    cat[:, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw].reshape(2, -1)
                    for c in range(w)
                ],
                1,
            )  # fmt: skip
            for r in range(h)
        ],
        1,
    )  # [B, h, w, ph*pw*5C], (row, column, channel) within a patch
    assert flat.shape == (2, h, w, ph * pw * 15)
    ln = (flat - flat.mean(-1, keepdims=True)) / np.sqrt(flat.var(-1, keepdims=True) + 1e-5)
    ln = ln * np.asarray(params["norm"]["scale"]) + np.asarray(params["norm"]["bias"])
    want = ln @ np.asarray(params["embedding"]["kernel"]) + np.asarray(params["embedding"]["bias"])
    out = tok.apply({"params": params}, x)
    assert out.shape == (2, h, w, 16)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_spt_model_grid():
    model = vit_jax.create_model(None, 10, **TINY, patch_size=4, tokenizer="spt", pool="gap")
    x = _images((1, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert vit_jax.get_features(model, variables, x)["block_0"].shape == (1, 64, 16)
    assert variables["params"]["tokenizer"]["embedding"]["kernel"].shape == (4 * 4 * 15, 16)


# ------------------------------------------------------------------ locality self-attention
def _np_lsa(x, p, heads, tau):
    """softmax(q kᵀ / τ) with the diagonal at −inf; returns (weights [B, H, T, T], output)."""
    proj = {n: (np.asarray(p[n]["kernel"], np.float64), np.asarray(p[n]["bias"], np.float64))
            for n in ("query", "key", "value")}  # fmt: skip
    q, k, v = (np.einsum("btd,dhe->bthe", x, w) + b for w, b in proj.values())
    logits = np.einsum("bqhe,bkhe->bhqk", q, k) / tau
    logits[..., np.arange(x.shape[1]), np.arange(x.shape[1])] = -np.inf
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhe->bqhe", a, v)
    w_out, b_out = (np.asarray(p["out"][n], np.float64) for n in ("kernel", "bias"))
    out = np.einsum("bqhe,hed->bqd", out, w_out) + b_out
    return a, out


def _lsa_layer(impl):
    return MultiHeadDotProductAttention(num_heads=2, attn_impl=impl, lsa=True)


def _run(layer, params, x):
    out, state = layer.apply(
        {"params": params}, x, grid=(2, 2), num_prefix=1, mutable=["intermediates"]
    )
    weights = state.get("intermediates", {}).get("attention_weights", (None,))[0]
    return out, weights


def test_lsa_attention_equals_numpy_and_masks_the_diagonal():
    x = _images((2, 5, 8))
    layer = _lsa_layer("naive")
    params = layer.init(jax.random.PRNGKey(1), x, grid=(2, 2), num_prefix=1)["params"]
    assert float(params["temperature"]) == pytest.approx(2.0)  # √head_dim, head_dim = 4
    xs = np.asarray(x, np.float64)
    entropies = []
    for tau in (2.0, 0.5, 8.0):
        p = {**params, "temperature": jnp.float32(tau)}
        out, weights = _run(layer, p, x)
        want_w, want_out = _np_lsa(xs, p, 2, tau)
        np.testing.assert_allclose(weights, want_w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-5)
        diag = np.asarray(weights)[..., np.arange(5), np.arange(5)]
        assert np.all(diag == 0.0)  # exactly: no token attends to itself
        w = np.asarray(weights, np.float64)
        entropies.append(-np.sum(w * np.log(np.maximum(w, 1e-300)), -1).mean())
        for impl in ("xla", "manual"):  # the fused paths compute the same attention
            np.testing.assert_allclose(_run(_lsa_layer(impl), p, x)[0], out, atol=1e-5)
    # a lower temperature sharpens the weights, a higher one flattens them
    assert entropies[1] < entropies[0] < entropies[2]


def test_lsa_temperature_gets_the_gradient_of_the_reference():
    x = _images((2, 5, 8))
    layer = _lsa_layer("xla")
    params = layer.init(jax.random.PRNGKey(1), x, grid=(2, 2), num_prefix=1)["params"]
    g = np.asarray(_images((2, 5, 8), seed=3), np.float64)

    def loss(p):
        out = layer.apply({"params": p}, x, grid=(2, 2), num_prefix=1)
        return jnp.sum(out * g)

    grads = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(grads))  # the −inf stays harmless
    tau, eps = float(params["temperature"]), 1e-4
    ref = lambda t: np.sum(_np_lsa(np.asarray(x, np.float64), params, 2, t)[1] * g)  # noqa: E731
    want = (ref(tau + eps) - ref(tau - eps)) / (2 * eps)
    assert abs(want) > 1e-3
    np.testing.assert_allclose(float(grads["temperature"]), want, rtol=1e-3)


def test_lsa_model_has_a_temperature_per_layer():
    model = vit_jax.create_model(None, 10, **{**TINY, "depth": 2}, patch_size=8, lsa=True)
    x = _images((1, 16, 16, 3))
    params = model.init(jax.random.PRNGKey(0), x)["params"]["Transformer"]
    for i in range(2):
        tau = params[f"encoderblock_{i}"]["MultiHeadDotProductAttention_0"]["temperature"]
        assert tau.shape == () and float(tau) == pytest.approx(np.sqrt(8.0))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).shape == (1, 10)
    # no token attends to itself in any layer: every attention map's diagonal is exactly 0
    naive = vit_jax.create_model(None, 10, **{**TINY, "depth": 2}, patch_size=8, lsa=True,
                                 attn_impl="naive")  # fmt: skip
    _, state = naive.apply(variables, x, mutable=["intermediates"])
    maps = jax.tree.leaves(state["intermediates"]["Transformer"])
    maps = [m for m in maps if m.ndim == 4]
    assert len(maps) == 2 and all(m.shape == (1, 2, 5, 5) for m in maps)
    assert all(np.all(np.asarray(m)[..., np.arange(5), np.arange(5)] == 0.0) for m in maps)


# ------------------------------------------------------------------ option checks
@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(tokenizer="cnn"), "unknown tokenizer 'cnn'"),
        (dict(tokenizer="conv", patch_size=16), "set patch_size=2"),
        (dict(tokenizer="conv", conv_layers=2, patch_size=2), "set patch_size=4"),
        (dict(tokenizer="conv", conv_kernel=4, patch_size=2), "conv_kernel=4 must be an odd"),
        (dict(tokenizer="conv", conv_layers=0, patch_size=2), "conv_layers=0 must be an int"),
        (dict(conv_layers=2), "shape tokenizer='conv' only"),
        (dict(tokenizer="spt", patch_size=1), "tokenizer='spt' shifts by half a patch"),
        (dict(lsa="yes"), "lsa='yes' must be True or False"),
    ],
)
def test_bad_options_fail_with_one_line(opts, match):
    opts = {"patch_size": 4, **opts}
    with pytest.raises(ValueError, match=match) as e:
        vit_jax.create_model(None, 10, **TINY, **opts)
    assert "\n" not in str(e.value)


def test_scanned_small_data_vit_equals_the_unrolled_one():
    """CCT-style conv tokenizer + seq pool + LSA under nn.scan: temperatures stack to [depth]."""
    kw = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, patch_size=2, tokenizer="conv")
    model = vit_jax.create_model(None, 5, **kw, pool="seq", lsa=True, attn_impl="xla")
    x = _images((2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    p = variables["params"]
    p = {**p, "head": jax.tree.map(lambda a: a + 0.1, p["head"])}  # a non-zero head
    blocks = p["Transformer"]
    p["Transformer"] = {  # distinct temperatures per block
        **blocks,
        **{
            f"encoderblock_{i}": {
                **blocks[f"encoderblock_{i}"],
                "MultiHeadDotProductAttention_0": {
                    **blocks[f"encoderblock_{i}"]["MultiHeadDotProductAttention_0"],
                    "temperature": jnp.float32(1.5 + i),
                },
            }
            for i in range(2)
        },
    }
    stacked = scan.stack_blocks({"params": p})
    tau = stacked["params"]["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_0"]
    np.testing.assert_array_equal(tau["temperature"], [1.5, 2.5])
    want = model.apply({"params": p}, x)
    got = model.clone(scan=True).apply(stacked, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
