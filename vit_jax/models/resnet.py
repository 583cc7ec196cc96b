"""The `resnet` family: BiT ResNets (both big_vision layouts) and the small CIFAR ResNets.

Size strings (`decode_variant`): "R{depth}x{width}" ("R50x1", "R101x3", "R152x4"; BiT notation,
depth 26/50/101/152/200, width multiplier >= 1; the `layout` option says which network), or
"R{depth}" ("R18", "R34", "R20", "R56", "R110": a CIFAR ResNet, layout "cifar", width 1; the bare
BiT depths "R26", "R50", "R152", "R200" are refused as ambiguous).

Layouts (option `layout`; the width multiplier scales every one's channels):
  "bit"        big_vision models/bit.py = the ViT paper's hybrid stem (vision_transformer
               models_resnet.py): post-activation bottleneck units (stride on the 3x3 conv),
               GroupNorm(32), weight-standardised convs, SAME padding; names conv_root, gn_root,
               block{i}/unit{j}/{conv1,gn1,conv2,gn2,conv3,gn3,conv_proj,gn_proj}.
  "bit_paper"  big_vision models/bit_paper.py, the released BiT-S/M/L layout: pre-activation
               (ResNet-v2) units, no norm in the root, a final GroupNorm; big_vision's names
               (root_block/conv_root, block{i}/unit{jj:02d}/..., norm-pre-head) and explicit
               paddings. `vit_jax.weights.bit` converts the released `.npz` files.
  "cifar"      basic (two 3x3 conv) post-activation units, 3x3 stem, no max-pool. Depth 18 / 34:
               4 stages of 64..512 channels, (2,2,2,2) / (3,4,6,3) units (ResNet-18/34 as
               kuangliu/pytorch-cifar trains them); depth 6n+2: He et al. 2016 §4.2, 3 stages of
               16/32/64 channels, n units each. Names conv_root, norm_root, block{i}/unit{j}/
               {conv1,norm1,conv2,norm2,conv_proj,norm_proj}.
Layout-dependent defaults (None below): `norm` "groupnorm", "batchnorm" for cifar (statistics in
`batch_stats`); `weight_std` True, False for cifar; `shortcut` "zeropad" (He et al.'s option A:
strided identity plus zero channels) for the 3-stage CIFAR nets, else "projection" (1x1 conv + norm).
Any image size. Sown: `stem`, `stage{i}`, `pre_logits_2d`, `pre_logits_input` (what the head sees).
"""

import dataclasses
import functools
import math
import re
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models.families import FAMILIES, Family

LAYOUTS = ("bit", "bit_paper", "cifar")
NORMS, SHORTCUTS = ("groupnorm", "batchnorm"), ("projection", "zeropad")
# Bottleneck units per stage by depth (big_vision bit.get_block_desc).
BIT_BLOCKS = {
    26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
}  # fmt: skip
CIFAR4_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # basic units, 64..512 channels
_VARIANT = re.compile(r"^R(\d+)(?:x(\d+))?$")


def weight_standardize(w, axis, eps):
    """(w - mean) / (std + eps) over `axis` (vision_transformer / big_vision bit.py)."""
    w = w - jnp.mean(w, axis=axis)
    return w / (jnp.std(w, axis=axis) + eps)


class StdConv(nn.Conv):
    """Convolution with weight standardisation (vision_transformer models_resnet.py), computed
    in float32 and returned in the parameter's dtype."""

    def param(self, name, *args, **kwargs):
        param = super().param(name, *args, **kwargs)
        if name != "kernel":
            return param
        return self.standardize(param.astype(jnp.float32)).astype(param.dtype)

    @staticmethod
    def standardize(w):
        return weight_standardize(w, [0, 1, 2], 1e-5)


class PaperStdConv(StdConv):
    """big_vision bit_paper.py's standardisation: (w - mean) / sqrt(var + 1e-10)."""

    @staticmethod
    def standardize(w):
        axes = dict(axis=(0, 1, 2), keepdims=True)
        return (w - jnp.mean(w, **axes)) / jnp.sqrt(jnp.var(w, **axes) + 1e-10)


def _conv(kind: str, features: int, kernel: int, strides=(1, 1), *, padding="SAME", **kw):
    """kind: "std" (StdConv), "paper" (PaperStdConv) or "plain" (nn.Conv, He-normal init)."""
    cls = {"std": StdConv, "paper": PaperStdConv, "plain": nn.Conv}[kind]
    if kind == "plain":
        kw["kernel_init"] = nn.initializers.he_normal()
    return cls(features, (kernel, kernel), tuple(strides), padding=padding, use_bias=False, **kw)


def _norm(kind: str, channels: int, name: str, train: bool, *, zero=False, paper=False, **kw):
    """GroupNorm(32) (gcd(32, channels) groups below 32) or BatchNorm (stats in batch_stats).
    `zero`: zero-initialised scale (Google's gn3). `paper`: bit_paper.py's GroupNorm (epsilon
    1e-5, variance as the mean of squared deviations); else Flax's defaults (epsilon 1e-6)."""
    scale_init = nn.initializers.zeros if zero else nn.initializers.ones
    if kind == "batchnorm":
        bn = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)
        return nn.BatchNorm(scale_init=scale_init, name=name, **bn, **kw)
    extra = dict(epsilon=1e-5, use_fast_variance=False) if paper else {}
    groups = dict(num_groups=math.gcd(32, channels), scale_init=scale_init)
    return nn.GroupNorm(name=name, **groups, **extra, **kw)


class _Unit(nn.Module):
    """The fields of every unit: output features of the 3x3 conv, its stride, norm, convs."""

    features: int
    strides: Sequence[int] = (1, 1)
    norm: str = "groupnorm"
    weight_std: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32


class ResidualUnit(_Unit):
    """Bottleneck unit, post-activation (vision_transformer models_resnet.py): 1x1 → norm → relu
    → 3x3 (stride) → norm → relu → 1x1 (4x features) → norm (zero scale) → + (projected) input
    → relu. `norm`, `weight_std`, `dtype`, `param_dtype` default to Google's unit."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = functools.partial(_conv, "std" if self.weight_std else "plain", **kw)
        norm = functools.partial(_norm, self.norm, train=train, **kw)
        nout = self.features * 4
        residual = x
        if x.shape[-1] != nout or tuple(self.strides) != (1, 1):
            residual = conv(nout, 1, self.strides, name="conv_proj")(residual)
            residual = norm(nout, "gn_proj")(residual)

        y = nn.relu(norm(self.features, "gn1")(conv(self.features, 1, name="conv1")(x)))
        y = conv(self.features, 3, self.strides, name="conv2")(y)
        y = nn.relu(norm(self.features, "gn2")(y))
        y = norm(nout, "gn3", zero=True)(conv(nout, 1, name="conv3")(y))
        return nn.relu(residual + y)


class ResNetStage(nn.Module):
    """A stage of `block_size` ResidualUnits (`unit1`, `unit2`, ...), the first with
    `first_stride` (vision_transformer models_resnet.py); the other fields go to every unit."""

    block_size: int
    nout: int
    first_stride: Sequence[int]
    norm: str = "groupnorm"
    weight_std: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = {f: getattr(self, f) for f in ("norm", "weight_std", "dtype", "param_dtype")}
        x = ResidualUnit(self.nout, strides=self.first_stride, name="unit1", **kw)(x, train)
        for i in range(1, self.block_size):
            x = ResidualUnit(self.nout, strides=(1, 1), name=f"unit{i + 1}", **kw)(x, train)
        return x


class PreActUnit(_Unit):
    """Pre-activation bottleneck unit (big_vision bit_paper.py's ResidualUnit, ResNet-v2):
    norm → relu → [conv_proj of it as the residual] → 1x1 → norm → relu → 3x3 (stride) →
    norm → relu → 1x1 (4x features), plus the residual; no activation after the addition."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = functools.partial(_conv, "paper" if self.weight_std else "plain", **kw)
        norm = functools.partial(_norm, self.norm, train=train, paper=True, **kw)
        nout = self.features * 4
        residual = x
        x = nn.relu(norm(x.shape[-1], "gn1")(x))
        if x.shape[-1] != nout or tuple(self.strides) != (1, 1):
            residual = conv(nout, 1, self.strides, name="conv_proj")(x)
        x = nn.relu(norm(self.features, "gn2")(conv(self.features, 1, name="conv1")(x)))
        x = conv(self.features, 3, self.strides, padding=((1, 1), (1, 1)), name="conv2")(x)
        x = nn.relu(norm(self.features, "gn3")(x))
        return conv(nout, 1, name="conv3")(x) + residual


class BasicUnit(_Unit):
    """Basic post-activation unit (He et al. 2016a): 3x3 conv (stride) → norm → relu → 3x3 conv
    → norm, plus the shortcut (`projection`: 1x1 conv + norm; `zeropad`: strided identity with
    zero channels appended on both sides), then relu. Paddings as PyTorch's (k // 2)."""

    norm: str = "batchnorm"
    weight_std: bool = False
    shortcut: str = "projection"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = functools.partial(_conv, "std" if self.weight_std else "plain", **kw)
        norm = functools.partial(_norm, self.norm, self.features, train=train, **kw)
        pad = ((1, 1), (1, 1))
        residual = x
        sh, sw = self.strides
        if x.shape[-1] != self.features or (sh, sw) != (1, 1):
            if self.shortcut == "zeropad":
                extra = self.features - x.shape[-1]
                widths = ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2))
                residual = jnp.pad(x[:, ::sh, ::sw, :], widths)
            else:
                residual = conv(self.features, 1, self.strides, name="conv_proj")(x)
                residual = norm("norm_proj")(residual)
        y = conv(self.features, 3, self.strides, padding=pad, name="conv1")(x)
        y = nn.relu(norm("norm1")(y))
        y = norm("norm2")(conv(self.features, 3, padding=pad, name="conv2")(y))
        return nn.relu(residual + y)


class _Stage(nn.Module):
    """`block_size` units of class `unit` named `fmt.format(j)` (j from 1); the first strided."""

    unit: Any
    block_size: int
    features: int
    first_stride: Tuple[int, int]
    fmt: str
    opts: Dict[str, Any]

    @nn.compact
    def __call__(self, x, train: bool = False):
        for j in range(self.block_size):
            stride = self.first_stride if j == 0 else (1, 1)
            x = self.unit(self.features, stride, name=self.fmt.format(j + 1), **self.opts)(x, train)
        return x


class _PaperRoot(nn.Module):
    """bit_paper.py's RootBlock: 7x7/2 standardised conv (padding 3), 3x3/2 max-pool (padding 1)."""

    width: int
    weight_std: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        kind = "paper" if self.weight_std else "plain"
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _conv(kind, self.width, 7, (2, 2), padding=((3, 3), (3, 3)), name="conv_root", **kw)(x)
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


# ------------------------------------------------------------------ the model
class ResNet(nn.Module):
    """ResNet classifier: images `[B, H, W, C]` (any H, W) → float32 logits `[B, num_classes]`,
    or the pooled features `[B, D]` when `num_classes` is 0/None. Options: see the module
    docstring; their defaults are these fields (None: depends on the layout)."""

    num_classes: Optional[int]
    depth: Union[int, Tuple[int, ...]] = 50  # an int of the layout, or units per stage (bit*)
    width: int = 1  # channel multiplier
    layout: str = "bit"  # "bit", "bit_paper" or "cifar"
    norm: Optional[str] = None  # "groupnorm" / "batchnorm"; None: groupnorm, batchnorm for cifar
    weight_std: Optional[bool] = None  # standardised conv kernels; None: True, False for cifar
    shortcut: Optional[str] = None  # "projection" / "zeropad"; None: zeropad for 3-stage cifar
    dtype: Any = "float32"  # computation dtype
    param_dtype: Any = "float32"

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        opts = {f: getattr(self, f) for f in OPTION_DEFAULTS}
        validate(dict(opts, num_classes=self.num_classes))
        r = resolve(opts)
        kw = dict(dtype=jnp.dtype(self.dtype), param_dtype=jnp.dtype(self.param_dtype))
        x = images.astype(kw["dtype"])
        blocks = block_sizes(self.layout, self.depth)
        unit_opts = dict(norm=r["norm"], weight_std=r["weight_std"], **kw)
        conv = functools.partial(_conv, "std" if r["weight_std"] else "plain", **kw)
        width = (16 if len(blocks) == 3 and self.layout == "cifar" else 64) * self.width
        if self.layout == "bit":
            x = conv(width, 7, (2, 2), name="conv_root")(x)
            x = nn.relu(_norm(r["norm"], width, "gn_root", train, **kw)(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            stage = functools.partial(ResNetStage, **unit_opts)
        elif self.layout == "bit_paper":
            x = _PaperRoot(width, r["weight_std"], name="root_block", **kw)(x)
            stage = functools.partial(_Stage, PreActUnit, fmt="unit{:02d}", opts=unit_opts)
        else:
            x = conv(width, 3, padding=((1, 1), (1, 1)), name="conv_root")(x)
            x = nn.relu(_norm(r["norm"], width, "norm_root", train, **kw)(x))
            unit_opts["shortcut"] = r["shortcut"]
            stage = functools.partial(_Stage, BasicUnit, fmt="unit{}", opts=unit_opts)
        self.sow("intermediates", "stem", x)
        for i, n in enumerate(blocks):
            stride = (2, 2) if i else (1, 1)
            x = stage(n, width * 2**i, stride, name=f"block{i + 1}")(x, train)
            self.sow("intermediates", f"stage{i + 1}", x)
        if self.layout == "bit_paper":
            x = _norm(r["norm"], x.shape[-1], "norm-pre-head", train, paper=True, **kw)(x)
            x = nn.relu(x)
        self.sow("intermediates", "pre_logits_2d", x)
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        self.sow("intermediates", "pre_logits_input", pooled)
        if not self.num_classes:
            return pooled
        head = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head", **kw)
        return head(pooled).astype(jnp.float32)


_SKIP = ("parent", "name", "num_classes")
OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ResNet) if f.name not in _SKIP}


def _cifar_depth(depth) -> bool:
    return depth in CIFAR4_BLOCKS or (depth >= 8 and (depth - 2) % 6 == 0)


def decode_variant(variant: str) -> Dict[str, Any]:
    """ "R50x1" → dict(depth=50, width=1); "R20" → dict(depth=20, width=1, layout="cifar")."""
    m = _VARIANT.match(variant) if isinstance(variant, str) else None
    forms = (
        f"'R{{depth}}x{{width}}' (BiT, depth in {sorted(BIT_BLOCKS)}, e.g. 'R50x1', 'R152x4') or "
        "'R{depth}' (CIFAR: 'R18', 'R34' or 6n+2 such as 'R20', 'R56', 'R110')"
    )
    depth, width = (int(m.group(1)), m.group(2)) if m else (0, None)
    if not (depth in BIT_BLOCKS or _cifar_depth(depth)) or width is not None and int(width) < 1:
        raise ValueError(f"unknown resnet variant {variant!r}; use {forms}")
    if width is not None:
        return dict(depth=depth, width=int(width))
    if depth in BIT_BLOCKS:
        raise ValueError(
            f"resnet variant {variant!r} is ambiguous: write 'R{depth}x1' (BiT), with "
            "layout='cifar' for He et al.'s 3-stage CIFAR net of that depth"
        )
    return dict(depth=depth, width=1, layout="cifar")


def block_sizes(layout: str, depth) -> Tuple[int, ...]:
    """Units per stage: from BIT_BLOCKS, CIFAR4_BLOCKS, (n, n, n) for depth 6n+2, or `depth`."""
    if not isinstance(depth, int):
        return tuple(int(d) for d in depth)
    if layout != "cifar":
        return BIT_BLOCKS[depth]
    return CIFAR4_BLOCKS.get(depth) or ((depth - 2) // 6,) * 3


def resolve(opts: Dict[str, Any]) -> Dict[str, Any]:
    """`opts` with the layout-dependent defaults (None) filled in."""
    o = {**OPTION_DEFAULTS, **opts}
    cifar = o["layout"] == "cifar"
    three = cifar and len(block_sizes("cifar", o["depth"])) == 3
    o["norm"] = o["norm"] or ("batchnorm" if cifar else "groupnorm")
    o["weight_std"] = (not cifar) if o["weight_std"] is None else o["weight_std"]
    o["shortcut"] = o["shortcut"] or ("zeropad" if three else "projection")
    return o


def _is_float_dtype(value) -> bool:
    try:
        return value is not None and jnp.issubdtype(value, jnp.floating)
    except TypeError:
        return False


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _fail(option: str, value, fix: str):
    raise ValueError(f"resnet option {option}={value!r} is invalid: {fix}")


def validate(opts: Dict[str, Any]) -> None:
    """Raises a one-line ValueError for an unknown option, value or impossible combination."""
    unknown = sorted(set(opts) - set(OPTION_DEFAULTS) - {"num_classes"})
    if unknown:
        raise ValueError(f"unknown resnet option(s) {unknown}; known: {sorted(OPTION_DEFAULTS)}")
    o = {**OPTION_DEFAULTS, **opts}
    layout, depth, width = o["layout"], o["depth"], o["width"]
    if layout not in LAYOUTS:
        _fail("layout", layout, f"use one of {LAYOUTS}")
    if not _is_int(width, 1):
        _fail("width", width, "use an integer multiplier >= 1")
    if isinstance(depth, (list, tuple)):
        if layout == "cifar":
            _fail("depth", depth, "layout 'cifar' takes an int depth: 18, 34 or 6n+2")
        if not depth or not all(_is_int(d, 1) for d in depth):
            _fail("depth", depth, "units per stage must be positive integers, e.g. (3, 4, 6, 3)")
    elif not _is_int(depth, 1):
        _fail("depth", depth, "use an int depth or a tuple of units per stage")
    elif layout == "cifar" and not _cifar_depth(depth):
        _fail("depth", depth, "layout 'cifar' takes 18, 34 or 6n+2 (20, 32, 44, 56, 110, ...)")
    elif layout != "cifar" and depth not in BIT_BLOCKS:
        fix = f"layout {layout!r} takes {sorted(BIT_BLOCKS)}; CIFAR depths need layout='cifar'"
        _fail("depth", depth, fix)
    if o["norm"] not in (None,) + NORMS:
        _fail("norm", o["norm"], f"use one of {NORMS} (or None for the layout's default)")
    if o["weight_std"] is not None and not isinstance(o["weight_std"], bool):
        _fail("weight_std", o["weight_std"], "use True, False or None")
    if o["shortcut"] not in (None,) + SHORTCUTS:
        _fail("shortcut", o["shortcut"], f"use one of {SHORTCUTS} (or None)")
    if o["shortcut"] == "zeropad" and layout != "cifar":
        _fail("shortcut", "zeropad", "only basic units (layout='cifar') have zero-padded shortcuts")
    for key in ("dtype", "param_dtype"):
        if not _is_float_dtype(o[key]):
            _fail(key, o[key], "use a float dtype such as 'float32' or 'bfloat16'")
    n = o.get("num_classes")
    if n is not None and not _is_int(n, 0):
        _fail("num_classes", n, "use an int >= 0 (0 or None: no head, pooled features out)")


FAMILIES.register("resnet")(Family(ResNet, decode_variant, validate, ("depth", "width", "layout"), "R50x1", lambda o: 1))  # fmt: skip  # noqa: E501
