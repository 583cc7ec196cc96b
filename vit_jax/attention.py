"""Multi-head self-attention with checkpoint-compatible parameter names.

Parameters: `query`/`key`/`value` kernels `[D, heads, head_dim]`, `out` kernel `[heads, head_dim, D]`
(the layout of Flax's `MultiHeadDotProductAttention` and Google's released ViT checkpoints).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.layers import dense_dot_general

ATTN_IMPLS = ("xla", "cudnn", "manual", "auto", "naive")


def fused_attention(q, k, v, implementation=None):
    """Attention over `[B, T, heads, head_dim]`; `None` picks the fastest path for the backend.

    `None`: cuDNN's fused kernel on GPU (H200, B/16 bf16 training: 3,314 vs 2,592 img/s with XLA),
    `manual_attention` on CPU (2 cores, small ViT training: ~5% faster than XLA's), XLA's on TPU.
    `"xla"` and `"cudnn"` go through `jax.nn.dot_product_attention`.
    """
    if implementation is None:
        implementation = {"gpu": "cudnn", "cpu": "manual"}.get(jax.default_backend())
    if implementation == "manual":
        return manual_attention(q, k, v)
    if implementation == "cudnn" and q.shape[1] % 2:
        return even_length_attention(q, k, v, implementation)
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


@jax.custom_vjp
def manual_attention(q, k, v):
    """softmax(q kᵀ / √d) v with a hand-written backward pass (float32 logits and softmax).

    Autodiff of the XLA path materialises a broadcast mask-shaped tensor and transposes q, k, v
    and the gradients around every batched matmul; here the forward keeps the head-major copies
    it made, and the backward is the flash-attention formula in one pass over the saved
    probabilities: dS = P ∘ (dP − rowsum(dO ∘ O)).
    """
    return _manual_attention_fwd(q, k, v)[0]


def _heads_first(x):
    return jnp.swapaxes(x, 1, 2)  # [B, T, H, d] <-> [B, H, T, d]


def _manual_attention_fwd(q, k, v):
    qt = _heads_first(q) * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    kt, vt = _heads_first(k), _heads_first(v)
    logits = jnp.matmul(qt, jnp.swapaxes(kt, -1, -2), preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.matmul(probs.astype(v.dtype), vt)  # [B, H, T, d]
    return _heads_first(out), (qt, kt, vt, probs, out)


def _manual_attention_bwd(res, grad):
    qt, kt, vt, probs, out = res
    gt = _heads_first(grad)
    dv = jnp.matmul(jnp.swapaxes(probs, -1, -2).astype(gt.dtype), gt)
    dp = jnp.matmul(gt, jnp.swapaxes(vt, -1, -2), preferred_element_type=jnp.float32)
    delta = jnp.sum(gt.astype(jnp.float32) * out.astype(jnp.float32), -1, keepdims=True)
    ds = (probs * (dp - delta)).astype(qt.dtype)
    dq = jnp.matmul(ds, kt) * jnp.asarray(qt.shape[-1] ** -0.5, qt.dtype)
    dk = jnp.matmul(jnp.swapaxes(ds, -1, -2), qt)
    return _heads_first(dq), _heads_first(dk), _heads_first(dv)


manual_attention.defvjp(_manual_attention_fwd, _manual_attention_bwd)


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
      attn_impl: `xla`/`cudnn` go through `jax.nn.dot_product_attention`, `manual` is
        `manual_attention`, `auto` picks cuDNN on GPU, `manual` on CPU, XLA on TPU; `naive` is the plain
        reference path, which also records the attention weights under
        `intermediates/attention_weights`. Attention dropout in training
        always uses the naive path (the fused kernels have no dropout).
      qk_norm: LayerNorm over head_dim on queries and keys (ViT-22B).
      rope: a rotary scheme class from `vit_jax.posemb`, or None.
    """

    num_heads: int
    dropout_rate: float = 0.0
    qk_norm: bool = False
    attn_impl: str = "auto"
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
            dot_general=dense_dot_general,
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
            out = fused_attention(q, k, v, implementation=impl)

        return nn.DenseGeneral(
            width,
            axis=(-2, -1),
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=dense_dot_general,
            name="out",
        )(out)
