"""Inflation: an image ViT checkpoint initialises a `vivit` model (ViViT §3.4, scenic's options).

`load_pretrained(path, video_model, ...)` lands here (`config.init_from.path` with
`config.init_from.inflate`). The checkpoint is first loaded into the video model's image twin (the
same ViT options, posemb `learn` if the file has a position table; any of our or Google's `.npz`
files, or what else `load_pretrained` reads), with the table resized to the clip's spatial grid;
then each video parameter is filled by name:

  embedding/kernel      `[p, p, C, D]` → `[t, p, p, C, D]`: `repeat` (the kernel on every frame,
                        divided by t: a clip of identical frames embeds as the image does) or
                        `central_frame` (zeros but frame ⌊t/2⌋: the middle frame embeds as the image)
                        or `random` (the video model's own fresh kernel: ViViT's "random
                        initialisation" of the tubelet filter, everything else inflated)
  posembed_input        `learn`: the image table's patch rows tiled over time; `learn_sep`: `space` =
                        those rows, `time` = 0; fixed schemes (sincos3d, rope3d, none): no table
  cls                   the image CLS plus the table's CLS row (vivit adds no position to prefix
                        tokens, so the image model's CLS input is kept exactly)
  Transformer/...       the image encoder's blocks, norms, head (if kept) by their names
  TemporalAttention     factorised attention's temporal layer: fresh, with its `out` projection zero,
                        so each block starts as the image block (the residual adds nothing)
  the rest              (TemporalTransformer, temporal_cls, LayerNorm_t) freshly initialised

So with one frame (or t identical frames under `repeat`) a `joint` or `factorised_attention` model's
logits equal the image model's (tests/weights/test_inflate.py); `factorised_encoder`'s temporal
encoder is new and changes them.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models.vit import VisionTransformer

KERNEL_INFLATIONS = ("repeat", "central_frame")
INFLATIONS = (*KERNEL_INFLATIONS, "random")  # random: the tubelet kernel is not inflated


def inflate_kernel(kernel: np.ndarray, t: int, how: str = "repeat") -> np.ndarray:
    """A 2-D patch kernel `[p, q, C, D]` as a tubelet kernel `[t, p, q, C, D]`."""
    kernel = np.asarray(kernel)
    if how == "repeat":
        return np.repeat(kernel[None], t, axis=0) / t
    if how == "central_frame":
        out = np.zeros((t, *kernel.shape), kernel.dtype)
        out[t // 2] = kernel
        return out
    raise ValueError(f"unknown inflation {how!r}; choose one of {', '.join(KERNEL_INFLATIONS)}")


def image_twin(model, posemb: str = "learn") -> VisionTransformer:
    """The image ViT with the video model's options (and `posemb`)."""
    names = {f.name for f in dataclasses.fields(VisionTransformer)} - {"parent", "name"}
    opts = {n: getattr(model, n) for n in names if hasattr(model, n)}
    return VisionTransformer(**{**opts, "posemb": posemb})


def inflate(image_params, fresh, model, how: str = "repeat"):
    """Video params: `fresh` (the video model's own init) with the image model's filled in."""
    img = flax.traverse_util.flatten_dict(jax.device_get(image_params), sep="/")
    out = flax.traverse_util.flatten_dict(jax.device_get(fresh), sep="/")
    t = model.tubelet_size
    table = img.pop("Transformer/posembed_input/pos_embedding", None)
    prefix = 1 if "cls" in img else 0
    for key, value in out.items():
        if key == "embedding/kernel":
            if how != "random":  # random: keep the fresh kernel
                out[key] = inflate_kernel(img["embedding/kernel"], t, how).astype(value.dtype)
        elif key.startswith("posembed_input/") and table is not None:
            h, w = value.shape[1:3] if key.endswith("pos_embedding") else value.shape[:2]
            space = np.asarray(table[0, prefix:]).reshape(h, w, -1)  # resized to the grid
            if key.endswith("pos_embedding"):
                out[key] = np.broadcast_to(space[None], value.shape).astype(value.dtype)
            elif key.endswith("space"):
                out[key] = space.astype(value.dtype)
            else:  # time: no offset, the image table alone
                out[key] = np.zeros_like(value)
        elif key == "cls" and key in img:
            row = table[:, :1] if table is not None and model.prefix_posemb else 0
            out[key] = (np.asarray(img[key]) + row).astype(value.dtype)
        elif "/TemporalAttention/out/" in key:
            out[key] = np.zeros_like(value)
        elif key in img:
            if img[key].shape != value.shape:
                raise ValueError(
                    f"image checkpoint's {key} has shape {img[key].shape}, the video model "
                    f"wants {value.shape}"
                )
            out[key] = np.asarray(img[key]).astype(value.dtype)
    return flax.traverse_util.unflatten_dict(out, sep="/")


def load_inflated(path: str, model, image_shape, *, inflate_how: str = "repeat", seed: int = 0,
                  **kwargs):  # fmt: skip
    """`finetune.load_pretrained` for a `vivit` model from an image checkpoint (see the module
    docstring); `kwargs` are load_pretrained's (fmt, skip_head, method, ...)."""
    from vit_jax.weights import finetune, npz  # noqa: PLC0415  (finetune calls this module)

    if inflate_how not in INFLATIONS:
        raise ValueError(
            f"init_from.inflate={inflate_how!r} is not an inflation; choose one of "
            f"{', '.join(INFLATIONS)}"
        )
    flat = npz.canonical(finetune._reader(path, kwargs.get("fmt", "auto"))(path), path)
    kernel = flat.get("embedding/kernel")
    if kernel is not None and np.ndim(kernel) == 5:
        raise ValueError(
            f"{path} is already a video checkpoint (5-D embedding/kernel); init_from inflates "
            "image checkpoints only: resume the video run from its workdir instead"
        )
    has_table = "Transformer/posembed_input/pos_embedding" in flat
    twin = image_twin(model, "learn" if has_table else "none")
    image = finetune.load_pretrained(path, twin, image_shape, seed=seed, **kwargs)
    clip = jnp.zeros((1, model.num_frames, *image_shape[:2], 3), jnp.float32)
    fresh = jax.jit(model.init)(jax.random.PRNGKey(seed), clip)["params"]
    if kwargs.get("skip_head", True):
        image = {k: v for k, v in image.items() if k not in ("head",)}
    return inflate(image, fresh, model, inflate_how)
