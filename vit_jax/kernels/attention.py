"""Attention with a hand-written (flash-attention formula) backward pass (XLA:CPU)."""

import jax
import jax.numpy as jnp


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
