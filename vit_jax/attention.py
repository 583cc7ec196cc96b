"""Multi-head self-attention with checkpoint-compatible parameter names.

Parameters: `query`/`key`/`value` kernels `[D, heads, head_dim]`, `out` kernel `[heads, head_dim, D]`
(the layout of Flax's `MultiHeadDotProductAttention` and Google's released ViT checkpoints).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

ATTN_IMPLS = ("xla", "cudnn", "auto", "naive")


def naive_attention(q, k, v, *, dropout_rng=None, dropout_rate=0.0):
    """Reference softmax(q kᵀ / √d) v with float32 softmax; also returns the weights `[B, H, Q, K]`."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    weights = jax.nn.softmax(logits, axis=-1)
    if dropout_rng is not None and dropout_rate > 0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    return out, weights


class MultiHeadDotProductAttention(nn.Module):
    """Self-attention over `[B, T, D]` tokens.

    Attributes:
      num_heads: number of heads; must divide the width.
      attn_impl: `xla`/`cudnn`/`auto` go through `jax.nn.dot_product_attention` (`auto` lets JAX pick
        the cuDNN fused kernel on GPU); `naive` is the plain reference path, which also records the
        attention weights under `intermediates/attention_weights`. Attention dropout in training
        always uses the naive path (the fused kernels have no dropout).
      qk_norm: LayerNorm over head_dim on queries and keys (ViT-22B).
      rope: a rotary scheme class from `vit_jax.posemb`, or None.
    """

    num_heads: int
    dropout_rate: float = 0.0
    qk_norm: bool = False
    attn_impl: str = "xla"
    rope: Optional[Any] = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, grid, num_prefix: int, train: bool = False):
        width = x.shape[-1]
        head_dim = width // self.num_heads
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim),
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B, T, H, hd]
        if self.qk_norm:
            ln = lambda name: nn.LayerNorm(
                1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name
            )  # noqa: E731,E501
            q, k = ln("query_norm")(q), ln("key_norm")(k)
        if self.rope is not None:
            rope = self.rope(num_heads=self.num_heads, param_dtype=self.param_dtype, name="rope")
            q, k = rope(q, grid, num_prefix), rope(k, grid, num_prefix)

        use_dropout = train and self.dropout_rate > 0
        if self.attn_impl == "naive" or use_dropout:
            rng = self.make_rng("dropout") if use_dropout else None
            out, weights = naive_attention(q, k, v, dropout_rng=rng, dropout_rate=self.dropout_rate)
            self.sow("intermediates", "attention_weights", weights)
        else:
            impl = None if self.attn_impl == "auto" else self.attn_impl
            out = jax.nn.dot_product_attention(q, k, v, implementation=impl)

        return nn.DenseGeneral(
            width,
            axis=(-2, -1),
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out)
