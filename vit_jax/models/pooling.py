"""Pooling of the encoder's tokens `[B, P + N, D]` into one vector per image, by name (`POOLS`).

Each entry is `fn(x, *, num_prefix, model) -> array`; `model` is the calling VisionTransformer, used
for its hyper-parameters when a pool has parameters (MAP).
"""

import flax.linen as nn
import jax.numpy as jnp

from vit_jax import kernels as kernels_lib
from vit_jax.common.registry import Registry
from vit_jax.models.layers import MlpBlock

POOLS = Registry("pool")


@POOLS.register("token")
def token(x, *, num_prefix: int, model):
    if num_prefix < 1:
        raise ValueError(
            "pool='token' needs a class token; set cls_token=True or pick another pool"
        )
    return x[:, 0]


@POOLS.register("gap")
def gap(x, *, num_prefix: int, model):
    """Mean over patch tokens (prefix tokens excluded)."""
    return jnp.mean(x[:, num_prefix:], axis=1)


@POOLS.register("gap_norm")
def gap_norm(x, *, num_prefix: int, model):
    """Mean over patch tokens, then a LayerNorm `fc_norm` (epsilon 1e-6): timm's `global_pool='avg'`
    with its default `fc_norm`. timm then has no norm before pooling: `final_norm=False` here."""
    ln = kernels_lib.get(model.kernels).layer_norm
    kw = dict(dtype=model.compute_dtype, param_dtype=model.params_dtype)
    return ln(epsilon=1e-6, name="fc_norm", **kw)(jnp.mean(x[:, num_prefix:], axis=1))


@POOLS.register("none")
def none(x, *, num_prefix: int, model):
    """All tokens, unpooled `[B, P + N, D]`."""
    return x


@POOLS.register("seq")
def seq_pool(x, *, num_prefix: int, model):
    """Sequence pooling (CCT, Hassani et al. 2021): a learned score per patch token, `seq_pool` =
    Dense(1); the tokens' sum weighted by softmax(score) over the patch tokens (prefix tokens
    excluded, as `gap`; CCT has none)."""
    kw = dict(dtype=model.compute_dtype, param_dtype=model.params_dtype)
    x = x[:, num_prefix:]
    score = nn.Dense(1, name="seq_pool", **kw)(x)[..., 0]  # [B, N]
    weights = nn.softmax(score.astype(jnp.float32), axis=-1).astype(x.dtype)
    return jnp.einsum("bn,bnd->bd", weights, x)


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision): a learned probe attends over all tokens.

    Its MLP uses the encoder's activation (`gelu_approximate`): big_vision's MAP head calls the same
    `MlpBlock`, so a checkpoint trained there needs the tanh GELU here too.
    """

    num_heads: int
    mlp_dim: int
    gelu_approximate: bool = False
    kernels: str = "stock"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, _, d = x.shape
        init = nn.initializers.xavier_uniform()
        probe = self.param("probe", init, (1, 1, d), self.param_dtype)
        probe = jnp.tile(probe.astype(x.dtype), (b, 1, 1))
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            kernel_init=init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )(probe, x)
        y = nn.LayerNorm(1e-6, dtype=self.dtype, param_dtype=self.param_dtype)(x)
        mlp = MlpBlock(
            self.mlp_dim,
            gelu_approximate=self.gelu_approximate,
            kernels=self.kernels,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        x = x + mlp(y)
        return x[:, 0]


@POOLS.register("map")
def map_pool(x, *, num_prefix: int, model):
    head = MAPHead(
        num_heads=model.num_heads,
        mlp_dim=model.mlp_dim,
        gelu_approximate=model.gelu_approximate,
        kernels=model.kernels,
        dtype=model.compute_dtype,
        param_dtype=model.params_dtype,
        name="MAPHead_0",
    )
    return head(x)
