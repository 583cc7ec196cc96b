"""Positional-embedding schemes, each one small module registered by name in `POSEMB`.

Two kinds of scheme exist:
* additive (`rotary = False`): called once on the token sequence `[B, P + N, D]` (P prefix tokens such as
  CLS, then N = h * w patch tokens in row-major order) and return it with a position signal added;
* rotary (`rotary = True`): instantiated inside every attention layer and applied to queries and keys
  `[B, P + N, heads, head_dim]`; prefix tokens are left unrotated (as in RoPE-ViT);
* relative (`bias = True`, `relative.py`): instantiated inside every attention layer, return a bias
  on the attention logits that depends on the query's and the key's relative position.

Fixed tables are pure functions of the grid, so they are recomputed for any resolution. Learned tables are
interpolated to the input's grid at call time, so a model trained at one resolution evaluates at another.
Rotary schemes number the patches by `coords` (`ROPE_COORDS`): integer indices, which a larger grid
extends beyond the trained range, or coordinates rescaled to a reference grid, which it subdivides.
"""

import math
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.common.registry import Registry

POSEMB = Registry("posemb")
Grid = Tuple[int, int]  # (rows, cols) of the patch grid


# ------------------------------------------------------------------ pure table functions
def sincos_1d(length: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
    """Transformer sin-cos table `[length, dim]`: `[sin(p * w_i), cos(p * w_i)]`, w_i = T^(-i / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sincos1d needs an even width, got hidden_size={dim}")
    omega = 1.0 / temperature ** (np.arange(dim // 2) / (dim // 2))
    angles = np.arange(length)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
    """2-D sin-cos table `[h * w, dim]` of MoCo v3 / "Better plain ViT baselines".

    Row-major positions; features are `[sin(x w), cos(x w), sin(y w), cos(y w)]` with
    `w_i = T^(-i / (dim/4 - 1))`, i < dim/4.
    """
    if dim % 4:
        raise ValueError(f"sincos2d needs a width divisible by 4, got hidden_size={dim}")
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / temperature ** (np.arange(dim // 4) / max(dim // 4 - 1, 1))
    x = x.reshape(-1)[:, None] * omega[None, :]
    y = y.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


def resize_grid(table: jax.Array, new_hw: Grid, method: str = "bilinear") -> jax.Array:
    """Resizes a `[h, w, D]` table to `[new_h, new_w, D]` (identity when the grid is unchanged)."""
    if tuple(table.shape[:2]) == tuple(new_hw):
        return table
    out = jax.image.resize(table.astype(jnp.float32), (*new_hw, table.shape[-1]), method=method)
    return out.astype(table.dtype)


def resize_table(
    table: jax.Array, old_grid: Grid, new_grid: Grid, num_prefix: int, method: str = "bilinear"
) -> jax.Array:
    """Resizes a learned `[1, P + h*w, D]` table to `[1, P + h'*w', D]`; the P prefix rows are kept.

    The one resize of a `learn` table: at call time (a model evaluated at another resolution), when
    loading a checkpoint (`vit_jax.weights`) and when fine-tuning. NumPy or JAX input, JAX output.

    Args:
      table: position table, prefix rows first, then patches in row-major order.
      old_grid, new_grid: (h, w) patch grids before and after; non-square grids are fine.
      num_prefix: number of prefix (class) rows P.
      method: `jax.image.resize` method, e.g. "bilinear" or "bicubic".
    """
    prefix, patches = table[:, :num_prefix], table[0, num_prefix:]
    if patches.shape[0] != old_grid[0] * old_grid[1]:
        raise ValueError(
            f"position table has {patches.shape[0]} patch rows, not {old_grid[0]}x{old_grid[1]}"
        )
    patches = resize_grid(jnp.asarray(patches).reshape(*old_grid, -1), tuple(new_grid), method)
    patches = patches.reshape(1, -1, table.shape[-1]).astype(table.dtype)
    return jnp.concatenate([jnp.asarray(prefix), patches], axis=1)


def resize_axis(table: jax.Array, length: int, method: str = "bilinear") -> jax.Array:
    """Resizes one factorised (`learn2d`) table `[n, D]` to `[length, D]` along its single axis."""
    return resize_grid(jnp.asarray(table)[:, None], (length, 1), method)[:, 0]


def infer_grid(num_patches: int, hint: Grid = None) -> Grid:
    """The grid a 1-D table of `num_patches` rows was trained on: `hint` if it fits, else a square."""
    if hint is not None and hint[0] * hint[1] == num_patches:
        return tuple(hint)
    side = int(round(math.sqrt(num_patches)))
    if side * side != num_patches:
        raise ValueError(
            f"cannot tell the grid of a position table with {num_patches} patch rows; "
            "pass the old grid explicitly (it is not square)"
        )
    return side, side


def _stored_or_new(module: nn.Module, name: str, init, shape):
    """Returns a stored parameter whatever its shape (so tables can be resized), or creates it."""
    if module.has_variable("params", name):
        return module.get_variable("params", name)
    return module.param(name, init, shape, module.param_dtype)


def _add_to_patches(x: jax.Array, table: jax.Array, num_prefix: int) -> jax.Array:
    """Adds `table` `[N, D]` to the patch tokens of `x` `[B, P + N, D]`, leaving prefix tokens alone."""
    table = jnp.pad(table.astype(x.dtype), ((num_prefix, 0), (0, 0)))
    return x + table[None]


# ------------------------------------------------------------------ additive schemes
@POSEMB.register("none")
class NoPosemb(nn.Module):
    """No position information: the encoder is permutation-equivariant over patches."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, x, grid: Grid, num_prefix: int):
        return x


@POSEMB.register("learn")
class Learned1D(nn.Module):
    """Original ViT: one learned table `pos_embedding` `[1, P + N, D]`, CLS slot included."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid: Grid, num_prefix: int):
        init = nn.initializers.normal(stddev=0.02)
        table = _stored_or_new(self, "pos_embedding", init, (1,) + x.shape[1:])
        old = infer_grid(table.shape[1] - num_prefix, grid)
        return x + resize_table(table, old, grid, num_prefix).astype(x.dtype)


@POSEMB.register("sincos1d")
class SinCos1D(nn.Module):
    """Fixed 1-D sin-cos table over the row-major patch order."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, x, grid: Grid, num_prefix: int):
        return _add_to_patches(
            x, jnp.asarray(sincos_1d(grid[0] * grid[1], x.shape[-1])), num_prefix
        )


@POSEMB.register("sincos2d")
class SinCos2D(nn.Module):
    """Fixed 2-D sin-cos table (MoCo v3, big_vision)."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, x, grid: Grid, num_prefix: int):
        return _add_to_patches(x, jnp.asarray(sincos_2d(*grid, x.shape[-1])), num_prefix)


@POSEMB.register("learn2d")
class Learned2D(nn.Module):
    """Factorised learned tables: `row` `[h, D]` + `col` `[w, D]`, linearly resized per axis."""

    rotary = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid: Grid, num_prefix: int):
        d = x.shape[-1]
        init = nn.initializers.normal(stddev=0.02)
        row = _stored_or_new(self, "row", init, (grid[0], d))
        col = _stored_or_new(self, "col", init, (grid[1], d))
        row, col = resize_axis(row, grid[0]), resize_axis(col, grid[1])
        table = (row[:, None, :] + col[None, :, :]).reshape(-1, d)
        return _add_to_patches(x, table, num_prefix)


# ------------------------------------------------------------------ rotary schemes
def rotate_half_pairs(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates feature pairs `(x[i], x[i + hd/2])` of `x` `[..., hd]` by `angles` `[..., hd/2]`.

    Pairing the two halves (rather than adjacent features) is the same rotation up to a fixed
    permutation of head dimensions, applied to q and k alike, and avoids strided gathers.
    """
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


# How rotary schemes number the patches (`VisionTransformer.rope_coords`):
# "index": integer patch indices 0..n-1 (RoPE-ViT); a larger grid sees coordinates never trained on
#   (extrapolation).
# "reference": t = index * ref / n per axis, with `ref` the reference (training) grid
#   (`rope_ref_grid`): any grid spans [0, ref), a larger one at a finer step (interpolation), and at
#   the reference grid t = index exactly (EVA-02's and timm's `ref_feat_shape`).
# "index" ignores ref_grid, so one config can sweep rope_coords=index,reference.
ROPE_COORDS = ("index", "reference")


def ref_pair(ref_grid) -> Grid:
    """`rope_ref_grid` (an int for a square grid, or (rows, cols)) as (rows, cols)."""
    return (ref_grid, ref_grid) if isinstance(ref_grid, (int, np.integer)) else tuple(ref_grid)


def check_rope_coords(coords: str, ref_grid) -> None:
    """A one-line ValueError for a coordinate mode that cannot work."""
    if coords not in ROPE_COORDS:
        raise ValueError(f"unknown rope_coords {coords!r}; choose one of: {', '.join(ROPE_COORDS)}")
    if ref_grid is not None:
        pair = ref_pair(ref_grid) if isinstance(ref_grid, (int, np.integer, tuple, list)) else ()
        if len(pair) != 2 or not all(
            isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r > 0 for r in pair
        ):
            raise ValueError(
                f"rope_ref_grid={ref_grid!r} must be a positive int (patches per side of the "
                "training grid, image_size // patch) or a (rows, cols) pair"
            )
    if coords == "reference" and ref_grid is None:
        raise ValueError(
            "rope_coords='reference' needs rope_ref_grid: the training grid, image_size // patch"
        )


def grid_positions(
    grid: Grid, coords: str = "index", ref_grid=None
) -> Tuple[np.ndarray, np.ndarray]:
    """Row-major (x, y) patch coordinates, each `[h * w]` float32, numbered as `coords` says."""
    check_rope_coords(coords, ref_grid)
    y, x = np.mgrid[: grid[0], : grid[1]].astype(np.float64)
    if coords == "reference":
        ry, rx = ref_pair(ref_grid)
        x, y = x * (rx / grid[1]), y * (ry / grid[0])
    return x.reshape(-1).astype(np.float32), y.reshape(-1).astype(np.float32)


def axial_angles(
    grid: Grid, head_dim: int, theta: float = 100.0, coords: str = "index", ref_grid=None
) -> np.ndarray:
    """Axial 2-D RoPE angles `[h * w, head_dim / 2]`: first quarter of pairs by x, second by y."""
    if head_dim % 4:
        raise ValueError(f"rope2d needs head_dim divisible by 4, got {head_dim}")
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 4)[: head_dim // 4] / head_dim)
    x, y = grid_positions(grid, coords, ref_grid)
    return np.concatenate([np.outer(x, freqs), np.outer(y, freqs)], axis=1).astype(np.float32)


def _rotate_patches(qk: jax.Array, angles: jax.Array, num_prefix: int) -> jax.Array:
    """Applies rotary `angles` `[N, (heads,) hd/2]` to the patch tokens of `qk` `[B, P + N, H, hd]`."""
    if angles.ndim == 2:
        angles = angles[:, None, :]
    prefix, patches = qk[:, :num_prefix], qk[:, num_prefix:]
    return jnp.concatenate([prefix, rotate_half_pairs(patches, angles)], axis=1)


@POSEMB.register("rope2d")
class Rope2D(nn.Module):
    """Fixed axial 2-D rotary embedding (RoPE-ViT "axial", theta = 100) on queries and keys."""

    rotary = True
    num_heads: int = 1
    theta: float = 100.0
    coords: str = "index"  # ROPE_COORDS
    ref_grid: Any = None  # the reference grid of coords="reference"
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, qk, grid: Grid, num_prefix: int):
        angles = axial_angles(grid, qk.shape[-1], self.theta, self.coords, self.ref_grid)
        angles = jnp.asarray(angles)
        return _rotate_patches(qk, angles, num_prefix)


def mixed_freqs_init(theta: float = 10.0):
    """RoPE-Mixed init: per head, axial magnitudes rotated by a random angle; shape (2, H, hd/2)."""

    def init(key, shape, dtype=jnp.float32):
        _, heads, half = shape
        mag = 1.0 / theta ** (jnp.arange(0, 2 * half, 4)[: half // 2] / (2 * half))
        phase = jax.random.uniform(key, (heads, 1)) * 2 * jnp.pi
        fx = jnp.concatenate([mag * jnp.cos(phase), mag * jnp.cos(jnp.pi / 2 + phase)], axis=-1)
        fy = jnp.concatenate([mag * jnp.sin(phase), mag * jnp.sin(jnp.pi / 2 + phase)], axis=-1)
        return jnp.stack([fx, fy]).astype(dtype)

    return init


@POSEMB.register("rope_mixed")
class RopeMixed(nn.Module):
    """Learnable mixed-frequency 2-D RoPE (Heo et al. 2024): angle = x * f_x + y * f_y per head."""

    rotary = True
    num_heads: int = 1
    theta: float = 10.0
    coords: str = "index"  # ROPE_COORDS
    ref_grid: Any = None  # the reference grid of coords="reference"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, qk, grid: Grid, num_prefix: int):
        head_dim = qk.shape[-1]
        if head_dim % 4:
            raise ValueError(f"rope_mixed needs head_dim divisible by 4, got {head_dim}")
        shape = (2, self.num_heads, head_dim // 2)
        freqs = self.param("freqs", mixed_freqs_init(self.theta), shape, self.param_dtype)
        x, y = grid_positions(grid, self.coords, self.ref_grid)
        angles = x[:, None, None] * freqs[0] + y[:, None, None] * freqs[1]  # [N, H, hd/2]
        return _rotate_patches(qk, angles.astype(jnp.float32), num_prefix)
