"""Small building blocks shared by the encoder and the MAP head."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for Dense layers, with the weight gradient as one 2-D matmul over all tokens.

    For `x [..., K] @ W [K, N]` (or several trailing contracted axes, as in the attention's
    `DenseGeneral`s) autodiff contracts the gradient over the leading batch and token axes of 3-D
    and 4-D tensors, and XLA:CPU copies operands into transposed layouts first; flattening the
    tokens to `[M, K]ᵀ @ [M, N]` measured +4-5% (median) on the small CPU ViT step and +2-4% on
    Ti/16 (docs/performance.md). Same values: tests/test_model.py. Other contractions (batch
    axes, leading contracted axes, explicit precision) go to `lax.dot_general` unchanged.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    n = len(lc)
    trailing = tuple(lc) == tuple(range(lhs.ndim - n, lhs.ndim)) and tuple(rc) == tuple(range(n))
    if lb or rb or not trailing or precision is not None or preferred_element_type is not None:
        return lax.dot_general(
            lhs, rhs, dimension_numbers, precision=precision,
            preferred_element_type=preferred_element_type,
        )  # fmt: skip
    return _dense_dot(lhs, rhs, n)


def _contract_trailing(lhs, rhs, n):
    return lax.dot_general(
        lhs, rhs, ((tuple(range(lhs.ndim - n, lhs.ndim)), tuple(range(n))), ((), ()))
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_dot(lhs, rhs, n):
    return _contract_trailing(lhs, rhs, n)


def _dense_dot_fwd(lhs, rhs, n):
    return _contract_trailing(lhs, rhs, n), (lhs, rhs)


def _dense_dot_bwd(n, res, g):
    lhs, rhs = res
    free = rhs.ndim - n  # output feature axes
    dx = lax.dot_general(
        g, rhs, ((tuple(range(g.ndim - free, g.ndim)), tuple(range(n, rhs.ndim))), ((), ()))
    )
    k = math.prod(rhs.shape[:n])
    tokens_x, tokens_g = lhs.reshape(-1, k), g.reshape(-1, math.prod(rhs.shape[n:]))
    dw = lax.dot_general(tokens_x, tokens_g, (((0,), (0,)), ((), ())))
    return dx.astype(lhs.dtype), dw.reshape(rhs.shape).astype(rhs.dtype)


_dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


@jax.custom_vjp
def gelu_exact(x):
    """x·Φ(x) with the erf form of Φ, computed in float32, with a one-pass backward.

    Same values as `jax.nn.gelu(x, approximate=False)` (within float32 rounding), which evaluates
    Φ through `erfc` (three rational approximations and a select per element on XLA:CPU) and
    whose autodiff stores three full-size intermediates. The backward here recomputes
    Φ(x) + x·φ(x) from x in one fused pass.
    """
    xf = x.astype(jnp.float32)
    return (xf * _normal_cdf(xf)).astype(x.dtype)


def _normal_cdf(x):
    return 0.5 * (1.0 + lax.erf(x * (1 / math.sqrt(2))))


def _gelu_exact_fwd(x):
    return gelu_exact(x), x


def _gelu_exact_bwd(x, g):
    xf = x.astype(jnp.float32)
    pdf = jnp.exp(-0.5 * xf * xf) * (1 / math.sqrt(2 * math.pi))
    return ((g.astype(jnp.float32) * (_normal_cdf(xf) + xf * pdf)).astype(g.dtype),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


def gelu(x, approximate: bool = False):
    """Exact GELU (`gelu_exact`), or the tanh approximation of `jax.nn.gelu`."""
    return jax.nn.gelu(x, approximate=True) if approximate else gelu_exact(x)


class MlpBlock(nn.Module):
    """Transformer MLP: Dense_0 → GELU → dropout → Dense_1 → dropout."""

    mlp_dim: int
    dropout_rate: float = 0.0
    gelu_approximate: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
            dot_general=dense_dot_general,
            name=name,
        )
        y = gelu(dense(self.mlp_dim, "Dense_0")(x), self.gelu_approximate)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        y = dense(x.shape[-1], "Dense_1")(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=not train)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per example with probability `rate`."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if not train or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
        return jnp.where(keep, x / keep_prob, 0).astype(x.dtype)


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (CaiT), initialised to `init_value`."""

    init_value: float
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.constant(self.init_value)
        scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
        return x * scale.astype(x.dtype)
