"""Hugging Face `transformers` ViT state dicts (`ViTModel`, `ViTForImageClassification`) ↔ our
flat parameter names, and their `config.json` / `preprocessor_config.json`.

  vit.embeddings.patch_embeddings.projection [D, C, ph, pw]   embedding [ph, pw, C, D]
  vit.embeddings.cls_token, position_embeddings [1, 1+N, D]  cls, Transformer/posembed_input/...
  vit.encoder.layer.i.layernorm_before / layernorm_after      .../encoderblock_i/LayerNorm_0 / _1
  ...attention.attention.{query,key,value} (split, [D, D])    .../MultiHeadDotProductAttention_0/...
  ...attention.output.dense                                   .../out [H, hd, D]
  ...intermediate.dense / output.dense                        .../MlpBlock_0/Dense_0 / Dense_1
  vit.layernorm, vit.pooler.dense, classifier                 encoder_norm, pre_logits, head

These are the names `save_pretrained` writes (transformers 4 and 5); transformers 5's in-memory
names (`vit.layers.i.attention.q_proj`, `mlp.fc1`, ...) are read too. A bare `ViTModel` has no
`vit.` prefix. `mask_token` (masked-image modelling) computes nothing here and is dropped.
"""

import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

Flat = Dict[str, np.ndarray]

_ENC = "Transformer/encoderblock_{}/"
_ATT = "MultiHeadDotProductAttention_0"
POS = "Transformer/posembed_input/pos_embedding"
_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_BLOCK = {  # module inside a layer → (ours, kind)
    "layernorm_before": ("LayerNorm_0", "norm"),
    "layernorm_after": ("LayerNorm_1", "norm"),
    "attention.attention.query": (f"{_ATT}/query", "in"),
    "attention.attention.key": (f"{_ATT}/key", "in"),
    "attention.attention.value": (f"{_ATT}/value", "in"),
    "attention.output.dense": (f"{_ATT}/out", "out"),
    "intermediate.dense": ("MlpBlock_0/Dense_0", "linear"),
    "output.dense": ("MlpBlock_0/Dense_1", "linear"),
}
_V5 = {  # transformers 5's module names → the saved ones
    "attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
}  # fmt: skip
_TOP = {
    "layernorm": ("Transformer/encoder_norm", "norm"),
    "pooler.dense": ("pre_logits", "linear"),
}
_DROPPED = ("embeddings.mask_token",)


def is_hf(keys) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys)


def _convert(value: np.ndarray, leaf: str, kind: str, heads: int) -> np.ndarray:
    if kind == "norm" or leaf == "bias" and kind in ("linear", "out"):
        return value
    if kind == "in":
        return (
            value.reshape(heads, -1)
            if leaf == "bias"
            else value.T.reshape(value.shape[1], heads, -1)
        )
    if kind == "out":
        return value.T.reshape(heads, -1, value.shape[0])
    return value.T


def _ours(kind: str, leaf: str) -> str:
    return (
        ("scale" if leaf == "weight" else "bias")
        if kind == "norm"
        else ("kernel" if leaf == "weight" else "bias")
    )


def from_hf(sd: Flat, num_heads: int) -> Flat:
    """Our flat params from a transformers ViT state dict."""
    out, unknown = {}, []
    for key, value in sd.items():
        bare = key[4:] if key.startswith("vit.") else key
        m = _LAYER.match(key)
        if m:
            i, module, leaf = m.groups()
            module = _V5.get(module, module)
            if module in _BLOCK:
                ours, kind = _BLOCK[module]
                out[f"{_ENC.format(i)}{ours}/{_ours(kind, leaf)}"] = _convert(
                    value, leaf, kind, num_heads
                )
                continue
        elif bare == "embeddings.patch_embeddings.projection.weight":
            out["embedding/kernel"] = value.transpose(2, 3, 1, 0)
            continue
        elif bare == "embeddings.patch_embeddings.projection.bias":
            out["embedding/bias"] = value
            continue
        elif bare == "embeddings.cls_token":
            out["cls"] = value
            continue
        elif bare == "embeddings.position_embeddings":
            out[POS] = value
            continue
        elif bare in _DROPPED:
            continue
        elif bare.rpartition(".")[0] in _TOP or key.rpartition(".")[0] == "classifier":
            module, _, leaf = key.rpartition(".")
            ours, kind = (
                ("head", "linear") if module == "classifier" else _TOP[bare.rpartition(".")[0]]
            )
            out[f"{ours}/{_ours(kind, leaf)}"] = _convert(value, leaf, kind, num_heads)
            continue
        unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (
            f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""
        )
        raise ValueError(f"transformers keys with no counterpart in our ViT: {shown}")
    return out


def to_hf(flat: Flat, prefix_posemb: bool = True) -> Flat:
    """A `ViTForImageClassification` state dict (saved names) from our flat params."""
    out: Flat = {}
    out["vit.embeddings.patch_embeddings.projection.weight"] = flat["embedding/kernel"].transpose(
        3, 2, 0, 1
    )
    out["vit.embeddings.patch_embeddings.projection.bias"] = flat["embedding/bias"]
    out["vit.embeddings.cls_token"] = flat["cls"]
    table = flat[POS]
    if not prefix_posemb:  # transformers adds the first row to the class token: make it zero
        table = np.concatenate([np.zeros_like(table[:, :1]), table[:, 1:]], axis=1)
    out["vit.embeddings.position_embeddings"] = table
    depth = len(
        {m.group(1) for m in map(re.compile(r"^Transformer/encoderblock_(\d+)/").match, flat) if m}
    )
    for i in range(depth):
        for module, (ours, kind) in _BLOCK.items():
            base = f"{_ENC.format(i)}{ours}/"
            w = flat[base + ("scale" if kind == "norm" else "kernel")]
            b = flat[base + "bias"]
            if kind == "in":
                w, b = w.reshape(w.shape[0], -1).T, b.reshape(-1)
            elif kind == "out":
                w = w.reshape(-1, w.shape[-1]).T
            elif kind == "linear":
                w = w.T
            out[f"vit.encoder.layer.{i}.{module}.weight"] = w
            out[f"vit.encoder.layer.{i}.{module}.bias"] = b
    out["vit.layernorm.weight"] = flat["Transformer/encoder_norm/scale"]
    out["vit.layernorm.bias"] = flat["Transformer/encoder_norm/bias"]
    if "head/kernel" in flat:
        out["classifier.weight"] = flat["head/kernel"].T
        out["classifier.bias"] = flat["head/bias"]
    return out


def model_options(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Our model options from a transformers ViT `config.json`."""
    act = cfg.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"hidden_act={act!r}: our ViT computes the exact or the tanh GELU only")
    patch = int(cfg.get("patch_size", 16))
    return dict(
        hidden_size=int(cfg["hidden_size"]), depth=int(cfg["num_hidden_layers"]),
        num_heads=int(cfg["num_attention_heads"]), mlp_dim=int(cfg["intermediate_size"]),
        patch_size=(patch, patch), pool="token", gelu_approximate=act != "gelu",
        norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
    )  # fmt: skip


def preprocessing(cfg: Dict[str, Any], pre: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """image_size, mean, std, crop_pct, interpolation from a transformers checkpoint's files."""
    pre = pre or {}
    size = pre.get("size", cfg.get("image_size", 224))
    if isinstance(size, dict):
        size = size.get("height", size.get("shortest_edge", cfg.get("image_size", 224)))
    out = dict(image_size=int(size), crop_pct=1.0)
    out["interpolation"] = {2: "bilinear", 3: "bicubic"}.get(pre.get("resample", 2), "bilinear")
    if pre.get("do_normalize", True):
        out["mean"] = tuple(float(m) for m in pre.get("image_mean", (0.5, 0.5, 0.5)))
        out["std"] = tuple(float(s) for s in pre.get("image_std", (0.5, 0.5, 0.5)))
    return out


def config_json(
    model, image_size: int, labels: Sequence[str], problems: List[str]
) -> Dict[str, Any]:
    """`config.json` for `ViTForImageClassification.from_pretrained(folder)`."""
    del problems
    labels = list(labels)
    return dict(
        architectures=["ViTForImageClassification"], model_type="vit",
        hidden_size=model.hidden_size, num_hidden_layers=model.depth,
        num_attention_heads=model.num_heads, intermediate_size=model.mlp_dim,
        hidden_act="gelu_pytorch_tanh" if model.gelu_approximate else "gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=model.norm_eps,
        image_size=int(image_size), patch_size=int(model.patch_size[0]), num_channels=3,
        qkv_bias=True, encoder_stride=int(model.patch_size[0]),
        id2label={str(i): n for i, n in enumerate(labels)},
        label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip


def preprocessor_json(
    image_size: int, mean, std, interpolation: str = "bilinear"
) -> Dict[str, Any]:
    return dict(
        image_processor_type="ViTImageProcessor", do_resize=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=list(mean), image_std=list(std),
        resample={"bilinear": 2, "bicubic": 3}.get(interpolation, 2),
        size=dict(height=int(image_size), width=int(image_size)),
    )  # fmt: skip


def problems(model) -> List[str]:
    """Options of `model` that transformers' `ViTForImageClassification` cannot reproduce."""
    out = []
    if model.posemb != "learn":
        out.append(f"posemb={model.posemb!r} (transformers: a learned table)")
    if model.norm != "layernorm" or model.norm_placement != "pre":
        out.append(f"norm={model.norm!r}/{model.norm_placement!r} (transformers: pre-LayerNorm)")
    if model.pool != "token" or model.num_prefix != 1:
        out.append(f"pool={model.pool!r} (transformers classifies the class token)")
    if not model.final_norm:
        out.append("final_norm=False (transformers normalises the output)")
    for name in (
        "layer_scale",
        "qk_norm",
        "num_registers",
        "representation_size",
        "distill_token",
        "lsa",
    ):
        if getattr(model, name):
            out.append(f"{name}={getattr(model, name)!r} (not in transformers' ViT)")
    if model.tokenizer != "patch" or model.patch_size[0] != model.patch_size[1]:
        out.append("a non-square or non-patch tokenizer (transformers: square patches)")
    if not model.head_bias:
        out.append("head_bias=False (transformers' classifier has a bias)")
    return out
