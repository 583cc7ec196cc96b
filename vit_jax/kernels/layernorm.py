"""LayerNorm whose reductions, forward and backward, are matmuls (XLA:CPU)."""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


class LayerNorm(nn.Module):
    """`nn.LayerNorm` (same parameters `scale` and `bias`, float32 statistics, same output dtype)
    computed by `layer_norm`."""

    epsilon: float = 1e-6
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, scale, bias)
        f32 = lambda t: t.astype(jnp.promote_types(t.dtype, jnp.float32))  # noqa: E731
        return layer_norm(f32(x), f32(scale), f32(bias), self.epsilon).astype(dtype)


def _row_mean(x):
    """Mean over the last axis as a matrix-vector product."""
    return x @ jnp.full(x.shape[-1:], 1.0 / x.shape[-1], x.dtype)


def _normalize(x, epsilon):
    mean = _row_mean(x)
    var = jnp.maximum(_row_mean(x * x) - mean * mean, 0.0)  # E[x²] - E[x]², as nn.LayerNorm
    rstd = jax.lax.rsqrt(var + epsilon)[..., None]
    return (x - mean[..., None]) * rstd, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon: float):
    """LayerNorm over the last axis with every reduction, forward and backward, a matmul.

    XLA:CPU runs row reductions in elementwise loops; as matrix-vector products (and the
    hand-written backward below: two row means, two column sums) 8 LayerNorms forward and backward
    on [32, 197, 192] took 15 vs 24 ms, the Ti/16 and small CPU train steps +2-4% (interleaved,
    docs/performance.md). Autodiff through the same forward was slower than nn.LayerNorm (35 ms).
    """
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    xhat, rstd = _normalize(x, epsilon)
    return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(epsilon, res, g):
    del epsilon
    xhat, rstd, scale = res
    gx = g * scale
    dx = rstd * (gx - _row_mean(gx)[..., None] - xhat * _row_mean(gx * xhat)[..., None])
    g2, xhat2 = g.reshape(-1, g.shape[-1]), xhat.reshape(-1, g.shape[-1])
    ones = jnp.ones(g2.shape[:1], g.dtype)
    return dx, ones @ (g2 * xhat2), ones @ g2


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
