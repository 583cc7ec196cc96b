"""Small building blocks shared by the encoder and the MAP head."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def gelu_exact(x):
    """x·Φ(x) with the erf form of Φ, computed in float32, with a one-pass backward.

    Same values as `jax.nn.gelu(x, approximate=False)` (within float32 rounding), which evaluates
    Φ through `erfc` (three rational approximations and a select per element on XLA:CPU) and
    whose autodiff stores three full-size intermediates. The backward here recomputes
    Φ(x) + x·φ(x) from x in one fused pass.
    """
    xf = x.astype(jnp.float32)
    return (0.5 * xf * (1.0 + jax.lax.erf(xf * (1 / math.sqrt(2))))).astype(x.dtype)


def _gelu_exact_fwd(x):
    return gelu_exact(x), x


def _gelu_exact_bwd(x, g):
    xf = x.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * (1 / math.sqrt(2))))
    pdf = jnp.exp(-0.5 * xf * xf) * (1 / math.sqrt(2 * math.pi))
    return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(g.dtype),)


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
