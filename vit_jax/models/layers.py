"""Small building blocks shared by the encoder and the MAP head."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import kernels as kernels_lib


class MlpBlock(nn.Module):
    """Transformer MLP: Dense_0 → GELU → dropout → Dense_1 → dropout.

    `kernels` names the kernel set (`vit_jax.kernels`) of the Dense contractions and the exact GELU.
    """

    mlp_dim: int
    dropout_rate: float = 0.0
    gelu_approximate: bool = False
    kernels: str = "stock"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        ops = kernels_lib.get(self.kernels)
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
            dot_general=ops.dot_general,
            name=name,
        )
        y = dense(self.mlp_dim, "Dense_0")(x)
        y = jax.nn.gelu(y, approximate=True) if self.gelu_approximate else ops.gelu_exact(y)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        y = dense(x.shape[-1], "Dense_1")(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=not train)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per example with probability `rate`.

    A call may pass its own `rate`, also a traced one (each block's rate under scan over layers);
    a `rate` attribute of 0 still switches the module off.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool = False, rate=None):
        if not train or self.rate == 0.0:
            return x
        keep_prob = 1.0 - (self.rate if rate is None else rate)
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
