"""Multi-head self-attention with checkpoint-compatible parameter names.

Parameters: `query`/`key`/`value` kernels `[D, heads, head_dim]`, `out` kernel `[heads, head_dim, D]`
(the layout of Flax's `MultiHeadDotProductAttention` and Google's released ViT checkpoints).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import kernels as kernels_lib


def fused_attention(q, k, v, implementation: str, bias=None):
    """Attention over `[B, T, heads, head_dim]` by `implementation`: "xla" or "cudnn" (through
    `jax.nn.dot_product_attention`) or "manual" (`vit_jax.kernels.manual_attention`; with a logit
    `bias` `[B or 1, heads, T, T]`, which it has no input for, XLA's)."""
    if implementation == "auto":
        raise ValueError(
            "attn_impl='auto' reached the model unresolved; see vit_jax.kernels.resolve"
        )
    if bias is not None:
        implementation = "xla" if implementation == "manual" else implementation
        bias = bias.astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=implementation)
    if implementation == "manual":
        return kernels_lib.manual_attention(q, k, v)
    if implementation == "cudnn" and q.shape[1] % 2:
        return even_length_attention(q, k, v, implementation)
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def even_length_attention(q, k, v, implementation="cudnn"):
    """Attention over an odd number of tokens computed on an even number, for cuDNN.

    cuDNN's fused kernel has no backward pass for odd lengths (ViT's 196 patches + CLS = 197): one
    zero token is appended and hidden from every query by the kernel's padding mask
    (`key_value_seq_lengths`), then the extra output row is dropped, so the result is unchanged.
    """
    b, t = q.shape[:2]
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)))
    lengths = jnp.full((b,), t, jnp.int32)
    out = jax.nn.dot_product_attention(
        pad(q), pad(k), pad(v), query_seq_lengths=lengths, key_value_seq_lengths=lengths,
        implementation=implementation,
    )  # fmt: skip
    return out[:, :t]


def naive_attention(q, k, v, *, bias=None, dropout_rng=None, dropout_rate=0.0):
    """Reference softmax(q kᵀ / √d + bias) v with float32 softmax; also returns the weights
    `[B, H, Q, K]`."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias
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
      attn_impl: `xla`/`cudnn` go through `jax.nn.dot_product_attention`, `manual` is
        `vit_jax.kernels.manual_attention` (`auto` is resolved before, by `vit_jax.kernels.resolve`);
        `naive` is the plain reference path, which also records the attention weights under
        `intermediates/attention_weights`. Attention dropout in training always uses the naive
        path (the fused kernels have no dropout).
      kernels: kernel set of the projections and the QK-norm (`vit_jax.kernels`).
      qk_norm: LayerNorm over head_dim on queries and keys (ViT-22B).
      rope: a rotary scheme class from `vit_jax.models.posemb` (rotates queries and keys), a
        relative one from `vit_jax.models.relative` (adds a bias to the logits), or None.
      lsa: Locality Self-Attention (Lee et al. 2021): softmax(q·kᵀ / τ) with one learned
        `temperature` τ per layer (init √head_dim: the plain scale) and −inf on the diagonal (no
        token attends to itself). Queries are scaled by √head_dim / τ and the diagonal is a logit
        bias, so every path computes it; `cudnn` and `manual` run as `xla` (their kernels are
        not given the bias).
    """

    num_heads: int
    dropout_rate: float = 0.0
    qk_norm: bool = False
    attn_impl: str = "xla"
    kernels: str = "stock"
    rope: Optional[Any] = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    lsa: bool = False

    @nn.compact
    def __call__(self, x, *, grid, num_prefix: int, train: bool = False):
        width = x.shape[-1]
        head_dim = width // self.num_heads
        ops = kernels_lib.get(self.kernels)
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim),
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=ops.dot_general,
            name=name,
        )
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B, T, H, hd]
        if self.qk_norm:
            ln = lambda name: ops.layer_norm(  # noqa: E731
                epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name
            )
            q, k = ln("query_norm")(q), ln("key_norm")(k)
        bias = None
        if self.rope is not None and getattr(self.rope, "bias", False):
            relative = self.rope(num_heads=self.num_heads, param_dtype=self.param_dtype, name="rel")
            bias = relative(q, grid, num_prefix)
        elif self.rope is not None:
            rope = self.rope(num_heads=self.num_heads, param_dtype=self.param_dtype, name="rope")
            q, k = rope(q, grid, num_prefix), rope(k, grid, num_prefix)

        impl = self.attn_impl
        if self.lsa:
            init = nn.initializers.constant(head_dim**0.5)
            tau = self.param("temperature", init, (), self.param_dtype)
            q = q * (head_dim**0.5 / tau).astype(q.dtype)  # the paths' 1/√d scale then gives 1/τ
            t = x.shape[1]
            diagonal = jnp.where(jnp.eye(t, dtype=bool), -jnp.inf, 0.0)[None, None]  # [1,1,T,T]
            bias = diagonal if bias is None else bias + diagonal
            impl = "xla" if impl == "cudnn" else impl  # "manual" with a bias runs as xla too

        use_dropout = train and self.dropout_rate > 0
        if self.attn_impl == "naive" or use_dropout:
            rng = self.make_rng("dropout") if use_dropout else None
            out, weights = naive_attention(
                q, k, v, bias=bias, dropout_rng=rng, dropout_rate=self.dropout_rate
            )
            self.sow("intermediates", "attention_weights", weights)
        else:
            out = fused_attention(q, k, v, implementation=impl, bias=bias)

        return nn.DenseGeneral(
            width,
            axis=(-2, -1),
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=ops.dot_general,
            name="out",
        )(out)
