"""`.safetensors` checkpoints in and out: timm, transformers and our own layout (`safetensors`'s
NumPy API; no torch).

    ckpt = load("hf://timm/vit_base_patch16_224.augreg_in21k")   # or a file, or a folder
    ckpt.flat      # our flat params ('/'-joined linen names), ready for `npz.match_params`
    ckpt.model     # our model options from the checkpoint's config.json and shapes
    ckpt.preprocess  # image_size, mean, std, crop_pct, interpolation of the source library
    export(params, model, "out/model.safetensors", layout="timm", image_size=224)

The layout is told from the keys (`timm_layout.is_timm`, `hf_layout.is_hf`, else ours). Where to find
the file (`hf://` in the local hub cache, a folder) is `vit_jax.weights.hub`.
"""

import dataclasses
import json
import os
import re
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_dtypes
import numpy as np
import safetensors.numpy

from vit_jax.common import files
from vit_jax.weights import hf_layout, hub, npz, timm_layout

Flat = Dict[str, np.ndarray]
LAYOUTS = ("timm", "transformers", "vit_jax")
OURS_KEY = "vit_jax"  # config.json of our own layout: {"vit_jax": {model options}}
# timm architecture names → heads (the one size option a state dict's shapes do not tell).
_TIMM_HEADS = {
    "tiny": 3, "small": 6, "medium": 8, "base": 12, "large": 16, "huge": 16, "giant": 16,
    "gigantic": 16, "so400m": 16, "so150m": 14, "so150m2": 13, "giantopt": 16,
}  # fmt: skip
# timm architectures whose GELU is the tanh approximation (act_layer='gelu_tanh': SigLIP 2 ports),
# for hub config.json files without model_args.
_TIMM_TANH = re.compile(
    r"^vit_(base_patch32_siglip(_gap)?_256|large_patch16_siglip(_gap)?_512|"
    r"so400m_patch16_siglip(_gap)?_(256|384|512)|giantopt_patch16_siglip(_gap)?_(256|384))\b"
)


@dataclasses.dataclass
class Checkpoint:
    flat: Flat
    layout: str
    model: Dict[str, Any]
    preprocess: Dict[str, Any]
    labels: Tuple[str, ...]
    source: str
    gelu: Optional[str] = None  # "exact" / "tanh" as the config says; None: unknown


def read(path: str) -> Flat:
    """Every tensor of a `.safetensors` file as NumPy (bfloat16 through `ml_dtypes`)."""
    try:
        return safetensors.numpy.load_file(path)
    except TypeError:  # NumPy has no bfloat16: read the (simple) format by hand
        return _read_by_hand(path)
    except (OSError, ValueError, safetensors.SafetensorError) as e:
        raise ValueError(
            f"cannot read checkpoint {path}: not a complete .safetensors file ({e})"
        ) from None


_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def _read_by_hand(path: str) -> Flat:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header, data = json.loads(f.read(n)), f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(
                f"checkpoint {path}: {key} has dtype {info['dtype']} (expected floats)"
            )
        start, end = info["data_offsets"]
        out[key] = np.frombuffer(data[start:end], _DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write(flat: Flat, path: str, metadata: Optional[Dict[str, str]] = None) -> str:
    """Writes `flat` to `path` (a temporary file, then renamed)."""
    flat = {k: np.ascontiguousarray(v) for k, v in flat.items()}
    data = safetensors.numpy.save(flat, metadata=metadata)
    with files.atomic_write(path, "wb") as f:
        f.write(data)
    return path


def detect_layout(keys) -> str:
    if timm_layout.is_timm(keys):
        return "timm"
    if hf_layout.is_hf(keys):
        return "transformers"
    return "vit_jax"


# ------------------------------------------------------------------ reading
def load(path: str, num_heads: Optional[int] = None) -> Checkpoint:
    """A `.safetensors` checkpoint (file, folder or `hf://`) in our names, with its settings.

    Args:
      path: where it is (`vit_jax.weights.hub.locate`).
      num_heads: the heads of the model it loads into; used for a timm checkpoint whose config.json
        does not tell them.

    Raises:
      ValueError: one line: not found, unreadable, a key or option we cannot represent.
    """
    loc = hub.locate(path)
    raw = read(loc.weights)
    layout = detect_layout(raw)
    cfg = loc.config or {}
    try:
        if layout == "timm":
            return _load_timm(raw, cfg, num_heads, path)
        if layout == "transformers":
            return _load_hf(raw, cfg, loc.preprocessor, path)
    except ValueError as e:
        raise ValueError(f"checkpoint {path} ({layout} layout): {e}") from None
    opts = cfg.get(OURS_KEY, {})
    return Checkpoint(raw, "vit_jax", opts.get("model", {}), opts.get("preprocess", {}),
                      tuple(opts.get("labels", ())), path, opts.get("gelu"))  # fmt: skip


def _timm_heads(cfg: Dict[str, Any], hint: Optional[int], source: str) -> int:
    heads = cfg.get("model_args", {}).get("num_heads")
    m = re.match(r"^vit_([a-z0-9]+)_patch", cfg.get("architecture", ""))
    heads = heads or (m and _TIMM_HEADS.get(m.group(1))) or hint
    if not heads:
        raise ValueError(
            "cannot tell the number of heads (no model_args.num_heads or known architecture in "
            "its config.json); give the model's size (config.model.num_heads)"
        )
    return int(heads)


def _load_timm(raw: Flat, cfg: Dict[str, Any], hint: Optional[int], source: str) -> Checkpoint:
    args, pre_cfg = cfg.get("model_args", {}), cfg.get("pretrained_cfg", {})
    heads = _timm_heads(cfg, hint, source)
    if args.get("pre_norm") or "norm_pre.weight" in raw:
        raise ValueError(
            "pre_norm=True (a LayerNorm before the blocks: norm_pre.*) is not in our ViT"
        )
    pool = cfg.get("global_pool", args.get("global_pool"))
    if pool is None:  # no config: the keys tell
        pool = (
            "map"
            if "attn_pool.latent" in raw
            else ("avg" if "fc_norm.weight" in raw or "cls_token" not in raw else "token")
        )
    if pool not in ("token", "avg", "map"):
        raise ValueError(f"global_pool={pool!r} (we have token, avg, map)")
    if pool == "map" and "cls_token" in raw and not args.get("pool_include_prefix"):
        raise ValueError("global_pool='map' with a class token (our MAP head attends over it too)")
    no_embed = _no_embed_class(raw, args, pre_cfg)
    flat = timm_layout.from_timm(raw, heads, no_embed)
    ours_pool = {"token": "token", "map": "map"}.get(
        pool, "gap_norm" if "fc_norm.weight" in raw else "gap"
    )
    tanh = _TIMM_TANH.match(cfg.get("architecture", "").split(".")[0] + ".")
    act = str(args.get("act_layer", "gelu_tanh" if tanh else "gelu"))
    model = dict(
        _sizes(flat, heads), pool=ours_pool, cls_token="cls_token" in raw,
        num_registers=int(raw["reg_token"].shape[1]) if "reg_token" in raw else 0,
        qk_norm="blocks.0.attn.q_norm.weight" in raw,
        layer_scale=float(args.get("init_values") or 1e-5) if "blocks.0.ls1.gamma" in raw else None,
        final_norm="norm.weight" in raw, gelu_approximate=act in ("gelu_tanh", "gelu_pytorch_tanh"),
        prefix_posemb=not no_embed, representation_size=None,
    )  # fmt: skip
    size = pre_cfg.get("input_size") or [3, _img_size(args) or 224]
    pre = dict(image_size=int(size[-1]), crop_pct=float(pre_cfg.get("crop_pct", 1.0)),
               interpolation=pre_cfg.get("interpolation", "bicubic"))  # fmt: skip
    for key in ("mean", "std"):
        if key in pre_cfg:
            pre[key] = tuple(float(x) for x in pre_cfg[key])
    labels = tuple(cfg.get("label_names") or pre_cfg.get("label_names") or ())
    return Checkpoint(
        flat, "timm", model, pre, labels, source, "tanh" if model["gelu_approximate"] else "exact"
    )


def _img_size(args: Dict[str, Any]) -> Optional[int]:
    """model_args' img_size: an int or timm's [height, width]."""
    size = args.get("img_size")
    return int(size[-1]) if isinstance(size, (list, tuple)) else size


def _no_embed_class(raw: Flat, args: Dict[str, Any], pre_cfg: Dict[str, Any]) -> Optional[bool]:
    """Whether timm's `pos_embed` lacks the prefix rows: model_args say, else the grid of the
    config's input size, else None (`from_timm` picks the reading that leaves a square grid)."""
    if "no_embed_class" in args or "pos_embed" not in raw:
        return args.get("no_embed_class")
    size = pre_cfg.get("input_size") or [_img_size(args)]
    patch = raw["patch_embed.proj.weight"].shape[2:]
    if not size[-1]:
        return None
    n = (size[-1] // patch[0]) * (size[-1] // patch[1])
    return raw["pos_embed"].shape[1] == n


def _load_hf(raw: Flat, cfg: Dict[str, Any], pre, source: str) -> Checkpoint:
    if not cfg:
        raise ValueError(
            "a transformers checkpoint needs its config.json beside it (num_attention_heads)"
        )
    model = hf_layout.model_options(cfg)
    flat = hf_layout.from_hf(raw, model["num_heads"])
    model.update(
        representation_size=flat["pre_logits/kernel"].shape[1]
        if "pre_logits/kernel" in flat
        else None
    )
    id2label = cfg.get("id2label") or {}
    labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else ()
    gelu = "tanh" if model["gelu_approximate"] else "exact"
    return Checkpoint(
        flat, "transformers", model, hf_layout.preprocessing(cfg, pre), labels, source, gelu
    )


def _sizes(flat: Flat, heads: int) -> Dict[str, Any]:
    kernel = flat["embedding/kernel"]
    depth = len({k.split("/")[1] for k in flat if k.startswith("Transformer/encoderblock_")})
    mlp = flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1]
    return dict(hidden_size=int(kernel.shape[3]), depth=depth, mlp_dim=int(mlp), num_heads=heads,
                patch_size=(int(kernel.shape[0]), int(kernel.shape[1])))  # fmt: skip


# ------------------------------------------------------------------ writing
def problems(model, layout: str) -> List[str]:
    """What the `layout`'s library cannot reproduce of `model` (empty for our own layout)."""
    if layout == "vit_jax":
        return []
    if not hasattr(model, "posemb"):
        return [f"a {type(model).__name__} (the {layout} layout holds ViTs)"]
    return timm_layout.problems(model) if layout == "timm" else hf_layout.problems(model)


def export(
    params, model, path: str, *, layout: str, image_size: int, labels: Sequence[str] = (),
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> Tuple[str, List[str]]:  # fmt: skip
    """Writes `params` to `path` in `layout` and `config.json` (transformers: also
    `preprocessor_config.json`) beside it; returns (path, what the target cannot reproduce)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    bad = problems(model, layout)
    flat = npz.to_layout(jax.device_get(params), "linen")
    flat = {k: v for k, v in flat.items() if k != npz.GELU_KEY}
    prefix_posemb = getattr(model, "prefix_posemb", True)
    labels = list(labels) or [
        str(i) for i in range(flat["head/bias"].shape[0] if "head/bias" in flat else 0)
    ]
    pre = dict(image_size=int(image_size), mean=tuple(mean), std=tuple(std), crop_pct=float(crop_pct),
               interpolation=interpolation)  # fmt: skip
    gelu = "tanh" if getattr(model, "gelu_approximate", False) else "exact"
    extra = {}
    if layout == "timm" and not bad:
        args = timm_layout.model_args(flat, model, image_size)
        flat = timm_layout.to_timm(flat, prefix_posemb)
        cfg = dict(
            architecture="vit_base_patch16_224", num_classes=args["num_classes"],
            num_features=model.hidden_size, global_pool=args["global_pool"], model_args=args,
            label_names=labels,
            pretrained_cfg=dict(input_size=[3, image_size, image_size], mean=list(mean), std=list(std),
                                crop_pct=crop_pct, interpolation=interpolation, crop_mode="center",
                                num_classes=args["num_classes"], classifier="head",
                                first_conv="patch_embed.proj", fixed_input_size=True),
        )  # fmt: skip
    elif layout == "transformers" and not bad:
        flat = hf_layout.to_hf(flat, prefix_posemb)
        cfg = hf_layout.config_json(model, image_size, labels, bad)
        extra["preprocessor_config.json"] = hf_layout.preprocessor_json(
            image_size, mean, std, interpolation
        )
    elif layout == "vit_jax":
        options = {k: _jsonable(getattr(model, k)) for k in _OPTIONS if hasattr(model, k)}
        cfg = {OURS_KEY: dict(model=options, preprocess=pre, labels=labels, gelu=gelu)}
    else:
        raise ValueError(
            f"the {layout} library cannot compute this model: {'; '.join(bad)} "
            "(--layout=vit_jax keeps everything)"
        )
    folder = os.path.dirname(path) or "."
    _check_no_other_config(os.path.join(folder, "config.json"))
    write(flat, path, metadata={"format": "np", "layout": layout})
    for name, content in (("config.json", cfg), *extra.items()):
        with files.atomic_write(os.path.join(folder, name), "w") as f:
            json.dump(content, f, indent=2)
    return path, bad


def _check_no_other_config(path: str) -> None:
    """Never overwrite a config.json that is not a checkpoint's (a training run's, say)."""
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        cfg = None
    if not isinstance(cfg, dict) or not ({"architecture", "model_type", OURS_KEY} & set(cfg)):
        raise ValueError(
            f"{path} exists and is not a checkpoint's config.json (a training run's?); "
            "export into another folder"
        )


_OPTIONS = (
    "hidden_size", "depth", "mlp_dim", "num_heads", "patch_size", "posemb", "pool", "cls_token",
    "norm", "norm_placement", "final_norm", "layer_scale", "qk_norm", "representation_size",
    "gelu_approximate", "num_registers", "prefix_posemb", "head", "head_bias", "distill_token",
    "norm_eps",
)  # fmt: skip


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v
