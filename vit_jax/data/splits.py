"""Split strings, process shards and epoch streams for sources read by example index (pure NumPy).

Split strings follow tfds: "train", "train[:90%]", "train[100:-50]", "train[:10%]+test".
Slices count examples, or percent of the split rounded to the closest example.
"""

import re
from typing import Callable, Dict, List, Tuple

import numpy as np

from vit_jax.data.core import DataError

_PART = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


def _bound(text, n: int, default: int) -> int:
    if text is None:
        return default
    value = int(text.rstrip("%"))
    if text.endswith("%"):
        value = int(np.floor(n * value / 100 + 0.5))
    return value


def split_names(split: str, dataset: str) -> List[str]:
    """The split names a split string refers to, e.g. ["train", "test"] for "train[:50%]+test".

    Raises:
      DataError: malformed split string.
    """
    return [_parse(part, split, dataset)[0] for part in split.replace(" ", "").split("+")]


def _parse(part: str, split: str, dataset: str):
    match = _PART.match(part)
    if not match:
        raise DataError(f"bad split string {split!r} for {dataset}; use e.g. 'train[:90%]'")
    return match.groups()


def select(split: str, ids_by_split: Dict[str, np.ndarray], dataset: str) -> np.ndarray:
    """Returns the example ids named by a split string.

    Args:
      split: split string, e.g. "train[:90%]" or "train+test[:50]".
      ids_by_split: the ids of each whole split, in the split's canonical order.
      dataset: dataset string, for error messages.

    Returns:
      The selected ids, concatenated in the order the parts are written.

    Raises:
      DataError: malformed split string or unknown split name.
    """
    chosen: List[np.ndarray] = []
    for part in split.replace(" ", "").split("+"):
        name, lo, hi = _parse(part, split, dataset)
        if name not in ids_by_split:
            known = ", ".join(sorted(ids_by_split))
            raise DataError(f"{dataset} has no split {name!r} (it has: {known})")
        ids = ids_by_split[name]
        chosen.append(ids[_bound(lo, len(ids), 0) : _bound(hi, len(ids), len(ids))])
    return np.concatenate(chosen)


def stratified_order(labels: np.ndarray) -> np.ndarray:
    """Orders examples so that every prefix of the split is class-balanced.

    Each example is keyed by its fractional rank within its class, so "train[:10%]" holds about 10%
    of every class, and "train[-10%:]" is a stratified holdout. Deterministic, no RNG.

    Args:
      labels: int [n] label of each example, in any order (ties keep that order).

    Returns:
      int [n] permutation of range(n).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    rank = np.zeros(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = (np.arange(len(members)) + 0.5) / counts[c]
    return np.lexsort((labels, rank))


def shard_range(num_examples: int, index: int, count: int) -> Tuple[int, int]:
    """[start, end) of process `index`'s contiguous shard, sized like `tfds.even_splits`.

    The first `num_examples % count` shards get one extra example.
    """
    base, extra = divmod(num_examples, count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def stream_ids(
    num_examples: int, start: int, stop: int, epoch_order: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Shard-local ids at positions [start, stop) of an endless sequence of epochs.

    Args:
      num_examples: examples in the shard (the length of one epoch).
      start, stop: stream positions; position p is offset p % num_examples of epoch
        p // num_examples.
      epoch_order: epoch -> the shard-local ids in that epoch's order (int [num_examples]).
    """
    positions = np.arange(start, stop)
    epochs, offsets = np.divmod(positions, num_examples)
    ids = np.empty_like(positions)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        ids[here] = np.asarray(epoch_order(int(epoch)))[offsets[here]]
    return ids
