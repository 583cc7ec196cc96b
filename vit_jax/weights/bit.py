"""Released BiT checkpoints (`BiT-{S,M,L}-R{depth}x{width}.npz`) ↔ our `layout="bit_paper"` ResNet.

The released files hold flat TF-style keys under `resnet/` (the ones big_vision's
`bit_paper.maybe_convert_big_transfer_format` reads):

  resnet/root_block/standardized_conv2d/kernel              root_block/conv_root/kernel
  resnet/block{b}/unit{uu}/{a,b,c}/standardized_conv2d/kernel  block{b}/unit{uu}/conv{1,2,3}/kernel
  resnet/block{b}/unit{uu}/{a,b,c}/group_norm/{gamma,beta}    block{b}/unit{uu}/gn{1,2,3}/{scale,bias}
  resnet/block{b}/unit{uu}/a/proj/standardized_conv2d/kernel  block{b}/unit{uu}/conv_proj/kernel
  resnet/group_norm/{gamma,beta}                            norm-pre-head/{scale,bias}
  resnet/head/conv2d/kernel [1, 1, D, C], .../bias [C]      head/kernel [D, C], head/bias

Group `a` of a unit holds gn1 and conv1 (the pre-activation norm precedes its conv). GroupNorm
vectors are `[C]` in the file and here (big_vision reshapes them to `[1, 1, 1, C]`). Some files
number the conv scope (`standardized_conv2d_1`); the number is dropped, as big_vision does. Every
key is translated on its own, so `to_bit(from_bit(flat)) == flat` for every released key.
"""

import re
from typing import Any, Dict, Mapping

import flax
import numpy as np

from vit_jax.models.resnet import BIT_BLOCKS

Flat = Dict[str, np.ndarray]

PREFIX = "resnet/"
_GROUPS = "abc"
_NUMBERED = re.compile(r"/standardized_conv2d_\d+/")
_UNIT = re.compile(r"^(block\d+)/(unit\d+)/(.+)$")
_FIXED = {  # whole keys outside the units: BiT → ours
    "root_block/standardized_conv2d/kernel": "root_block/conv_root/kernel",
    "group_norm/gamma": "norm-pre-head/scale",
    "group_norm/beta": "norm-pre-head/bias",
    "head/conv2d/kernel": "head/kernel",
    "head/conv2d/bias": "head/bias",
}
_GN = {"gamma": "scale", "beta": "bias"}
_GN_INV = {v: k for k, v in _GN.items()}


def is_bit_layout(flat: Mapping[str, Any]) -> bool:
    """Whether `flat` (a `read_npz` dict) is a released BiT checkpoint (`resnet/...` keys)."""
    return any(k.startswith(PREFIX) for k in flat)


def _unit_from_bit(rest: str) -> str:
    """`a/standardized_conv2d/kernel` → `conv1/kernel`, `b/group_norm/gamma` → `gn2/scale`,
    `a/proj/standardized_conv2d/kernel` → `conv_proj/kernel`."""
    if rest == "a/proj/standardized_conv2d/kernel":
        return "conv_proj/kernel"
    parts = rest.split("/")
    if len(parts) == 3 and parts[0] in _GROUPS:
        i = _GROUPS.index(parts[0]) + 1
        if parts[1:] == ["standardized_conv2d", "kernel"]:
            return f"conv{i}/kernel"
        if parts[1] == "group_norm" and parts[2] in _GN:
            return f"gn{i}/{_GN[parts[2]]}"
    raise KeyError(rest)


def _unit_to_bit(rest: str) -> str:
    if rest == "conv_proj/kernel":
        return "a/proj/standardized_conv2d/kernel"
    m = re.fullmatch(r"(conv|gn)([123])/(kernel|scale|bias)", rest)
    if not m or (m.group(1) == "conv") != (m.group(3) == "kernel"):
        raise KeyError(rest)
    group = _GROUPS[int(m.group(2)) - 1]
    if m.group(1) == "conv":
        return f"{group}/standardized_conv2d/kernel"
    return f"{group}/group_norm/{_GN_INV[m.group(3)]}"


def from_bit(flat: Mapping[str, Any], *, head: bool = True) -> Dict[str, Any]:
    """A released BiT checkpoint's flat `resnet/...` arrays → the nested params of
    `ResNet(layout="bit_paper", depth=..., width=...)`. `head=False` leaves the head out (to be
    replaced when fine-tuning).

    Raises:
      ValueError: naming the first key that is not part of the BiT layout.
    """
    if not is_bit_layout(flat):
        raise ValueError(
            "not a BiT checkpoint: no 'resnet/...' keys; read it with vit_jax.weights.npz"
        )
    out = {}
    for key, value in flat.items():
        if not key.startswith(PREFIX):
            raise ValueError(
                f"unexpected key {key!r} in a BiT checkpoint (all keys start 'resnet/')"
            )
        rest = _NUMBERED.sub("/standardized_conv2d/", key[len(PREFIX) :])
        value = np.asarray(value)
        if rest in _FIXED:
            ours = _FIXED[rest]
        else:
            m = _UNIT.match(rest)
            try:
                ours = f"{m.group(1)}/{m.group(2)}/{_unit_from_bit(m.group(3))}" if m else None
            except KeyError:
                ours = None
            if ours is None:
                raise ValueError(
                    f"unknown BiT key {key!r}; expected the keys in vit_jax/weights/bit.py"
                )
        if ours.startswith("head/") and not head:
            continue
        if ours == "head/kernel":
            value = value.reshape(value.shape[-2:])  # 1x1 conv [1, 1, D, C] → Dense [D, C]
        elif ours.rsplit("/", 1)[-1] in _GN_INV:  # a GroupNorm's scale or bias
            value = value.reshape(-1)  # GroupNorm [C] (or a [1, 1, 1, C] copy)
        out[tuple(ours.split("/"))] = value
    return flax.traverse_util.unflatten_dict(out)


def to_bit(params: Mapping[str, Any]) -> Flat:
    """Our bit_paper params (nested, or the `{"params": ...}` variables) → the flat `resnet/...`
    numpy arrays of a released BiT checkpoint (`np.savez(path, **to_bit(params))` writes one).

    Raises:
      ValueError: naming the first parameter that has no BiT key (not a bit_paper ResNet).
    """
    if "params" in params and isinstance(params["params"], Mapping):
        params = params["params"]
    ours_to_bit = {v: k for k, v in _FIXED.items()}
    out = {}
    for path, value in flax.traverse_util.flatten_dict(dict(params)).items():
        key = "/".join(path)
        value = np.asarray(value)
        if key in ours_to_bit:
            bit = ours_to_bit[key]
        else:
            m = _UNIT.match(key)
            try:
                bit = f"{m.group(1)}/{m.group(2)}/{_unit_to_bit(m.group(3))}" if m else None
            except KeyError:
                bit = None
            if bit is None:
                raise ValueError(
                    f"parameter {key!r} has no BiT key; to_bit writes ResNet(layout='bit_paper')"
                )
        if key == "head/kernel":
            value = value[None, None]  # Dense [D, C] → 1x1 conv [1, 1, D, C]
        out[PREFIX + bit] = value
    return out


def bit_options(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """The `ResNet` options a released BiT checkpoint was trained with: layout "bit_paper",
    depth (units per stage, named by its depth when it is a standard one), width, num_classes
    (None without a head)."""
    units = {}
    for key in flat:
        m = _UNIT.match(key[len(PREFIX) :])
        if m:
            units.setdefault(m.group(1), set()).add(m.group(2))
    blocks = tuple(len(units[b]) for b in sorted(units, key=lambda b: int(b[len("block") :])))
    root = [v for k, v in flat.items() if k.startswith(PREFIX + "root_block/")]
    head = flat.get(PREFIX + "head/conv2d/bias")
    return dict(
        layout="bit_paper",
        depth={v: k for k, v in BIT_BLOCKS.items()}.get(blocks, blocks),
        width=int(np.shape(root[0])[-1]) // 64,
        num_classes=None if head is None else int(np.shape(head)[0]),
    )
