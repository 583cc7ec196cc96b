"""timm's `VisionTransformer` state dict (PyTorch names and layouts) ↔ our flat parameter names.

  patch_embed.proj.weight [D, C, ph, pw] (OIHW)   embedding/kernel [ph, pw, C, D] (HWIO)
  cls_token [1, 1, D], reg_token [1, R, D]        cls, registers (+ their position rows, see below)
  pos_embed [1, (P+)N, D]                         Transformer/posembed_input/pos_embedding [1, P+N, D]
  blocks.i.norm1 / norm2                          Transformer/encoderblock_i/LayerNorm_0 / LayerNorm_1
  blocks.i.attn.qkv [3D, D] (fused q; k; v)       .../MultiHeadDotProductAttention_0/{query,key,value}
  blocks.i.attn.q_norm / k_norm, attn.proj        .../query_norm, key_norm, out [H, hd, D]
  blocks.i.ls1.gamma / ls2.gamma                  .../ls1/scale, ls2/scale (LayerScale)
  blocks.i.mlp.fc1 / fc2                          .../MlpBlock_0/Dense_0 / Dense_1
  norm, fc_norm, head                             Transformer/encoder_norm, fc_norm (pool gap_norm), head
  attn_pool.{latent, q, kv (fused k; v), proj, norm, mlp.fc1/fc2}   MAPHead_0/{probe, ...}

A Linear's `weight [out, in]` is our kernel `[in, out]` transposed. The position table: timm's
default adds rows to the class and register tokens (`no_embed_class=False`); a register's row is a
constant, so it is folded into our `registers` (which get no position), and the class row is ours.
With `no_embed_class=True` our table gets a zero class row. Writing inverts each step exactly.
"""

import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

Flat = Dict[str, np.ndarray]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_ENC = "Transformer/encoderblock_{}/"
_ATT = "MultiHeadDotProductAttention_0"
POS = "Transformer/posembed_input/pos_embedding"
# Block keys whose translation is a plain rename (Linear weights are transposed).
_BLOCK_NAMES = {
    "norm1": "LayerNorm_0", "norm2": "LayerNorm_1", "mlp.fc1": "MlpBlock_0/Dense_0",
    "mlp.fc2": "MlpBlock_0/Dense_1", "attn.q_norm": f"{_ATT}/query_norm",
    "attn.k_norm": f"{_ATT}/key_norm", "ls1": "ls1", "ls2": "ls2",
}  # fmt: skip
_TOP_NAMES = {"norm": "Transformer/encoder_norm", "fc_norm": "fc_norm", "head": "head"}
_POOL_NAMES = {
    "norm": "LayerNorm_0",
    "mlp.fc1": "MlpBlock_0/Dense_0",
    "mlp.fc2": "MlpBlock_0/Dense_1",
}
_LINEAR = ("mlp.fc1", "mlp.fc2", "head")
_NORMS = ("norm1", "norm2", "norm", "fc_norm", "attn.q_norm", "attn.k_norm")


def is_timm(keys) -> bool:
    return "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys)


def _param(torch_name: str, value: np.ndarray, base: str) -> Tuple[str, np.ndarray]:
    """`norm1.weight` → (`LayerNorm_0/scale`, v); `fc1.weight` → (`Dense_0/kernel`, v.T)."""
    module, _, leaf = torch_name.rpartition(".")
    if leaf == "gamma":  # LayerScale
        return f"{base}/scale", value
    if leaf == "bias":
        return f"{base}/bias", value
    if any(module.endswith(n) for n in _NORMS) or module == "norm":
        return f"{base}/scale", value
    return f"{base}/kernel", value.T


def _unsupported(keys: List[str], why: str) -> ValueError:
    shown = ", ".join(sorted(keys)[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
    return ValueError(f"{why}: {shown}")


def _split_heads(w: np.ndarray, b: Optional[np.ndarray], heads: int, base: str, out: Flat):
    """A Linear producing `[H * hd]` → our DenseGeneral kernel `[D, H, hd]` and bias `[H, hd]`."""
    d_out, d_in = w.shape
    out[f"{base}/kernel"] = w.T.reshape(d_in, heads, d_out // heads)
    out[f"{base}/bias"] = (np.zeros(d_out, w.dtype) if b is None else b).reshape(heads, -1)


def _attention(sd: Flat, src: str, dst: str, heads: int, out: Flat, fused: str) -> None:
    """q/k/v (fused `qkv` or `kv` + `q`) and `proj` of one attention under `src` → ours at `dst`."""
    w, b = sd[f"{src}{fused}.weight"], sd.get(f"{src}{fused}.bias")
    names = ("query", "key", "value")[3 - w.shape[0] // w.shape[1] :]
    ws = np.split(w, len(names))
    bs = np.split(b, len(names)) if b is not None else [None] * len(names)
    for name, wi, bi in zip(names, ws, bs):
        _split_heads(wi, bi, heads, f"{dst}/{name}", out)
    if fused == "kv":
        _split_heads(sd[f"{src}q.weight"], sd.get(f"{src}q.bias"), heads, f"{dst}/query", out)
    pw, pb = sd[f"{src}proj.weight"], sd.get(f"{src}proj.bias")
    out[f"{dst}/out/kernel"] = pw.T.reshape(heads, -1, pw.shape[0])
    out[f"{dst}/out/bias"] = np.zeros(pw.shape[0], pw.dtype) if pb is None else pb


def from_timm(sd: Flat, num_heads: int, no_embed_class: Optional[bool] = None) -> Flat:
    """Our flat params from a timm ViT state dict (numpy arrays)."""
    sd, out, used = dict(sd), {}, set()
    w = sd["patch_embed.proj.weight"]
    out["embedding/kernel"] = w.transpose(2, 3, 1, 0)
    out["embedding/bias"] = sd.get("patch_embed.proj.bias", np.zeros(w.shape[0], w.dtype))
    used |= {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    prefix = []
    if "cls_token" in sd:
        out["cls"], prefix = sd["cls_token"], ["cls_token"]
    if "reg_token" in sd:
        out["registers"], prefix = sd["reg_token"], prefix + ["reg_token"]
    used |= {"cls_token", "reg_token", "pos_embed"}
    if "pos_embed" in sd:
        out[POS] = _table_from_timm(sd["pos_embed"], out, no_embed_class)
    for key, value in sd.items():
        m = _BLOCK.match(key)
        if m:
            i, rest = m.groups()
            module = rest.rpartition(".")[0]
            if module in _BLOCK_NAMES:
                k, v = _param(rest, value, _ENC.format(i) + _BLOCK_NAMES[module])
                out[k] = v
                used.add(key)
            elif module in ("attn.qkv", "attn.proj"):
                used.add(key)
        elif key.rpartition(".")[0] in _TOP_NAMES:
            k, v = _param(key, value, _TOP_NAMES[key.rpartition(".")[0]])
            out[k] = v
            used.add(key)
    for i in sorted({int(m.group(1)) for m in map(_BLOCK.match, sd) if m}):
        if f"blocks.{i}.attn.qkv.weight" in sd:
            _attention(sd, f"blocks.{i}.attn.", _ENC.format(i) + _ATT, num_heads, out, "qkv")
    if "attn_pool.latent" in sd:
        latent = sd["attn_pool.latent"]
        if latent.shape[1] != 1:
            raise _unsupported(
                ["attn_pool.latent"], f"latent_len={latent.shape[1]} (we pool with one probe)"
            )
        out["MAPHead_0/probe"] = latent
        _attention(sd, "attn_pool.", f"MAPHead_0/{_ATT}", num_heads, out, "kv")
        for key, value in sd.items():
            module = (
                key[len("attn_pool.") :].rpartition(".")[0]
                if key.startswith("attn_pool.")
                else None
            )
            if module in _POOL_NAMES:
                k, v = _param(key, value, f"MAPHead_0/{_POOL_NAMES[module]}")
                out[k] = v
        used |= {k for k in sd if k.startswith("attn_pool.")}
    unknown = [k for k in sd if k not in used]
    if unknown:
        raise _unsupported(unknown, "timm keys with no counterpart in our ViT (options we lack)")
    return out


def _table_from_timm(table: np.ndarray, out: Flat, no_embed_class: Optional[bool]) -> np.ndarray:
    """timm's `pos_embed` → our table (one class row, then the patches); register rows folded."""
    regs = out["registers"].shape[1] if "registers" in out else 0
    cls = int("cls" in out)
    if no_embed_class is None:  # which one leaves a square grid
        n = table.shape[1]
        no_embed_class = _is_square(n) and not _is_square(n - cls - regs)
    if not no_embed_class:
        if regs:
            out["registers"] = out["registers"] + table[:, cls : cls + regs]
        table = np.concatenate([table[:, :cls], table[:, cls + regs :]], axis=1)
    elif cls:
        table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
    return table


def _is_square(n: int) -> bool:
    return n > 0 and int(round(n**0.5)) ** 2 == n


# ------------------------------------------------------------------ writing
def _linear(flat: Flat, base: str, name: str, out: Flat) -> None:
    out[f"{name}.weight"] = flat[f"{base}/kernel"].T
    if f"{base}/bias" in flat:
        out[f"{name}.bias"] = flat[f"{base}/bias"]


def _norm(flat: Flat, base: str, name: str, out: Flat) -> None:
    out[f"{name}.weight"] = flat[f"{base}/scale"]
    if f"{base}/bias" in flat:
        out[f"{name}.bias"] = flat[f"{base}/bias"]


def _attention_to(flat: Flat, src: str, dst: str, out: Flat, fused: str) -> None:
    names = ("query", "key", "value") if fused == "qkv" else ("key", "value")
    ws = [
        flat[f"{src}/{n}/kernel"].reshape(flat[f"{src}/{n}/kernel"].shape[0], -1).T for n in names
    ]
    out[f"{dst}{fused}.weight"] = np.concatenate(ws)
    out[f"{dst}{fused}.bias"] = np.concatenate([flat[f"{src}/{n}/bias"].reshape(-1) for n in names])
    if fused == "kv":
        q = flat[f"{src}/query/kernel"]
        out[f"{dst}q.weight"] = q.reshape(q.shape[0], -1).T
        out[f"{dst}q.bias"] = flat[f"{src}/query/bias"].reshape(-1)
    o = flat[f"{src}/out/kernel"]
    out[f"{dst}proj.weight"] = o.reshape(-1, o.shape[-1]).T
    out[f"{dst}proj.bias"] = flat[f"{src}/out/bias"]


def to_timm(flat: Flat, prefix_posemb: bool = True) -> Flat:
    """A timm state dict from our flat (unstacked, linen-named) params; inverse of `from_timm`
    (with `prefix_posemb=False` the class row is dropped: timm's `no_embed_class=True`)."""
    out: Flat = {}
    out["patch_embed.proj.weight"] = flat["embedding/kernel"].transpose(3, 2, 0, 1)
    out["patch_embed.proj.bias"] = flat["embedding/bias"]
    cls = int("cls" in flat)
    if cls:
        out["cls_token"] = flat["cls"]
    table = flat.get(POS)
    if "registers" in flat:
        out["reg_token"] = flat["registers"]
        if table is not None and prefix_posemb:  # timm adds rows to registers: zero rows
            regs = np.zeros_like(flat["registers"])
            table = np.concatenate([table[:, :cls], regs, table[:, cls:]], axis=1)
    if table is not None:
        out["pos_embed"] = table if prefix_posemb else table[:, cls:]
    depth = len(
        {m.group(1) for m in map(re.compile(r"^Transformer/encoderblock_(\d+)/").match, flat) if m}
    )
    for i in range(depth):
        src, dst = _ENC.format(i), f"blocks.{i}."
        for torch_name, ours in _BLOCK_NAMES.items():
            base = src + ours
            if f"{base}/scale" in flat and torch_name.startswith("ls"):
                out[f"{dst}{torch_name}.gamma"] = flat[f"{base}/scale"]
            elif f"{base}/scale" in flat:
                _norm(flat, base, dst + torch_name, out)
            elif f"{base}/kernel" in flat:
                _linear(flat, base, dst + torch_name, out)
        _attention_to(flat, src + _ATT, dst + "attn.", out, "qkv")
    for torch_name, ours in _TOP_NAMES.items():
        if f"{ours}/scale" in flat:
            _norm(flat, ours, torch_name, out)
        elif f"{ours}/kernel" in flat:
            _linear(flat, ours, torch_name, out)
    if "MAPHead_0/probe" in flat:
        out["attn_pool.latent"] = flat["MAPHead_0/probe"]
        _attention_to(flat, f"MAPHead_0/{_ATT}", "attn_pool.", out, "kv")
        _norm(flat, "MAPHead_0/LayerNorm_0", "attn_pool.norm", out)
        _linear(flat, "MAPHead_0/MlpBlock_0/Dense_0", "attn_pool.mlp.fc1", out)
        _linear(flat, "MAPHead_0/MlpBlock_0/Dense_1", "attn_pool.mlp.fc2", out)
    return out


# ------------------------------------------------------------------ config.json
def model_args(flat: Flat, model, image_size: int) -> Dict[str, Any]:
    """timm `VisionTransformer` keyword arguments computing what `model` computes (as far as
    `problems` says nothing)."""
    d, heads = model.hidden_size, "head/kernel" in flat
    pool = {"token": "token", "gap": "avg", "gap_norm": "avg", "map": "map"}[model.pool]
    args = dict(
        img_size=int(image_size), patch_size=int(model.patch_size[0]), embed_dim=d, depth=model.depth,
        num_heads=model.num_heads, mlp_ratio=model.mlp_dim / d, class_token="cls" in flat,
        global_pool=pool, no_embed_class=not model.prefix_posemb, reg_tokens=model.num_registers,
        qk_norm=bool(model.qk_norm), num_classes=int(flat["head/kernel"].shape[-1]) if heads else 0,
        final_norm=bool(model.final_norm) or model.pool == "gap_norm",
    )  # fmt: skip
    if model.pool == "gap":
        args["fc_norm"] = False
    if model.layer_scale:
        args["init_values"] = float(model.layer_scale)
    if model.gelu_approximate:
        args["act_layer"] = "gelu_tanh"
    return args


def problems(model) -> List[str]:
    """Options of `model` that a timm `VisionTransformer` cannot reproduce ("option (why)")."""
    out = []
    if model.posemb != "learn":
        out.append(f"posemb={model.posemb!r} (timm: a learned 1-D table)")
    if model.norm != "layernorm" or model.norm_placement != "pre":
        out.append(f"norm={model.norm!r}/{model.norm_placement!r} (timm: pre-LayerNorm)")
    if model.pool not in ("token", "gap", "gap_norm", "map"):
        out.append(f"pool={model.pool!r} (timm: token, avg, map)")
    if model.pool == "gap_norm" and model.final_norm:
        out.append("pool='gap_norm' with final_norm=True (timm norms before or after pooling)")
    if model.pool == "map" and model.num_prefix:
        out.append("pool='map' with a class token (timm's attention pool skips prefix tokens)")
    if model.representation_size:
        out.append("representation_size (timm has no tanh pre-logits layer)")
    if model.distill_token:
        out.append("distill_token (timm's distilled ViT is another class)")
    if model.tokenizer != "patch" or model.lsa:
        out.append(f"tokenizer={model.tokenizer!r}/lsa={model.lsa} (timm: a patch embedding)")
    if model.patch_size[0] != model.patch_size[1]:
        out.append(f"patch_size={tuple(model.patch_size)} (timm here: square patches)")
    if not model.head_bias:
        out.append("head_bias=False (timm's head has a bias)")
    if model.norm_eps != 1e-6:
        out.append(f"norm_eps={model.norm_eps} (timm's ViT: 1e-6)")
    return out
