"""Image → token grid `[B, h, w, D]`, by name (`TOKENIZERS`, the model option `tokenizer`).

* `patch` (default): the ViT's patch projection, a conv with kernel = stride = patch, `embedding`.
* `conv`: the convolutional tokenizer of Compact Convolutional Transformers (Hassani et al. 2021,
  "Escaping the Big Data Paradigm with Compact Transformers"): `conv_layers` stages of
  conv(k × k, stride max(1, k//2 − 1), padding k//2, no bias) → ReLU → max-pool(3 × 3, stride 2,
  padding 1), as CCT's `Tokenizer`; 64 channels in the inner stages, `hidden_size` in the last
  (`tokenizer/conv_{i}/kernel`). CCT-7/3x1 is one stage of 3 × 3 convs. No patch projection follows:
  `patch_size` is the tokenizer's downsampling (pixels per token side), (2 · stride)^conv_layers,
  e.g. 2 for one 3 × 3 stage and 4 for two, and must be given so (`check_options`); thus the
  token grid is image / patch_size as for every tokenizer, the model's image-size check and the
  config's `image_size % patch` check stay exact, and every position scheme sees that grid.
* `spt`: Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size
  Datasets"): the image and its 4 diagonal shifts by half a patch (zero padded) concatenated on
  channels (5C), patches flattened (row, column, channel), LayerNorm, linear projection to
  `hidden_size` (`tokenizer/norm`, `tokenizer/embedding`), as the paper's code.

Each entry is `fn(images, *, model, patch) -> [B, h, w, D]`, called inside the calling
`VisionTransformer`'s compact `__call__` (so its modules are the model's children); `patch` is the
(rows, cols) patch. `check_options` holds the options' one-line checks (`validate_options` calls it).
"""

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.common.registry import Registry

TOKENIZERS = Registry("tokenizer")
CONV_PLANES = 64  # channels of CCT's inner conv stages (`in_planes`)
# SPT's shifts (dy, dx) in units of half a patch, in the paper code's order: content moved
# down-right, down-left, up-right, up-left (its left-up, right-up, left-bottom, right-bottom pads).
SPT_SHIFTS = ((1, 1), (1, -1), (-1, 1), (-1, -1))


def conv_stride(kernel: int) -> int:
    """CCT's conv stride for a k × k kernel: max(1, k//2 − 1) (1 for 3 and 5, 2 for 7)."""
    return max(1, kernel // 2 - 1)


def conv_downsampling(layers: int, kernel: int) -> int:
    """Pixels per token side of the conv tokenizer: each stage's conv stride times the pool's 2."""
    return (2 * conv_stride(kernel)) ** layers


class ConvTokenizer(nn.Module):
    """CCT's tokenizer: `num_layers` × (conv → ReLU → max-pool); `[B, H, W, C]` → `[B, h, w, D]`."""

    hidden_size: int
    num_layers: int = 1
    kernel_size: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel_size, conv_stride(self.kernel_size)
        pad = ((k // 2, k // 2),) * 2
        init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # torch kaiming_normal_
        for i in range(self.num_layers):
            width = self.hidden_size if i == self.num_layers - 1 else CONV_PLANES
            x = nn.Conv(
                width, (k, k), strides=(s, s), padding=pad, use_bias=False, kernel_init=init,
                dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv_{i}",
            )(x)  # fmt: skip
            x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return x


def shift_images(x, shift: Tuple[int, int]):
    """`[B, H, W, C]` → `[B, H, W, 5C]`: x, then x moved by (dy·sy, dx·sx) for each (dy, dx) in
    `SPT_SHIFTS`, zeros where nothing moved in: out[i, j] = x[i − dy·sy, j − dx·sx]."""
    sy, sx = shift
    padded = jnp.pad(x, ((0, 0), (sy, sy), (sx, sx), (0, 0)))
    h, w = x.shape[1:3]
    moved = [
        padded[:, sy - dy * sy : sy - dy * sy + h, sx - dx * sx : sx - dx * sx + w]
        for dy, dx in SPT_SHIFTS
    ]
    return jnp.concatenate([x, *moved], axis=-1)


class ShiftedPatchTokenizer(nn.Module):
    """Lee et al.'s SPT: shifts by half a patch, flatten patches, LayerNorm, Dense."""

    hidden_size: int
    patch_size: Tuple[int, int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        ph, pw = self.patch_size
        x = shift_images(x, (ph // 2, pw // 2))
        b, height, width, c = x.shape
        h, w = height // ph, width // pw
        x = x.reshape(b, h, ph, w, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, ph * pw * c)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.LayerNorm(epsilon=1e-5, name="norm", **kw)(x)  # PyTorch's default, as the paper
        return nn.Dense(self.hidden_size, name="embedding", **kw)(x)


@TOKENIZERS.register("patch")
def patch(images, *, model, patch):
    """The ViT's patch projection (parameter `embedding`, Google's checkpoints' name)."""
    return nn.Conv(
        model.hidden_size, patch, strides=patch, padding="VALID", name="embedding",
        dtype=model.compute_dtype, param_dtype=model.params_dtype,
    )(images)  # fmt: skip


@TOKENIZERS.register("conv")
def conv(images, *, model, patch):
    return ConvTokenizer(
        model.hidden_size, model.conv_layers, model.conv_kernel, dtype=model.compute_dtype,
        param_dtype=model.params_dtype, name="tokenizer",
    )(images)  # fmt: skip


@TOKENIZERS.register("spt")
def spt(images, *, model, patch):
    return ShiftedPatchTokenizer(
        model.hidden_size, tuple(patch), dtype=model.compute_dtype,
        param_dtype=model.params_dtype, name="tokenizer",
    )(images)  # fmt: skip


def check_options(opts: Dict[str, Any]) -> None:
    """One-line ValueError for a tokenizer / LSA option that cannot work (`opts`: all options)."""
    name, layers, kernel = opts["tokenizer"], opts["conv_layers"], opts["conv_kernel"]
    if name not in TOKENIZERS:
        raise ValueError(
            f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS.names())}"
        )
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"conv_layers={layers!r} must be an int >= 1 (CCT: 1 or 2)")
    if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"conv_kernel={kernel!r} must be an odd int >= 3 (CCT: 3 or 7)")
    if name != "conv" and (layers, kernel) != (1, 3):  # the defaults of VisionTransformer
        raise ValueError(
            f"conv_layers={layers}, conv_kernel={kernel} shape tokenizer='conv' only; set "
            f"tokenizer='conv' or leave them at 1 and 3 (tokenizer={name!r})"
        )
    patch = tuple(opts["patch_size"])
    step = conv_downsampling(layers, kernel)
    if name == "conv" and patch != (step, step):
        raise ValueError(
            f"tokenizer='conv' with conv_layers={layers}, conv_kernel={kernel} downsamples by "
            f"{step}: set patch_size={step} (e.g. variant 'Ti/{step}'), the pixels per token side"
        )
    if name == "spt" and min(patch) < 2:
        raise ValueError(
            f"tokenizer='spt' shifts by half a patch: patch_size={patch} needs sides >= 2"
        )
    if not isinstance(opts["lsa"], bool):
        raise ValueError(f"lsa={opts['lsa']!r} must be True or False (Locality Self-Attention)")
