"""Scan over layers: the stacked layout of the encoder blocks, and conversion to and from it.

With `VisionTransformer(scan=True)` the blocks run under `flax.linen.scan`: one module
`Transformer/encoderblock` whose every variable (params, batch_stats, intermediates) has a leading
`[depth]` axis, in place of the modules `Transformer/encoderblock_{i}`. Google's `.npz` files, the
optimizer's per-parameter rules and the checkpoints of unrolled runs name the blocks one by one;
these pure functions convert any pytree (params, variables, a whole train state with its optax
states) between the two layouts where they meet:

    stacked = stack_blocks(params)       # {..., "encoderblock_0": b0, "encoderblock_1": b1}
    params = unstack_blocks(stacked)     #   <-> {..., "encoderblock": stack(b0, b1)}

Leaves may be NumPy arrays (stacked with NumPy), JAX arrays or tracers (with jax.numpy), or
abstract arrays such as `jax.ShapeDtypeStruct` (a `NamedSharding` keeps its spec, the depth axis
unsharded).
"""

import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BLOCK = "encoderblock"
_NUMBERED = re.compile(rf"^{BLOCK}_(\d+)$")


def _number(key) -> Optional[int]:
    match = _NUMBERED.match(str(key))
    return int(match.group(1)) if match else None


def has_blocks(x) -> bool:
    """Whether `x` is a mapping that holds encoder blocks, in either layout."""
    return isinstance(x, Mapping) and any(k == BLOCK or _number(k) is not None for k in x)


def _block_mappings(tree):
    return [m for m in jax.tree.leaves(tree, is_leaf=has_blocks) if has_blocks(m)]


def is_stacked(tree) -> bool:
    """Whether `tree` holds stacked blocks (`encoderblock` with a leading depth axis)."""
    return any(BLOCK in m for m in _block_mappings(tree))


def _rebuild(mapping, items: dict):
    return dict(items) if isinstance(mapping, dict) else type(mapping)(items)


def _sharding(sharding, stacking: bool):
    """The sharding of a leaf with a depth axis added (`stacking`) or removed."""
    if not isinstance(sharding, NamedSharding):
        return sharding if isinstance(sharding, jax.sharding.Sharding) else None
    spec = tuple(sharding.spec)
    if stacking:
        spec = (None, *spec)
    else:  # a depth axis sharded over devices cannot be split locally: replicate the layer
        spec = spec[1:] if spec and spec[0] is None else ()
    return NamedSharding(sharding.mesh, P(*spec))


def _abstract(x) -> bool:
    return not isinstance(x, (np.ndarray, jax.Array, np.generic)) and hasattr(x, "shape")


def _stack(*xs):
    x = xs[0]
    if _abstract(x):
        sharding = _sharding(getattr(x, "sharding", None), stacking=True)
        return jax.ShapeDtypeStruct((len(xs), *x.shape), x.dtype, sharding=sharding)
    if isinstance(x, jax.Array):  # arrays and tracers
        return jnp.stack(xs)
    return np.stack(xs)


def _take(x, i: int):
    if _abstract(x):
        sharding = _sharding(getattr(x, "sharding", None), stacking=False)
        return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype, sharding=sharding)
    return x[i]


def stack_blocks(tree, depth: Optional[int] = None):
    """`tree` with every mapping of `encoderblock_{i}` entries turned into one `encoderblock`
    entry whose leaves are the blocks' leaves stacked on a new leading axis.

    Mappings already stacked, and everything else, are returned as they are.

    Raises:
      ValueError: blocks not numbered 0 .. depth-1, or of different structures.
    """

    def convert(m):
        if not has_blocks(m):
            return m
        numbers = sorted(n for n in map(_number, m) if n is not None)
        items = {k: stack_blocks(v, depth) for k, v in m.items() if _number(k) is None}
        if not numbers:
            return _rebuild(m, items)
        n = len(numbers) if depth is None else depth
        if numbers != list(range(n)) or BLOCK in m:
            raise ValueError(
                f"cannot stack encoder blocks {numbers}{' and ' + BLOCK if BLOCK in m else ''}; "
                f"expected {BLOCK}_0 .. {BLOCK}_{n - 1}"
            )
        try:
            items[BLOCK] = jax.tree.map(_stack, *(m[f"{BLOCK}_{i}"] for i in range(n)))
        except ValueError as e:
            raise ValueError(
                f"encoder blocks of different structures cannot be stacked: {e}"
            ) from None
        return _rebuild(m, items)

    return jax.tree.map(convert, tree, is_leaf=has_blocks)


def _depth(tree) -> Optional[int]:
    """The number of blocks in `tree`: the leading axis of stacked arrays, or numbered blocks."""
    for m in _block_mappings(tree):
        leaves = jax.tree.leaves(m.get(BLOCK))
        if leaves:
            return int(leaves[0].shape[0])
    numbered = [sum(_number(k) is not None for k in m) for m in _block_mappings(tree)]
    return max(numbered, default=0) or None


def unstack_blocks(tree, depth: Optional[int] = None):
    """The inverse of `stack_blocks`: every `encoderblock` entry split along its leading axis into
    `encoderblock_0` .. `encoderblock_{depth-1}`.

    `depth` is read from the arrays when not given (a block without arrays, such as an optax
    state's masked-out part, takes the depth of the others).
    """
    depth = _depth(tree) if depth is None else depth

    def convert(m):
        if not has_blocks(m):
            return m
        items = {k: unstack_blocks(v, depth) for k, v in m.items() if k != BLOCK}
        if BLOCK in m:
            if depth is None:
                raise ValueError(f"the depth of stacked blocks without arrays is unknown: {m!r}")
            for i in range(depth):
                items[f"{BLOCK}_{i}"] = jax.tree.map(lambda x, i=i: _take(x, i), m[BLOCK])
        return _rebuild(m, items)

    return jax.tree.map(convert, tree, is_leaf=has_blocks)


def match_layout(tree, like: Any):
    """`tree` with each mapping of blocks in the layout of the mapping at the same place in `like`
    (the two trees are otherwise alike, e.g. a restored state and the state it should become)."""

    depth = _depth(like) or _depth(tree)

    def fix(want, got):
        if not has_blocks(want):
            return got
        return stack_blocks(got, depth) if BLOCK in want else unstack_blocks(got, depth)

    return jax.tree.map(fix, like, tree, is_leaf=has_blocks)


__all__ = ["BLOCK", "has_blocks", "is_stacked", "match_layout", "stack_blocks", "unstack_blocks"]
