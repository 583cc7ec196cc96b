"""Space-time position schemes of the `vivit` family, by name (`POSEMB3D`, `config.model.posemb`).

Tokens of a clip form a `(t, h, w)` grid (frames ÷ tubelet depth, rows, columns), flattened
time-major: index = (τ · h + y) · w + x. Additive schemes are called once on the token grid
`[B, t, h, w, D]` (before any prefix token is added: CLS and registers get no position) and return
it with a position signal added; the rotary scheme is instantiated in every attention layer.

  none       no position: with one-frame tubelets and joint attention the tokens are a bag
  learn      one learned table `pos_embedding` `[t, h, w, D]` (ViViT's joint table)
  learn_sep  learned `space` `[h, w, D]` + `time` `[t, D]` (separable, as scenic's factorised
             encoder's spatial and temporal tables)
  sincos3d   fixed: `[sincos2d(y, x) in D_s features, sincos1d(τ) in D_t]`, D_s = 4·⌊3D/16⌋,
             D_t = D − D_s (`sincos_3d`)
  rope3d     axial rotary on queries and keys with a time axis (`axial_angles_3d`): of the head_dim/2
             rotation pairs, n_s = ⌊(P − ⌊P/4⌋)/2⌋ turn by x, n_s by y, the rest by τ; frequencies
             θ^(−i/n) per axis (θ = 100, rope2d's). Also in `POSEMB` (the attention layers find it there)
  rope_mixed3d  learnable mixed-frequency RoPE with a time axis (Heo et al. 2024's RoPE-Mixed
             extended): per head `freqs` `[3, heads, head_dim/2]`, angle = x·f_x + y·f_y + τ·f_t;
             f_x, f_y start as `rope_mixed`'s init (`mixed_freqs_init`, θ = 10), f_t as the same
             axial magnitudes (`mixed_time_init`). Also in `POSEMB`

Learned tables are resized (trilinear) to the call's grid, so a model trained on 8 frames runs on
16, or on a larger grid, as image tables are; a checkpoint's tables are kept at their stored shape.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.common.registry import Registry
from vit_jax.models.posemb import (
    POSEMB,
    _rotate_patches,
    _stored_or_new,
    mixed_freqs_init,
    sincos_1d,
    sincos_2d,
)

POSEMB3D = Registry("space-time posemb (vivit)")
Grid3 = Tuple[int, int, int]  # (frames, rows, cols) of the token grid


def grid3(grid) -> Grid3:
    """A 2-D grid (h, w) is one frame (1, h, w)."""
    return (1, *grid) if len(grid) == 2 else tuple(grid)


def resize_nd(table: jax.Array, shape) -> jax.Array:
    """Resizes a learned table `[*old, D]` to `[*shape, D]` (linear per axis; identity if same)."""
    if tuple(table.shape[:-1]) == tuple(shape):
        return table
    out = jax.image.resize(table.astype(jnp.float32), (*shape, table.shape[-1]), "linear")
    return out.astype(table.dtype)


def sincos_split(dim: int) -> Tuple[int, int]:
    """(D_s, D_t): spatial and temporal widths of `sincos3d`."""
    space = 4 * ((3 * dim) // 16)
    if dim % 2 or space < 4 or dim - space < 2:
        raise ValueError(f"sincos3d needs an even hidden_size >= 8, got {dim}")
    return space, dim - space


def sincos_3d(t: int, h: int, w: int, dim: int) -> np.ndarray:
    """Fixed table `[t, h, w, dim]`: `sincos_2d(h, w, D_s)` of (y, x) then `sincos_1d(t, D_t)`."""
    space, time = sincos_split(dim)
    s = np.broadcast_to(sincos_2d(h, w, space).reshape(1, h, w, space), (t, h, w, space))
    tt = np.broadcast_to(sincos_1d(t, time).reshape(t, 1, 1, time), (t, h, w, time))
    return np.concatenate([s, tt], axis=-1)


def rope3d_pairs(head_dim: int) -> Tuple[int, int]:
    """(n_s, n_t): rotation pairs per spatial axis and for time."""
    pairs = head_dim // 2
    n_s = (pairs - pairs // 4) // 2
    if head_dim % 2 or n_s < 1 or pairs - 2 * n_s < 1:
        raise ValueError(f"rope3d needs an even head_dim >= 6, got {head_dim}")
    return n_s, pairs - 2 * n_s


def axial_angles_3d(grid, head_dim: int, theta: float = 100.0) -> np.ndarray:
    """Angles `[t·h·w, head_dim/2]`: `[x·f(n_s), y·f(n_s), τ·f(n_t)]`, f(n)_i = θ^(−i/n)."""
    t, h, w = grid3(grid)
    n_s, n_t = rope3d_pairs(head_dim)
    tau, y, x = (a.reshape(-1).astype(np.float64) for a in np.mgrid[:t, :h, :w])
    f = lambda n: theta ** (-np.arange(n) / n)  # noqa: E731
    angles = [np.outer(x, f(n_s)), np.outer(y, f(n_s)), np.outer(tau, f(n_t))]
    return np.concatenate(angles, axis=1).astype(np.float32)


@POSEMB3D.register("none")
class NoPosemb3D(nn.Module):
    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, x):
        return x


@POSEMB3D.register("learn")
class Learned3D(nn.Module):
    """One learned table `pos_embedding` `[t, h, w, D]`."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.normal(stddev=0.02)
        table = _stored_or_new(self, "pos_embedding", init, x.shape[1:])
        return x + resize_nd(table, x.shape[1:4]).astype(x.dtype)[None]


@POSEMB3D.register("learn_sep")
class LearnedSeparable(nn.Module):
    """Learned `space` `[h, w, D]` + `time` `[t, D]`."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        _, t, h, w, d = x.shape
        init = nn.initializers.normal(stddev=0.02)
        space = resize_nd(_stored_or_new(self, "space", init, (h, w, d)), (h, w))
        time = resize_nd(_stored_or_new(self, "time", init, (t, d)), (t,))
        return x + (space[None] + time[:, None, None]).astype(x.dtype)[None]


@POSEMB3D.register("sincos3d")
class SinCos3D(nn.Module):
    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, x):
        return x + jnp.asarray(sincos_3d(*x.shape[1:4], x.shape[-1])).astype(x.dtype)[None]


@POSEMB.register("rope3d")
@POSEMB3D.register("rope3d")
class Rope3D(nn.Module):
    """Axial rotary embedding over (x, y, τ) on the patch tokens' queries and keys.

    `grid` is (t, h, w), or (h, w) for one frame; a factorised layer sees (1, h, w) (spatial
    attention: a shared τ cancels in q·k) or (t, 1, 1) (temporal attention).
    """

    rotary = True
    num_heads: int = 1
    theta: float = 100.0
    coords: str = "index"  # only integer indices (rope_coords="index")
    ref_grid: object = None
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, qk, grid, num_prefix: int):
        if self.coords != "index":
            raise ValueError("rope3d numbers tokens by index only: set rope_coords='index'")
        angles = jnp.asarray(axial_angles_3d(grid, qk.shape[-1], self.theta))
        return _rotate_patches(qk, angles, num_prefix)


def mixed_time_init(theta: float = 10.0):
    """`rope_mixed3d`'s `freqs` `[3, H, hd/2]`: (f_x, f_y) as `mixed_freqs_init`, f_t the axial
    magnitudes θ^(−4i/hd) of both halves of the pairs (every head, every pair turns with time at
    the scale its spatial frequencies have; learning may then zero or rescale them)."""

    def init(key, shape, dtype=jnp.float32):
        _, heads, half = shape
        fxy = mixed_freqs_init(theta)(key, (2, heads, half), jnp.float32)
        mag = 1.0 / theta ** (jnp.arange(0, 2 * half, 4)[: half // 2] / (2 * half))
        ft = jnp.tile(jnp.concatenate([mag, mag])[None], (heads, 1))
        return jnp.concatenate([fxy, ft[None]]).astype(dtype)

    return init


def token_positions_3d(grid) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-major (x, y, τ) integer coordinates of a `(t, h, w)` (or `(h, w)`) grid, float32."""
    tau, y, x = (a.reshape(-1).astype(np.float32) for a in np.mgrid[tuple(map(slice, grid3(grid)))])
    return x, y, tau


@POSEMB.register("rope_mixed3d")
@POSEMB3D.register("rope_mixed3d")
class RopeMixed3D(nn.Module):
    """Learnable mixed-frequency RoPE over (x, y, τ): angle = x·f_x + y·f_y + τ·f_t per head.

    Grids as `Rope3D`'s: a factorised layer's spatial attention sees τ = 0, its temporal one x = y = 0.
    """

    rotary = True
    num_heads: int = 1
    theta: float = 10.0
    coords: str = "index"  # only integer indices (rope_coords="index")
    ref_grid: object = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, qk, grid, num_prefix: int):
        if self.coords != "index":
            raise ValueError("rope_mixed3d numbers tokens by index only: set rope_coords='index'")
        head_dim = qk.shape[-1]
        if head_dim % 4:
            raise ValueError(f"rope_mixed3d needs head_dim divisible by 4, got {head_dim}")
        shape = (3, self.num_heads, head_dim // 2)
        freqs = self.param("freqs", mixed_time_init(self.theta), shape, self.param_dtype)
        x, y, tau = token_positions_3d(grid)
        angles = sum(p[:, None, None] * f for p, f in zip((x, y, tau), freqs))  # [N, H, hd/2]
        return _rotate_patches(qk, angles.astype(jnp.float32), num_prefix)
