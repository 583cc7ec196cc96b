"""Fine-tuning from a pretrained checkpoint: load, new head, resized position table.

Typical use (the trainer's `config.init_from`):

    params = load_pretrained("ViT-B_16.npz", model, (384, 384, 3))

Which parameters train (`config.freeze_encoder`, a linear probe) is the optimizer's business:
`vit_jax.train.optim.trainable_mask`.
"""

import sys
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.common import files
from vit_jax.models import posemb
from vit_jax.models.posemb import Grid
from vit_jax.weights import bit, hub, npz, safetensors_ckpt

# Checkpoint readers by format name: each returns a flat `{'/'-joined key: array}` dict.
# "safetensors": a file, a folder holding one or `hf://ORG/NAME` (timm, transformers or our layout,
# `vit_jax.weights.safetensors_ckpt`), translated to our names.
READERS: Dict[str, Callable[[str], Dict[str, np.ndarray]]] = {
    "npz": npz.read_npz,
    "safetensors": lambda path: _safetensors_flat(safetensors_ckpt.load(path)),
}


def _safetensors_flat(ckpt) -> Dict[str, np.ndarray]:
    """Our flat names, with the GELU the checkpoint's config states (for `gelu_mismatch`)."""
    flat = dict(ckpt.flat)
    if ckpt.gelu:
        flat[npz.GELU_KEY] = np.array(ckpt.gelu)
    return flat


def resize_posemb(
    params: Dict[str, Any],
    old_grid: Grid,
    new_grid: Grid,
    *,
    method: str = "bilinear",
    num_prefix: Optional[int] = None,
) -> Dict[str, Any]:
    """Resizes the learned position tables in `params` from `old_grid` to `new_grid` patches.

    `learn` tables `[1, P + h*w, D]` are interpolated in 2-D with the P prefix (class) rows kept;
    `learn2d` tables `row [h, D]`, `col [w, D]` per axis. Fixed schemes (sincos*, rope*) have no table,
    so their params come back unchanged. Resizing to the same grid is the identity.

    Args:
      params: model parameters (not modified).
      old_grid, new_grid: (rows, cols) patch grids; need not be square.
      method: "bilinear" or "bicubic" (any `jax.image.resize` method).
      num_prefix: prefix rows of the `learn` table; default the model's prefix tokens (`cls`,
        DeiT's `dist`: `npz.prefix_tokens`).

    Returns:
      A new params dict sharing every other leaf with `params`.
    """
    tables = params.get("Transformer", {}).get("posembed_input")
    if not tables:
        return params
    num_prefix = len(npz.prefix_tokens(params)) if num_prefix is None else num_prefix
    new = dict(tables)
    if "pos_embedding" in tables:
        table = np.asarray(tables["pos_embedding"])
        table = posemb.resize_table(table, old_grid, new_grid, num_prefix, method)
        new["pos_embedding"] = np.asarray(table)
    for name, length in (("row", new_grid[0]), ("col", new_grid[1])):
        if name in tables:
            new[name] = np.asarray(posemb.resize_axis(tables[name], length, method))
    return {**params, "Transformer": {**params["Transformer"], "posembed_input": new}}


def _reader(path: str, fmt: str) -> Callable[[str], Dict[str, np.ndarray]]:
    if fmt == "auto" and hub.is_safetensors(path):
        fmt = "safetensors"
    if fmt == "auto":
        fmt = "npz" if path.endswith(".npz") or _is_zip(path) else None
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of checkpoint {path}; pass fmt= one of: {', '.join(READERS)}"
            )
    if fmt not in READERS:
        raise ValueError(
            f"unknown checkpoint format {fmt!r}; choose one of: auto, {', '.join(READERS)}"
        )
    return READERS[fmt]


def _is_zip(path: str) -> bool:
    if not files.isfile(path):
        return True  # let the reader report the missing file
    with files.open(path, "rb") as f:
        return f.read(2) == b"PK"


def _fresh(model, images, names: Sequence[str], seed: int) -> Dict[str, Any]:
    """The model's own initial values of the top-level modules `names`.

    Only those are returned from the jitted init, so XLA drops the rest of the initialisation.
    """
    init = jax.jit(lambda rng: {n: model.init(rng, images)["params"][n] for n in names})
    return jax.device_get(init(jax.random.PRNGKey(seed)))


def gelu_mismatch(flat: Dict[str, np.ndarray], model, source: str) -> Optional[str]:
    """One `warning:` line when the raw checkpoint `flat` was trained with another GELU than
    `model` computes (`npz.checkpoint_gelu`); None when they agree or the checkpoint's is unknown."""
    approximate = getattr(model, "gelu_approximate", None)  # None: no GELU (a ResNet)
    if approximate is None:
        return None
    gelu, why = npz.checkpoint_gelu(flat)
    if gelu is None or (gelu == "tanh") == approximate:
        return None
    ours = "tanh" if approximate else "exact"
    return (
        f"warning: checkpoint {source} was trained with the {gelu} GELU ({why}) but the model uses "
        f"the {ours} GELU, so it computes another function (logits ~1e-4 relative off); set "
        f"model.gelu_approximate={not approximate}, or init_from.gelu_check=False (gelu_check=False) "
        "if the change is deliberate"
    )


def token_grid(model, height: int, width: int) -> Optional[Grid]:
    """The (rows, cols) token grid of `model` on `height` x `width` images: image / (stem stride x
    patch) for a ViT (stem stride 1) or hybrid; None for a model without patches (a ResNet)."""
    patch = getattr(model, "patch_size", None)
    if patch is None:
        return None
    stride = getattr(model, "stem_stride", 1)
    return height // (stride * patch[0]), width // (stride * patch[1])


def _check_bit(raw: Dict[str, np.ndarray], model, path: str) -> None:
    """A released BiT file fits only `ResNet(layout="bit_paper")`: else one line saying so."""
    layout = getattr(model, "layout", None)
    if bit.is_bit_layout(raw) and layout != "bit_paper":
        got = f"layout={layout!r}" if layout else f"a {type(model).__name__}"
        raise ValueError(
            f"checkpoint {path} is a released BiT ResNet ('resnet/...' keys), which loads only into "
            f"a ResNet with layout 'bit_paper', not {got}: set config.model_name='resnet' and "
            "config.model.layout='bit_paper' (create_model(..., model_name='resnet', "
            "layout='bit_paper'))"
        )


def load_pretrained(
    path: str,
    model,
    image_shape: Sequence[int],
    *,
    fmt: str = "auto",
    skip_head: bool = True,
    method: str = "bilinear",
    ckpt_grid: Optional[Grid] = None,
    resize_patch: bool = True,
    seed: int = 0,
    gelu_check: bool = True,
    inflate_how: str = "repeat",
) -> Dict[str, Any]:
    """Full params for `model` at `image_shape`, initialised from a pretrained checkpoint.

    A `vivit` model is inflated from an image checkpoint (`vit_jax.weights.inflate`; `inflate_how`:
    "repeat", "central_frame" or "random"); `image_shape` is then the frames' (height, width).

    Encoder weights come from the checkpoint (any layout `vit_jax.weights.npz` reads, released BiT
    ResNets included) and learned position tables are interpolated to the new token grid. A
    checkpoint of another patch size has its patch-embedding kernel resized to the model's
    (FlexiViT's pseudo-inverse resize, `vit_jax.weights.flexi`), so `B/16` weights start a `B/8`
    model. With `skip_head`, the classifier is the model's fresh (zero-initialised) head for its own
    number of classes, and `pre_logits` is kept only if the model has a representation layer of the
    checkpoint's size (fresh if another size, dropped if none).

    Args:
      path: checkpoint: an `.npz` file, a `.safetensors` file (timm, transformers or ours), a folder
        holding one, or `hf://ORG/NAME[@REV]` in the local Hugging Face cache (`weights.hub`).
      model: the model to fine-tune, of any family (`vit`, `hybrid`: the position table resized
        to its token grid; `resnet`: no position table; a released BiT file needs
        `layout="bit_paper"`).
      image_shape: (height, width) or (height, width, channels) of the fine-tuning images.
      fmt: "auto" (by file name/content) or a key of `READERS` ("npz", "safetensors").
      skip_head: replace the head (fine-tuning on new classes); False loads it too (shapes must match).
      method: position-table interpolation, "bilinear" or "bicubic".
      ckpt_grid: the checkpoint's patch grid, needed only when it is not square.
      resize_patch: resize the patch embedding of a checkpoint with another patch size; False: that
        is a shape error.
      seed: PRNG seed for freshly initialised parameters.
      gelu_check: print one `warning:` line (stderr, process 0) when the checkpoint's GELU differs
        from the model's (`gelu_mismatch`: Google's and big_vision's weights are tanh-GELU
        networks); False for a deliberate change.

    Returns:
      Nested dict of numpy arrays: the `params` collection for `model.apply`.

    Raises:
      ValueError: unreadable file, or a checkpoint that does not match the model (one message
        listing every difference).
    """
    if hasattr(model, "tubelet_size"):  # a vivit model: inflate the image checkpoint
        from vit_jax.weights import inflate  # noqa: PLC0415  (it calls back into this module)

        return inflate.load_inflated(
            path, model, image_shape, inflate_how=inflate_how, seed=seed, fmt=fmt,
            skip_head=skip_head, method=method, ckpt_grid=ckpt_grid, resize_patch=resize_patch,
            gelu_check=gelu_check,
        )  # fmt: skip
    height, width = image_shape[:2]
    channels = image_shape[2] if len(image_shape) > 2 else 3
    images = jnp.zeros((1, height, width, channels), jnp.float32)
    target = jax.eval_shape(model.init, jax.random.PRNGKey(seed), images)["params"]
    grid = token_grid(model, height, width)
    reader = _reader(path, fmt)
    if reader is READERS["safetensors"]:  # a timm config may not tell the heads: the model's
        raw = _safetensors_flat(safetensors_ckpt.load(path, getattr(model, "num_heads", None)))
    else:
        raw = reader(path)
    _check_bit(raw, model, path)
    flat = npz.canonical(raw, path)
    warning = gelu_mismatch(raw, model, path) if gelu_check else None
    if warning and jax.process_index() == 0:
        print(warning, file=sys.stderr, flush=True)
    params = npz.match_params(
        flat, target, source=path, skip_head=skip_head, grid=grid, ckpt_grid=ckpt_grid,
        method=method, resize_patch=resize_patch,
    )  # fmt: skip
    fresh = [n for n in (*npz.HEAD_KEYS, "dist") if n in target and n not in params]
    if fresh:
        params.update(_fresh(model, images, fresh, seed))
    return params
