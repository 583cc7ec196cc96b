"""FlexiViT's resize of the patch embedding to another patch size (Beyer et al. 2023, §3.4).

A patch `x` of size p and the embedding kernel `w` give the token `<x, w>`. Resizing the patch to p*
(bilinearly) is linear: `resize(x) = B x`, with B `[p*², p²]` the resize of each basis vector. The
kernel for p* is the one that keeps every token: `<B x, w*> = <x, w>` for all x, i.e. `Bᵀ w* = w`,
solved as `w* = pinv(Bᵀ) w`. When upsampling (p* ≥ p) B has full column rank and the tokens are
kept exactly; when downsampling `w*` is the least-squares solution. big_vision:
`big_vision/models/proj/flexi/vit.py` (`resample_patchemb`).

Used by fine-tuning from a checkpoint of another patch size (`finetune.load_pretrained`) and by the
classification evaluator's `patch_size` option (a trained model evaluated at another patch size).
"""

import functools
from typing import Any, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

KERNEL_KEY = "embedding/kernel"
Patch = Union[int, Sequence[int]]


def _pair(patch: Patch) -> Tuple[int, int]:
    pair = (patch, patch) if isinstance(patch, (int, np.integer)) else tuple(patch)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and p > 0 for p in pair):
        raise ValueError(f"patch size {patch!r} must be a positive int or a (rows, cols) pair")
    return int(pair[0]), int(pair[1])


def resize_matrix(old: Patch, new: Patch, method: str = "bilinear") -> np.ndarray:
    """B `[new_h * new_w, old_h * old_w]` float64 with `resize(x).ravel() = B @ x.ravel()` for a
    `[old_h, old_w]` patch x, `resize` being `jax.image.resize(x, new, method)` (antialiased)."""
    old, new = _pair(old), _pair(new)
    n = old[0] * old[1]
    with jax.ensure_compile_time_eval():  # concrete even when called under jit
        basis = jnp.eye(n, dtype=jnp.float32).reshape(n, *old)
        out = jax.vmap(lambda b: jax.image.resize(b, new, method))(basis)
    return np.asarray(out, np.float64).reshape(n, -1).T


@functools.lru_cache(maxsize=32)
def _pinv(old: Tuple[int, int], new: Tuple[int, int], method: str) -> np.ndarray:
    """pinv(Bᵀ) `[new_n, old_n]`: the kernel map of `resize_patch_embedding`."""
    return np.linalg.pinv(resize_matrix(old, new, method).T)


def resize_patch_embedding(kernel: Any, new_patch: Patch, method: str = "bilinear"):
    """The patch-embedding kernel `[ph, pw, C, D]` for patches of `new_patch`: `pinv(Bᵀ) w` per
    input channel and output feature (see the module docstring).

    NumPy in (computed in float64), NumPy out; a JAX array (also under jit) gives a JAX array. The
    dtype is kept; the same patch size returns `kernel` itself.
    """
    new = _pair(new_patch)
    old = tuple(int(s) for s in kernel.shape[:2])
    if old == new:
        return kernel
    if kernel.ndim != 4:
        raise ValueError(f"a patch-embedding kernel is [ph, pw, C, D], got shape {kernel.shape}")
    m = _pinv(old, new, method)
    rest = kernel.shape[2:]
    if isinstance(kernel, np.ndarray):
        flat = np.asarray(kernel, np.float64).reshape(old[0] * old[1], -1)
        return (m @ flat).reshape(*new, *rest).astype(kernel.dtype)
    flat = jnp.reshape(kernel, (old[0] * old[1], -1)).astype(jnp.float32)
    out = jnp.matmul(jnp.asarray(m, jnp.float32), flat, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(*new, *rest).astype(kernel.dtype)


def with_patch_size(variables, new_patch: Patch, method: str = "bilinear"):
    """`variables` (or params) of a model with its `embedding` kernel resized to `new_patch`; every
    other leaf is shared. Learned position tables need no change: the model resizes them to its
    grid at call time."""
    if "params" in variables:
        return {**variables, "params": with_patch_size(variables["params"], new_patch, method)}
    if "kernel" not in variables.get("embedding", {}):
        raise ValueError(
            "no patch-embedding kernel embedding/kernel [ph, pw, C, D] to resize: FlexiViT's "
            "resize applies to a ViT with tokenizer='patch'"
        )
    embedding = dict(variables["embedding"])
    embedding["kernel"] = resize_patch_embedding(embedding["kernel"], new_patch, method)
    return {**variables, "embedding": embedding}
