"""Attention rollout (Abnar & Zuidema 2020): which patches the prediction attends to, as a heat map.

Per layer l the head-averaged attention `A_l` `[T, T]` is mixed with the residual path,
`Â_l = (A_l + I) / rowsum`, and the layers are composed: `R = Â_L · … · Â_1`. Row t of R says how much
token t at the output draws on each input token; the CLS row (or the mean row without CLS) over the
patch columns, reshaped to the patch grid, is the heat map.

Any model with a ViT encoder: the `vit` family (every tokenizer) and the `hybrid` family, whose
grid is the stem's feature map divided by the patch; a ResNet has no attention (one-line error).
"""

import io
import os
from typing import List, Sequence

import jax
import numpy as np

from vit_jax.common import files
from vit_jax.common.errors import Error
from vit_jax.models import VisionTransformer
from vit_jax.models.posemb import resize_grid
from vit_jax.models.scan import unstack_blocks


class RolloutError(Error, ValueError):
    """The model has no attention to roll out."""


def check_model(model) -> None:
    """A one-line `RolloutError` unless `model` has a ViT encoder (vit and hybrid families)."""
    if not isinstance(model, VisionTransformer):
        raise RolloutError(
            f"attention rollout needs a transformer's attention maps; a {type(model).__name__} "
            "(model_name='resnet') has none: use a vit or hybrid model"
        )


def token_grid(model, image_hw) -> tuple:
    """The patch grid of an `image_hw` image: a hybrid's stem (SAME-padded, strided) maps a side n
    to ceil(n / stem_stride) first."""
    stem = getattr(model, "stem_stride", 1)
    return tuple(-(-int(n) // stem) // p for n, p in zip(image_hw, model.patch_size))


def attention_maps(model, variables, images) -> List[np.ndarray]:
    """Attention weights of every encoder block, `depth` arrays `[B, heads, T, T]` (T = P + N).

    The fused attention kernels do not expose weights, so the model runs with the naive path, which
    records them in the `intermediates` collection (stacked over the blocks with `scan=True`).
    """
    check_model(model)
    naive = model.clone(attn_impl="naive")
    _, state = jax.jit(lambda v, x: naive.apply(v, x, mutable=["intermediates"]))(variables, images)
    blocks = unstack_blocks(state["intermediates"])["Transformer"]
    sown = [
        blocks[f"encoderblock_{i}"]["MultiHeadDotProductAttention_0"] for i in range(model.depth)
    ]
    return [np.asarray(s["attention_weights"][0]) for s in sown]


def rollout(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Composes per-layer attention `[B, heads, T, T]` (first layer first) into `R` `[B, T, T]`.

    Every row of R sums to 1, as every row of each `Â_l` does.
    """
    result = None
    for weights in maps:
        a = np.mean(np.asarray(weights, np.float64), axis=1)  # [B, T, T]
        a = a + np.eye(a.shape[-1])  # the residual connection carries each token through
        a = a / a.sum(-1, keepdims=True)
        result = a if result is None else a @ result
    return result.astype(np.float32)


def rollout_heatmap(model, variables, images) -> np.ndarray:
    """Attention-rollout heat map `[B, h, w]` over the patch grid of `images` `[B, H, W, C]`.

    Uses the CLS row of the rollout when the model has a class token, else the mean over all rows.
    """
    r = rollout(attention_maps(model, variables, images))
    p = model.num_prefix + model.num_registers  # CLS, then registers, then the patches
    rows = r[:, 0] if model.num_prefix else r[:, p:].mean(axis=1)  # [B, T]
    grid = token_grid(model, images.shape[1:3])
    return rows[:, p:].reshape(-1, *grid)


def _to_unit_rgb(image: np.ndarray) -> np.ndarray:
    """`[H, W]`, `[H, W, 1]` or `[H, W, 3]` image (uint8, or floats of any range) → floats in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    image = image[..., None] if image.ndim == 2 else image
    image = np.broadcast_to(image, (*image.shape[:2], 3)).astype(np.float32)
    if image.max() > 1.0 or image.min() < 0.0:
        # Normalised model inputs (e.g. [-1, 1]) are stretched to the display range.
        lo, hi = image.min(), image.max()
        image = (image - lo) / max(float(hi - lo), 1e-12)
    return image


def save_overlay(image, heatmap, path: str, *, alpha: float = 0.5, cmap: str = "jet") -> str:
    """Writes a PNG of `image` with `heatmap` blended on top as a colour map.

    Args:
      image: `[H, W, 3]` (or grey `[H, W]`) image; uint8 or float of any range.
      heatmap: `[h, w]` map (e.g. one `rollout_heatmap` entry); min-max scaled, then bilinearly
        upsampled to `H x W`.
      path: output `.png`; parent directories are created.
      alpha: weight of the heat map in the blend.
      cmap: matplotlib colour map.

    Returns:
      `path`.
    """
    import matplotlib  # heavy, and only needed here
    from matplotlib import image as mpl_image

    rgb = _to_unit_rgb(image)
    heat = np.asarray(heatmap, np.float32)
    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
    heat = np.clip(
        np.asarray(resize_grid(heat[..., None], rgb.shape[:2], "bilinear"))[..., 0], 0, 1
    )
    colour = matplotlib.colormaps[cmap](heat)[..., :3]
    blend = (1.0 - alpha) * rgb + alpha * colour
    # `imsave` writes the array without a figure, so pixels map 1:1 and no GUI backend is needed.
    buf = io.BytesIO()
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    mpl_image.imsave(buf, np.clip(blend, 0.0, 1.0), format=fmt)
    files.write_bytes(path, buf.getvalue())  # local or a URL (vit_jax.common.files)
    return path
