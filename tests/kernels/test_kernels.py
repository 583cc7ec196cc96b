"""vit_jax.kernels: each hand-written kernel against a float64 formula or the stock op it
replaces, the kernel sets, and `resolve` (the one place that chooses them by backend)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax import kernels
from vit_jax.models import attention
from vit_jax.models.norms import NORMS


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
    out, vjp = jax.vjp(kernels.manual_attention, q, k, v)
    np.testing.assert_allclose(out, expect_out, atol=1e-5)
    for got, want in zip(vjp(jnp.asarray(dout)), expect_grads):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The model's "manual" path is this kernel; XLA's own path agrees with it through autodiff.
    np.testing.assert_array_equal(attention.fused_attention(q, k, v, "manual"), out)
    xla_grads = jax.vjp(lambda *a: attention.fused_attention(*a, "xla"), q, k, v)[1](dout)
    for got, want in zip(xla_grads, expect_grads):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # bfloat16 inputs: float32 softmax inside, bf16 results close to the float64 formula.
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    out, vjp = jax.vjp(kernels.manual_attention, *bf)
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
    np.testing.assert_allclose(kernels.gelu_exact(x), want, atol=2e-6, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(kernels.gelu_exact))(x), dwant, atol=2e-6)
    # Same as JAX's erfc-based exact GELU (the "stock" kernel set's).
    stock = kernels.get("stock").gelu_exact
    np.testing.assert_allclose(kernels.gelu_exact(x), stock(x), atol=2e-6)
    bf = kernels.gelu_exact(jnp.asarray(x, jnp.bfloat16))
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
    got, got_vjp = jax.vjp(lambda a, b: kernels.dense_dot_general(a, b, dims), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(want.shape, np.float32)
    for a, b in zip(got_vjp(g), want_vjp(g)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # The hand-written backward is the one in use (a custom_vjp in the traced program).
    assert "custom_vjp" in str(
        jax.make_jaxpr(kernels.dense_dot_general, static_argnums=2)(x, w, dims)
    )


def test_layer_norm_values_and_gradients_equal_float64_autodiff():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 7, 24)) * 3 + 2).astype(np.float32)  # Offset rows, as in a ViT.
    scale, bias, g = (rng.standard_normal(s).astype(np.float32) for s in (24, 24, x.shape))
    got, vjp = jax.vjp(lambda *a: kernels.layer_norm(*a, 1e-6), x, scale, bias)

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
    """Same parameters, output dtype, values and gradients as nn.LayerNorm (which it replaces in the
    "cpu" kernel set; the model's `layernorm` entry builds it there)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16)) * 3 + 1
    ours, flax_ln = kernels.LayerNorm(dtype=dtype), flax.linen.LayerNorm(1e-6, dtype=dtype)
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
    for name, cls in (("cpu", kernels.LayerNorm), ("stock", flax.linen.LayerNorm)):
        made = NORMS.get("layernorm")(
            train=False, dtype=None, param_dtype=jnp.float32, kernels=name, name="n"
        )
        assert type(made) is cls


def test_dense_dot_general_leaves_batched_contractions_to_lax():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 6), np.float32), rng.standard_normal((2, 6, 4), np.float32)
    dims = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(
        kernels.dense_dot_general(x, w, dims), jax.lax.dot_general(x, w, dims)
    )
    assert "custom_vjp" not in str(
        jax.make_jaxpr(kernels.dense_dot_general, static_argnums=2)(x, w, dims)
    )


@pytest.mark.parametrize(
    "backend,want",
    [("cpu", ("cpu", "manual")), ("gpu", ("stock", "cudnn")), ("tpu", ("stock", "xla"))],
)
def test_resolve_auto_by_backend_and_explicit_names_pass_through(backend, want):
    assert kernels.resolve("auto", "auto", backend) == want
    assert kernels.resolve("stock", "naive", backend) == ("stock", "naive")
    assert kernels.resolve("cpu", "auto", backend) == ("cpu", want[1])
    if backend == "gpu":
        assert kernels.resolve("stock", "cudnn", backend) == ("stock", "cudnn")
    else:  # an option valid elsewhere but not on this machine: one line, before compiling
        with pytest.raises(ValueError, match=f"attn_impl='cudnn' needs an NVIDIA GPU.*'{backend}'"):
            kernels.resolve("stock", "cudnn", backend)


def test_unresolved_auto_and_unknown_sets_are_errors():
    with pytest.raises(ValueError, match="unresolved"):
        kernels.get("auto")
    with pytest.raises(ValueError, match="unknown kernels 'gpu'; choose one of: stock, cpu"):
        kernels.get("gpu")
    with pytest.raises(ValueError, match="kernels"):
        vit_jax.create_model("Ti/4", 3, kernels="fast")


def test_model_values_and_gradients_are_the_same_with_either_kernel_set():
    """The traced program follows the `kernels` option (custom VJPs or none), the values do not."""
    opts = dict(hidden_size=32, depth=2, mlp_dim=64, num_heads=4, pool="map", attn_impl="xla")
    stock = vit_jax.create_model("Ti/4", 5, kernels="stock", **opts)
    cpu = vit_jax.create_model("Ti/4", 5, kernels="cpu", **opts)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    params = jax.jit(stock.init)(jax.random.PRNGKey(1), x)
    # A non-zero head, so gradients reach every layer.
    params = jax.tree.map(lambda t: t + 0.05 * jnp.ones_like(t), params)

    def value_and_grad(model):
        loss = lambda p: jnp.sum(jnp.sin(model.apply(p, x)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss)), jax.make_jaxpr(loss)(params)

    (f_stock, jaxpr_stock), (f_cpu, jaxpr_cpu) = value_and_grad(stock), value_and_grad(cpu)
    (l_stock, g_stock), (l_cpu, g_cpu) = f_stock(params), f_cpu(params)
    np.testing.assert_allclose(l_cpu, l_stock, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_stock)):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)
    assert "custom_vjp" in str(jaxpr_cpu)
    assert "custom_vjp" not in str(jaxpr_stock)
