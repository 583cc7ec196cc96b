"""The `vivit` family: ViTs on clips and volumes `[B, T, H, W, C]` (Arnab et al. 2021, ViViT).

A tubelet embedding (`embedding`: kernel `[t, p, p, C, D]`, stride = kernel; a reshape + dense,
equal to a 3-D convolution) gives a `(T/t, H/p, W/p)` token grid; a space-time position scheme
(`posemb3d.POSEMB3D`: none, learn, learn_sep, sincos3d, rope3d, rope_mixed3d) marks it; then one of
ViViT's encoders (`encoder`), each built from the ViT's `Encoder` (vit.py; no copy of it):

  joint                 model 1: every token attends to every token of the clip (`Transformer`)
  factorised_encoder    model 2: a spatial encoder per frame (`Transformer`, with a CLS per frame
                        if pool="token"), the frames' pooled vectors, then a temporal encoder
                        (`TemporalTransformer`, `temporal_depth` blocks, `temporal_cls`)
  factorised_attention  model 3: each block attends over space (`MultiHeadDotProductAttention_0`,
                        within a frame), then over time (`TemporalAttention`, one position across
                        frames), then the MLP (TimeSformer's divided attention, spatial first)

Pooling, norms, heads, dropout, drop-path, LayerScale, remat and scan are the ViT's. Registers work
with `joint` and in the spatial encoder of `factorised_encoder`; `factorised_attention` has no
prefix tokens (pool must not be "token"; no registers) and needs norm_placement="pre". Relative
position schemes (rel, relbias2d), the small-data tokenizers, LSA and DeiT's distillation token are
image-only. Parameter names equal the image ViT's where the meaning is the same, so an image
checkpoint inflates into a video model (`vit_jax.weights.inflate`).
"""

import dataclasses
import math
from typing import Any, Dict

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import variants
from vit_jax.models.attention import MultiHeadDotProductAttention
from vit_jax.models.families import FAMILIES, Family
from vit_jax.models.heads import HEADS
from vit_jax.models.layers import DropPath, LayerScale, MlpBlock
from vit_jax.models.norms import NORMS
from vit_jax.models.pooling import POOLS
from vit_jax.models.posemb3d import POSEMB3D
from vit_jax.models.vit import Encoder, Encoder1DBlock, VisionTransformer

ENCODERS = ("joint", "factorised_encoder", "factorised_attention")
VIDEO_KEYS = ("tubelet_size", "num_frames", "encoder", "temporal_depth")


def tubelets(x, kernel, bias):
    """`[B, T, H, W, C]` clips → `[B, T/t, H/p, W/q, D]` tokens for a `[t, p, q, C, D]` kernel:
    the 3-D convolution with stride = kernel, as a reshape + one matmul."""
    b, t_, h_, w_, c = x.shape
    t, p, q = kernel.shape[:3]
    x = x.reshape(b, t_ // t, t, h_ // p, p, w_ // q, q, c)
    y = jnp.einsum("bTtHpWqc,tpqcd->bTHWd", x, kernel.astype(x.dtype))
    return y + bias.astype(x.dtype)


class TubeletEmbedding(nn.Module):
    features: int
    size: tuple  # (t, p, q)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = nn.initializers.lecun_normal()  # nn.Conv's default, as the image patch embedding
        shape = (*self.size, x.shape[-1], self.features)
        kernel = self.param("kernel", fan_in, shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        return tubelets(x.astype(self.dtype), kernel, bias)


class FactorisedBlock(Encoder1DBlock):
    """ViViT model 3's block: spatial attention, temporal attention, MLP (pre-norm residuals).

    Tokens `[B, t·h·w, D]` time-major with no prefix; `grid` = (t, h, w).
    """

    @nn.compact
    def __call__(self, x, grid, num_prefix: int, train: bool = False, drop_path=None):
        eps = getattr(self, "norm_eps", 1e-6)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: NORMS.get(self.norm)(  # noqa: E731
            kernels=self.kernels, epsilon=eps, train=train, name=name, **kw
        )
        attn = lambda name: MultiHeadDotProductAttention(  # noqa: E731
            self.num_heads, self.attention_dropout_rate, self.qk_norm, self.attn_impl,
            self.kernels, self.rope, name=name, **kw,
        )  # fmt: skip
        b, _, d = x.shape
        t, h, w = grid

        def residual(x, y, ls_name):
            y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
            y = LayerScale(self.layer_scale, name=ls_name)(y) if self.layer_scale else y
            return x + DropPath(self.drop_path_rate)(y, train=train, rate=drop_path)

        y = norm("LayerNorm_0")(x).reshape(b * t, h * w, d)
        y = attn("MultiHeadDotProductAttention_0")(y, grid=(1, h, w), num_prefix=0, train=train)
        x = residual(x, y.reshape(b, t * h * w, d), "ls1")
        y = norm("LayerNorm_t")(x).reshape(b, t, h * w, d).transpose(0, 2, 1, 3)
        y = attn("TemporalAttention")(y.reshape(b * h * w, t, d), grid=(t, 1, 1), num_prefix=0,
                                      train=train)  # fmt: skip
        y = y.reshape(b, h * w, t, d).transpose(0, 2, 1, 3).reshape(b, t * h * w, d)
        x = residual(x, y, "ls_t")
        y = norm("LayerNorm_1")(x)
        y = MlpBlock(self.mlp_dim, self.dropout_rate, self.gelu_approximate, self.kernels,
                     name="MlpBlock_0", **kw)(y, train=train)  # fmt: skip
        return residual(x, y, "ls2")


class VideoViT(VisionTransformer):
    """ViViT (see the module docstring): clips `[B, T, H, W, C]` → logits `[B, num_classes]`.

    tubelet_size: frames per token t (1: per-frame patches); T must be a multiple of it.
    num_frames: frames of a training clip (the init input's T); other T at call time resize the
      learned tables.
    encoder: one of `ENCODERS`. temporal_depth: blocks of factorised_encoder's temporal encoder.
    posemb: a `POSEMB3D` name.
    """

    posemb: str = "learn_sep"
    tubelet_size: int = 2
    num_frames: int = 8
    encoder: str = "joint"
    temporal_depth: int = 1

    def _encoder(self, name, depth, scheme, **extra):
        block = dict(
            mlp_dim=self.mlp_dim, num_heads=self.num_heads, norm=self.norm,
            norm_placement=self.norm_placement, attention_dropout_rate=self.attention_dropout_rate,
            layer_scale=self.layer_scale, qk_norm=self.qk_norm, attn_impl=self.attn_impl,
            kernels=self.kernels, gelu_approximate=self.gelu_approximate,
        )  # fmt: skip
        if "norm_eps" in {f.name for f in dataclasses.fields(Encoder1DBlock)}:
            block["norm_eps"] = getattr(self, "norm_eps", 1e-6)
        return Encoder(
            depth, block, self.posemb if scheme.rotary else "none", self.dropout_rate,
            self.drop_path_rate, self.final_norm, self.remat, True, name=name,
            dtype=self.compute_dtype, param_dtype=self.params_dtype, remat_policy=self.remat_policy,
            scan=self.scan, **extra,
        )  # fmt: skip

    def _prefix(self, x, name):
        if not self.num_prefix:
            return x
        cls = self.param(name, nn.initializers.zeros, (1, 1, x.shape[-1]), self.params_dtype)
        return jnp.concatenate([jnp.tile(cls.astype(x.dtype), (x.shape[0], 1, 1)), x], axis=1)

    def _pool(self, x, registers):
        if registers is not None:
            p = self.num_prefix
            x = jnp.concatenate([x[:, :p], x[:, p + self.num_registers :]], axis=1)
        return POOLS.get(self.pool)(x, num_prefix=self.num_prefix, model=self)

    @nn.compact
    def __call__(self, clips, *, train: bool = False):
        if clips.ndim != 5:
            raise ValueError(f"vivit takes clips [B, T, H, W, C], got shape {clips.shape}")
        _, frames, height, width, _ = clips.shape
        (ph, pw), t = self.patch_size, self.tubelet_size
        if frames % t or height % ph or width % pw:
            raise ValueError(
                f"clip {frames}x{height}x{width} is not divisible by the tubelet {t}x{ph}x{pw}; "
                "change num_frames, the image size or the tubelet"
            )
        kw = dict(dtype=self.compute_dtype, param_dtype=self.params_dtype)
        x = TubeletEmbedding(self.hidden_size, (t, ph, pw), name="embedding", **kw)(clips)
        b, nt, h, w, d = x.shape
        scheme = POSEMB3D.get(self.posemb)
        if not scheme.rotary:
            x = scheme(param_dtype=self.params_dtype, name="posembed_input")(x)
        registers = None
        if self.num_registers:
            init = nn.initializers.normal(0.02)
            registers = self.param("registers", init, (1, self.num_registers, d), self.params_dtype)

        if self.encoder == "factorised_encoder":
            x = self._prefix(x.reshape(b * nt, h * w, d), "cls")
            x = self._encoder("Transformer", self.depth, scheme)(
                x, (1, h, w), self.num_prefix, train, registers
            )
            x = self._pool(x, registers).reshape(b, nt, d)  # one vector per frame
            x = self._prefix(x, "temporal_cls")
            x = self._encoder("TemporalTransformer", self.temporal_depth, scheme)(
                x, (nt, 1, 1), self.num_prefix, train
            )
            x = POOLS.get(self.pool)(x, num_prefix=self.num_prefix, model=self)
        else:
            extra = dict(block_cls=FactorisedBlock) if self.encoder != "joint" else {}
            x = self._prefix(x.reshape(b, nt * h * w, d), "cls")
            x = self._encoder("Transformer", self.depth, scheme, **extra)(
                x, (nt, h, w), self.num_prefix, train, registers
            )
            x = self._pool(x, registers)
        self.sow("intermediates", "pre_logits_input", x)
        if self.representation_size:
            x = nn.tanh(nn.Dense(self.representation_size, name="pre_logits", **kw)(x))
        if not self.num_classes:
            return x.astype(jnp.float32)
        head = HEADS.get(self.head)
        return head(self.num_classes, use_bias=self.head_bias, bias_init=self.head_bias_init,
                    **kw)(x).astype(jnp.float32)  # fmt: skip


def decode_variant(variant: str) -> Dict[str, Any]:
    """The ViT's size strings: "B/16" → ViT-B with 16×16 patches (tubelet depth: `tubelet_size`)."""
    return variants.decode_variant(variant)


IMAGE_ONLY = {"tokenizer": "patch", "lsa": False, "distill_token": False, "rope_coords": "index"}


def validate(opts: Dict[str, Any]) -> None:
    """The video options, then the ViT's (`variants.validate_options`) for the rest."""
    defaults = {f.name: f.default for f in dataclasses.fields(VideoViT)}
    o = {**defaults, **opts}
    if o["encoder"] not in ENCODERS:
        raise ValueError(
            f"unknown vivit encoder {o['encoder']!r}; choose one of {', '.join(ENCODERS)}"
        )
    if o["posemb"] not in POSEMB3D.names():
        raise ValueError(
            f"unknown vivit posemb {o['posemb']!r}; choose one of {', '.join(POSEMB3D.names())}"
        )
    for key in ("tubelet_size", "num_frames", "temporal_depth"):
        if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
            raise ValueError(f"model.{key}={o[key]!r} must be an int >= 1")
    if o["num_frames"] % o["tubelet_size"]:
        raise ValueError(
            f"model.num_frames={o['num_frames']} is not a multiple of tubelet_size={o['tubelet_size']}"
        )
    for key, value in IMAGE_ONLY.items():
        if o.get(key, value) != value:
            raise ValueError(f"model.{key}={o[key]!r} is image-only; vivit needs {value!r}")
    if o["encoder"] == "factorised_attention":
        if o["pool"] == "token" or o["cls_token"] or o["num_registers"]:
            raise ValueError(
                "encoder='factorised_attention' has no prefix tokens: use pool='gap' (or map), "
                "cls_token=None and num_registers=0"
            )
        if o["norm_placement"] != "pre":
            raise ValueError("encoder='factorised_attention' needs norm_placement='pre'")
    rest = {k: v for k, v in opts.items() if k not in VIDEO_KEYS and k != "posemb"}
    variants.validate_options(rest)


FAMILIES.register("vivit")(
    Family(
        module=VideoViT,
        decode_variant=decode_variant,
        validate=validate,
        size_keys=variants.SIZE_KEYS,
        default_variant="B/16",
        stride=lambda opts: math.lcm(*opts["patch_size"]),
    )
)
