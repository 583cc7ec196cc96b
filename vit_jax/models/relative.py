"""Relative position schemes: a bias on the attention logits that depends on where the query and
the key are relative to each other (the third kind of `POSEMB` scheme, `bias = True`).

* `rel` — the ViT paper's relative position embeddings (Dosovitskiy et al. 2021, Appendix D.4): one
  learned embedding per 1-D offset p_q − p_k between patches (row-major), used as the keys of an
  extra attention with the same queries; its logits q·e(p_q − p_k)/√d are added to the content
  logits before the softmax. Pairs with a prefix (CLS) token share one more learned embedding.
* `relbias2d` — a learned bias per head and 2-D offset (Δrow, Δcol), as Swin and BEiT: a table of
  (2h − 1)(2w − 1) entries per head, plus three per head for CLS→patch, patch→CLS and CLS→CLS.

Both tables are resized (bilinearly) when the model runs on another grid, like a learned table.
Attention with a bias runs through `jax.nn.dot_product_attention` (the `manual` kernel has no bias
input, so `attn_impl="manual"` uses XLA's attention for these schemes).
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vit_jax.models.posemb import POSEMB, Grid, _stored_or_new, resize_axis, resize_grid


def offsets_2d(grid: Grid) -> Tuple[np.ndarray, np.ndarray]:
    """(Δrow + h − 1, Δcol + w − 1) `[N, N]` of every (query, key) pair of patches, row-major."""
    h, w = grid
    y, x = np.mgrid[:h, :w]
    y, x = y.reshape(-1), x.reshape(-1)
    return y[:, None] - y[None, :] + h - 1, x[:, None] - x[None, :] + w - 1


def _with_prefix(patches, prefix, num_prefix: int):
    """`[H, N, N]` patch-pair biases and `[3, H]` prefix biases → `[H, P + N, P + N]`."""
    if not num_prefix:
        return patches
    heads, n = patches.shape[0], patches.shape[1]
    to_patch = jnp.broadcast_to(prefix[0][:, None, None], (heads, num_prefix, n))
    from_patch = jnp.broadcast_to(prefix[1][:, None, None], (heads, n, num_prefix))
    among = jnp.broadcast_to(prefix[2][:, None, None], (heads, num_prefix, num_prefix))
    top = jnp.concatenate([among, to_patch], axis=2)
    bottom = jnp.concatenate([from_patch, patches], axis=2)
    return jnp.concatenate([top, bottom], axis=1)


class _Relative(nn.Module):
    """A relative scheme: built in each attention layer, returns a bias on its logits."""

    rotary = False
    bias = True
    num_heads: int = 1
    param_dtype: jnp.dtype = jnp.float32


@POSEMB.register("relbias2d")
class RelativeBias2D(_Relative):
    """Learned per-head bias for each 2-D offset between patches (Swin / BEiT)."""

    @nn.compact
    def __call__(self, q, grid: Grid, num_prefix: int):
        """Logit bias `[1, heads, T, T]` for queries `q` `[B, T, heads, hd]`."""
        h, w = grid
        init = nn.initializers.truncated_normal(0.02)
        table = _stored_or_new(self, "bias_table", init, (2 * h - 1, 2 * w - 1, self.num_heads))
        table = resize_grid(table, (2 * h - 1, 2 * w - 1)).astype(jnp.float32)
        dy, dx = offsets_2d(grid)
        patches = jnp.transpose(table[dy, dx], (2, 0, 1))  # [H, N, N]
        prefix = self.param("prefix_bias", init, (3, self.num_heads), self.param_dtype)
        return _with_prefix(patches, prefix.astype(jnp.float32), num_prefix)[None]


@POSEMB.register("rel")
class RelativeEmbedding1D(_Relative):
    """The ViT paper's relative position embeddings: logits q·e(p_q − p_k)/√d added to attention."""

    @nn.compact
    def __call__(self, q, grid: Grid, num_prefix: int):
        """Logit bias `[B, heads, T, T]` for queries `q` `[B, T, heads, hd]`."""
        n, hd = grid[0] * grid[1], q.shape[-1]
        init = nn.initializers.normal(0.02)
        table = _stored_or_new(self, "offset_embedding", init, (2 * n - 1, hd))
        table = resize_axis(table, 2 * n - 1).astype(q.dtype)
        prefix = self.param("prefix_embedding", init, (1, hd), self.param_dtype).astype(q.dtype)
        i = np.arange(n)
        idx = i[:, None] - i[None, :] + n - 1  # [N, N] offsets into the table
        if num_prefix:
            full = np.full((num_prefix + n, num_prefix + n), 2 * n - 1)
            full[num_prefix:, num_prefix:] = idx
            idx = full
        keys = jnp.concatenate([table, prefix])[idx]  # [T, T, hd]
        logits = jnp.einsum("bqhd,qkd->bhqk", q, keys, preferred_element_type=jnp.float32)
        return logits * hd**-0.5
