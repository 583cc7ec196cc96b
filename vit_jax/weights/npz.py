"""Weights in and out: Google's released ViT `.npz` checkpoints ↔ our parameter tree.

Every key is translated on its own, so one reader covers the layouts in circulation:
* vit_jax (`gs://vit_models/imagenet21k/*.npz`, AugReg): flat '/'-joined keys, optional `opt/target/`
  prefix, and pre-Linen module numbers inside each block (`LayerNorm_0`, `MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`): pre-Linen Flax numbered a block's submodules in call order, Linen numbers
  them per type;
* linen: our own names (`MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`);
* big_vision: `params/` or `params/img/` prefix, a top-level `pos_embedding` `[1, N, D]` without a class
  slot (big_vision adds no position to the class token, so the slot becomes zeros), and optionally the
  scanned encoder `Transformer/encoderblock/...` with a leading depth axis.

`export_npz` writes the vit_jax layout, the one timm's `_load_weights` (`load_pretrained`) reads.
Other families: a hybrid's stem keeps Google's `R50+ViT-B_16.npz` names (`conv_root`, `gn_root`,
`block{i}/unit{j}/...`) beside the ViT's; a `layout="bit_paper"` ResNet is written and read in the
released BiT layout (`resnet/...`, `vit_jax.weights.bit`); other ResNets in our own flat names.
`checkpoint_gelu` tells the GELU a checkpoint computes: Google's layouts (vit_jax, big_vision) the tanh
approximation (both codebases call Flax's `nn.gelu`, tanh by default); an export states its own.
A model with `scan=True` (stacked blocks) reads and writes the same per-block keys.
Learned position tables are resized with `vit_jax.models.posemb.resize_table` / `resize_axis`.
"""

import io
import re
import zipfile
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

import flax
import jax
import ml_dtypes
import numpy as np

from vit_jax.common import files, trees
from vit_jax.models import posemb, scan
from vit_jax.models.posemb import Grid
from vit_jax.weights import bit, flexi

Flat = Dict[str, np.ndarray]

PREFIXES = ("opt/target/", "params/img/", "params/", "")
LAYOUTS = ("vit_jax", "linen")
HEAD_KEYS = ("head", "head_dist", "pre_logits")
PREFIX_TOKENS = ("cls", "dist")  # rows of a learned position table before the patches, in order
# A key every checkpoint of a family has: ViT and hybrid, ResNet (bit, cifar), bit_paper ResNet.
_ANCHORS = ("embedding/kernel", "conv_root/kernel", "root_block/conv_root/kernel")
POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
AXIS_POSEMB_KEYS = ("Transformer/posembed_input/row", "Transformer/posembed_input/col")

# Block submodule names: pre-Linen (vit_jax release) → Linen (ours).
_PRE_LINEN = {
    "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1",
    "MlpBlock_3": "MlpBlock_0",
}
_TO_PRE_LINEN = {v: k for k, v in _PRE_LINEN.items()}
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)(/.*)$")
_SCANNED = "Transformer/encoderblock/"
_MAX_LISTED = 8
# Metadata, not a parameter: the GELU of the model that `export_npz` wrote ("tanh" or "exact").
GELU_KEY = "vit_jax_meta/gelu"


# ------------------------------------------------------------------ reading
def read_npz(path: str) -> Flat:
    """Reads every array of an `.npz` file into a flat `{key: array}` dict.

    Raises:
      ValueError: naming `path` when it is missing, truncated, corrupt or not an `.npz` archive.
    """
    if not files.exists(path):
        raise ValueError(f"checkpoint {path} does not exist")
    try:  # a URL (gs://) is read into memory first: numpy opens local files only
        source = io.BytesIO(files.read_bytes(path)) if files.is_url(path) else path
        archive = np.load(source, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with archive:
            return {k: _restore_dtype(archive[k]) for k in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"cannot read checkpoint {path}: not a complete .npz archive ({e})") from e


def _restore_dtype(x: np.ndarray) -> np.ndarray:
    """numpy stores bfloat16 (big_vision) as raw 2-byte voids; view them as bfloat16 again."""
    if x.dtype.kind == "V" and x.dtype.itemsize == 2:
        return x.view(ml_dtypes.bfloat16)
    return x


def _strip_prefix(flat: Flat, source: str) -> Flat:
    for prefix in PREFIXES:
        if any(prefix + anchor in flat for anchor in _ANCHORS):
            return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
    shown = ", ".join(sorted(flat)[:_MAX_LISTED])
    raise ValueError(
        f"no model parameters in {source}: expected a key 'embedding/kernel' (ViT, hybrid), "
        f"'conv_root/kernel' or 'resnet/...' (ResNet), optionally under "
        f"{', '.join(repr(p) for p in PREFIXES if p)}; found: {shown or 'no keys'}"
    )


def _unscan(flat: Flat) -> Flat:
    """Splits big_vision's scanned `Transformer/encoderblock/...` `[depth, ...]` into per-block keys."""
    out = {}
    for key, value in flat.items():
        if not key.startswith(_SCANNED):
            out[key] = value
            continue
        rest = key[len(_SCANNED) :]
        for i, layer in enumerate(value):
            out[f"Transformer/encoderblock_{i}/{rest}"] = layer
    return out


def _rename_block_module(key: str, names: Dict[str, str]) -> str:
    match = _BLOCK.match(key)
    if not match:
        return key
    i, module, rest = match.groups()
    return f"Transformer/encoderblock_{i}/{names.get(module, module)}{rest}"


def canonical(flat: Flat, source: str = "checkpoint") -> Flat:
    """Translates a checkpoint in any supported layout to our flat Linen names.

    A top-level big_vision `pos_embedding` moves to `Transformer/posembed_input/pos_embedding` and gets a
    zero class slot when the checkpoint has a `cls` token, matching our convention that the table holds
    one row per prefix token.
    """
    flat = {k: v for k, v in flat.items() if k != GELU_KEY}
    if bit.is_bit_layout(flat):  # a released BiT file: our bit_paper ResNet's names
        try:
            return trees.flatten(bit.from_bit(flat), "/")
        except ValueError as e:
            raise ValueError(f"checkpoint {source}: {e}") from None
    flat = _unscan(_strip_prefix(flat, source))
    flat = {_rename_block_module(k, _PRE_LINEN): v for k, v in flat.items()}
    if "pos_embedding" in flat:
        table = flat.pop("pos_embedding")
        if "cls" in flat:
            table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
        flat[POSEMB_KEY] = table
    return flat


def checkpoint_layout(flat: Flat) -> str:
    """The layout of a checkpoint's raw keys: "big_vision" (`params/` prefix, a top-level
    `pos_embedding` or the scanned `Transformer/encoderblock`), "vit_jax" (`opt/target/` prefix or
    pre-Linen block names: Google's vision_transformer releases, and `export_npz`'s default) or
    "linen" (our own names), or "bit" (a released BiT ResNet, `resnet/...`)."""
    if bit.is_bit_layout(flat):
        return "bit"
    if any(k.startswith("params/") for k in flat):
        return "big_vision"
    keys = _strip_prefix({k: v for k, v in flat.items() if k != GELU_KEY}, "checkpoint")
    if "pos_embedding" in keys or any(k.startswith(_SCANNED) for k in keys):
        return "big_vision"
    pre_linen = any(_BLOCK.match(k) and _BLOCK.match(k).group(2) in _PRE_LINEN for k in keys)
    return "vit_jax" if pre_linen or any(k.startswith("opt/target/") for k in flat) else "linen"


def checkpoint_gelu(flat: Flat) -> Tuple[Optional[str], str]:
    """(the GELU a raw checkpoint was trained with, "tanh", "exact" or None if unknown; its source).

    A file written by `export_npz` with `gelu_approximate` says so itself; otherwise Google's layouts
    mean Google's code, which uses Flax's `nn.gelu` (the tanh approximation) in the encoder and the
    MAP head.
    """
    if GELU_KEY in flat:
        return str(np.asarray(flat[GELU_KEY])), "as recorded in the file"
    layout = checkpoint_layout(flat)
    if layout in ("vit_jax", "big_vision"):
        return "tanh", f"{layout} layout: Google's code, Flax's nn.gelu"
    return None, f"{layout} layout"


# ------------------------------------------------------------------ position tables
def prefix_tokens(keys: Iterable[str]) -> List[str]:
    """The prefix tokens (`cls`, DeiT's `dist`) of params or a checkpoint with top-level `keys`:
    one row each at the front of a learned position table."""
    return [name for name in PREFIX_TOKENS if name in keys]


def _fit_posemb(
    key: str, table: np.ndarray, shape, ckpt_prefix: List[str], model_prefix: List[str], grids,
    method: str,
) -> np.ndarray:  # fmt: skip
    """Adapts a learned position table to the model's shape (prefix rows and patch grid): the
    model's prefix rows by token name, the checkpoint's row or zeros for a token it lacks."""
    if key in AXIS_POSEMB_KEYS:
        return np.asarray(posemb.resize_axis(table, shape[0], method))
    if ckpt_prefix != model_prefix:
        old = {n: table[:, i : i + 1] for i, n in enumerate(ckpt_prefix)}
        rows = [old.get(n, np.zeros_like(table[:, :1])) for n in model_prefix]
        table = np.concatenate([*rows, table[:, len(ckpt_prefix) :]], axis=1)
    ckpt_prefix, model_prefix = len(ckpt_prefix), len(model_prefix)
    old_grid, new_grid = grids
    old = posemb.infer_grid(table.shape[1] - model_prefix, old_grid)
    new = posemb.infer_grid(shape[1] - model_prefix, new_grid)
    return np.asarray(posemb.resize_table(table, old, new, model_prefix, method))


# ------------------------------------------------------------------ matching to a model
def _flat_shapes(tree) -> Dict[str, Any]:
    if set(tree) == {"params"}:
        tree = tree["params"]
    return trees.flatten(tree, "/")


def _outer_first(keys: Iterable[str]) -> list:
    """Sorted with top-level keys (`embedding/kernel`, `cls`) first: they tell the most."""
    return sorted(keys, key=lambda k: (k.count("/"), k))


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _depth(keys: Iterable[str]) -> int:
    return len({m.group(1) for m in map(_BLOCK.match, keys) if m})


def _mismatch_message(source: str, flat: Flat, want, shapes, missing, unexpected) -> str:
    parts = []
    if _depth(flat) != _depth(want):
        parts.append(f"depth {_depth(flat)} vs model {_depth(want)}")
    if shapes:
        diffs = (f"{k} {tuple(flat[k].shape)} vs model {tuple(want[k].shape)}" for k in shapes)
        parts.append(f"shapes: {_listing(diffs)}")
    if missing:
        parts.append(f"missing in checkpoint: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected in checkpoint: {_listing(unexpected)}")
    return f"checkpoint {source} does not match the model: " + "; ".join(parts)


def match_params(
    flat: Flat,
    target,
    *,
    source: str = "checkpoint",
    skip_head: bool = False,
    resize_posemb: bool = True,
    resize_patch: bool = False,
    grid: Optional[Grid] = None,
    ckpt_grid: Optional[Grid] = None,
    method: str = "bilinear",
) -> Dict[str, Any]:
    """Fits canonical checkpoint arrays to a model's parameter tree, checking every shape.

    Args:
      flat: checkpoint in our flat Linen names (see `canonical`).
      target: the model's params (arrays or `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`), or
        variables with a `params` entry.
      source: name used in error messages (the file).
      skip_head: leave out `head` and `head_dist` (the caller adds fresh ones); `pre_logits` and
        DeiT's `dist` token are loaded only where the model has one of the same shape, else left out
        too (a DeiT checkpoint starts a plain ViT: its table's dist row goes as well).
      resize_posemb: interpolate learned position tables to the model's grid; if False a different grid
        is a shape error.
      resize_patch: a checkpoint of another patch size gets its `embedding/kernel` resized to the
        model's (FlexiViT, `vit_jax.weights.flexi`); if False that is a shape error.
      grid, ckpt_grid: patch grids of the model and the checkpoint, needed only when not square.
      method: interpolation for position tables ("bilinear", "bicubic").

    Returns:
      Nested dict of numpy arrays in the target's dtypes (without the skipped head); the blocks
      stacked where the target's are (a model with `scan=True`).

    Raises:
      ValueError: one message listing every shape difference, missing and unexpected key.
    """
    stacked = scan.is_stacked(target)
    want = _flat_shapes(scan.unstack_blocks(target) if stacked else target)
    flat = _unscan(flat)
    skipped = lambda k: skip_head and k.split("/")[0] in (*HEAD_KEYS, "dist")
    prefixes = prefix_tokens(flat), prefix_tokens(want)
    out, bad_shapes = {}, []
    for key in _outer_first(set(want) & set(flat)):
        value, shape = flat[key], tuple(want[key].shape)
        resizable = key in (POSEMB_KEY, *AXIS_POSEMB_KEYS) and value.shape[-1] == shape[-1]
        if value.shape != shape and resize_posemb and resizable:
            try:
                value = _fit_posemb(key, value, shape, *prefixes, (ckpt_grid, grid), method)
            except ValueError as e:
                raise ValueError(f"checkpoint {source}, {key}: {e} (ckpt_grid= / grid=)") from e
        if key == flexi.KERNEL_KEY and resize_patch and value.shape[2:] == shape[2:]:
            value = flexi.resize_patch_embedding(np.asarray(value), shape[:2])
        if value.shape == shape:
            out[key] = np.asarray(value).astype(want[key].dtype)
        elif not skipped(key):
            bad_shapes.append(key)
    missing = [k for k in _outer_first(want) if k not in flat and not skipped(k)]
    unexpected = [k for k in _outer_first(flat) if k not in want and not skipped(k)]
    if bad_shapes or missing or unexpected:
        raise ValueError(_mismatch_message(source, flat, want, bad_shapes, missing, unexpected))
    if skip_head:
        out = {k: v for k, v in out.items() if k.split("/")[0] not in ("head", "head_dist")}
    out = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})
    return scan.stack_blocks(out) if stacked else out


def load_npz(path: str, target, **kwargs) -> Dict[str, Any]:
    """Loads a ViT `.npz` checkpoint (vit_jax, linen or big_vision layout) into `target`'s structure.

    Args:
      path: the `.npz` file.
      target: the model's params or their shapes, e.g.
        `jax.eval_shape(model.init, rng, images)["params"]`.
      **kwargs: `skip_head`, `resize_posemb`, `grid`, `ckpt_grid`, `method` of `match_params`.

    Returns:
      Nested dict of numpy arrays, the params for `model.apply({"params": ...})`.
    """
    return match_params(canonical(read_npz(path), path), target, source=path, **kwargs)


# ------------------------------------------------------------------ writing
def to_layout(params, layout: str = "vit_jax") -> Flat:
    """Flattens our params to '/'-joined keys in `layout` ("vit_jax": pre-Linen block names, and a
    bit_paper ResNet's released BiT keys (`bit.to_bit`); "linen": our own names)."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"unknown checkpoint layout {layout!r}; choose one of: {', '.join(LAYOUTS)}"
        )
    flat = {k: np.asarray(v) for k, v in _flat_shapes(scan.unstack_blocks(params)).items()}
    # timm and older readers cannot read bfloat16 from npz; float32 holds every bfloat16 exactly.
    flat = {
        k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v for k, v in flat.items()
    }
    if layout == "vit_jax" and "root_block/conv_root/kernel" in flat:  # ResNet(layout="bit_paper")
        return bit.to_bit(flat)
    if layout == "vit_jax":
        flat = {_rename_block_module(k, _TO_PRE_LINEN): v for k, v in flat.items()}
    return flat


def export_npz(
    params, path: str, *, layout: str = "vit_jax", gelu_approximate: Optional[bool] = None
) -> str:
    """Writes `params` to `path` as a flat `.npz` (written to a temporary file, then renamed).

    Args:
      params: our parameter tree (or variables with a `params` entry).
      path: output file; parent directories are created.
      layout: "vit_jax" (default; the released-checkpoint names timm reads; BiT's for a bit_paper
        ResNet) or "linen" (our names).
      gelu_approximate: the model's GELU, recorded under `GELU_KEY` (readers of parameters, timm's
        too, ignore it) so that `checkpoint_gelu` knows it; None records nothing.

    Returns:
      `path`.
    """
    flat = to_layout(jax.device_get(params), layout)
    if gelu_approximate is not None:
        flat[GELU_KEY] = np.array("tanh" if gelu_approximate else "exact")
    with files.atomic_write(path, "wb") as f:  # a file object: numpy appends no ".npz" to it
        np.savez(f, **flat)
    return path


def timm_incompatibilities(model) -> List[str]:
    """Options of `model` that timm's `.npz` loader (`_load_weights`) cannot reproduce.

    timm reads a learned 1-D position table with pre-norm LayerNorm blocks and exact GELU; anything
    else either fails in timm (a missing key) or, worse, loads and computes different logits.
    Returns one "option=value (why)" string per problem; empty when timm reads the export exactly,
    and for a ResNet (no ViT options), which timm's ViT reader does not apply to.
    """
    if not hasattr(model, "posemb"):
        return []
    problems = []
    if model.posemb != "learn":
        problems.append(f"posemb={model.posemb!r} (timm reads only a learned 1-D table)")
    if model.norm != "layernorm" or model.norm_placement != "pre":
        problems.append(f"norm={model.norm!r}/{model.norm_placement!r} (timm: pre-LayerNorm)")
    if model.layer_scale:
        problems.append("layer_scale (timm's loader skips LayerScale)")
    if model.qk_norm:
        problems.append("qk_norm=True (timm's loader skips the q/k norms)")
    if model.representation_size:
        problems.append("representation_size (timm has no tanh pre-logits layer)")
    if model.pool == "gap_norm":
        problems.append("pool='gap_norm' (timm's .npz reader skips fc_norm; use --export)")
    if model.pool == "gap" and not model.final_norm:
        problems.append("pool='gap' with final_norm=False (timm normalises the pooled vector)")
    if model.gelu_approximate:
        problems.append("gelu_approximate=True (timm uses the exact GELU)")
    if model.num_registers:
        problems.append("num_registers (timm's .npz loader reads no register tokens)")
    if not model.prefix_posemb and model.posemb == "learn":
        problems.append("prefix_posemb=False (timm adds the table's first row to the CLS token)")
    return problems
