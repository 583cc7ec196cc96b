"""Sources whose examples are read by id: the base class, and the in-memory kind.

Train order: each process owns a contiguous shard of the split and visits it in epochs, each a
permutation seeded by (seed, process index, epoch) (`epoch_order`). A stream resumed at position
`start` is computed directly, without replaying earlier positions.

The permutation is TensorFlow ops, not a Python callback: a `tf.numpy_function` inside the
pipeline needs the GIL on tf.data's threads, and an iterator destroyed while one was in flight
(at exit after a data error, say) deadlocked the process.
"""

import functools
from typing import Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import splits
from vit_jax.data._tf import tf
from vit_jax.data.core import DataError, DatasetInfo, Shard


def epoch_order(size: int, seed: int, shard: int, epoch):
    """The order in which process `shard` visits its `size` examples in `epoch` (int64 [size]).

    A pure function of its arguments (a stateless TF shuffle), traced inside tf.data and called
    eagerly to recompute a stream, e.g. to name a corrupt file.
    """
    epoch = tf.cast(epoch, tf.int64)
    key = tf.constant([seed, shard], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, epoch)
    return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), key)


class IndexedSource:
    """A split whose examples are read by id in [0, num_examples); subclasses define `read`."""

    def __init__(self, dataset: str, split: str, class_names: Sequence[str], labels: np.ndarray):
        self.dataset = dataset
        self.split = split
        self.labels = np.asarray(labels, np.int32)
        self.info = DatasetInfo(len(self.labels), len(class_names), tuple(class_names))

    def read(self, example_id):
        """{"image", "label"} tensors of one example (traced inside tf.data)."""
        raise NotImplementedError

    @functools.cached_property
    def label_tensor(self):
        return eager_constant(self.labels)

    def label_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.info.num_classes)

    def find_corrupt(self, ids: Sequence[int]) -> Optional[Tuple[str, str]]:
        del ids  # Nothing to decode wrongly.
        return None

    def _shard(self, shard: Shard) -> Tuple[int, int]:
        lo, hi = splits.shard_range(self.info.num_examples, *shard)
        if hi == lo:
            raise DataError(
                f"{self.dataset} split {self.split!r} has {self.info.num_examples} examples, "
                f"too few for {shard[1]} processes"
            )
        return lo, hi

    def train_ids(self, shard: Shard, seed: int, start: int, stop: int) -> np.ndarray:
        """Split ids at stream positions [start, stop) of `shard` (what train_records reads)."""
        lo, hi = self._shard(shard)
        order = lambda e: epoch_order(hi - lo, seed, shard[0], e).numpy()  # noqa: E731
        return lo + splits.stream_ids(hi - lo, start, stop, order)

    def train_records(self, shard: Shard, seed: int, start: int, shuffle_buffer: int = 0):
        del shuffle_buffer  # Permutations shuffle perfectly.
        lo, hi = self._shard(shard)
        size = hi - lo

        def epoch(e):  # Stream positions and split ids of one epoch (from `start` on).
            begin, stop = tf.maximum(e * size, start), (e + 1) * size
            ids = lo + epoch_order(size, seed, shard[0], e)[begin - e * size :]
            return tf.data.Dataset.from_tensor_slices((tf.range(begin, stop), ids))

        ds = tf.data.Dataset.range(start // size, 2**62).flat_map(epoch)
        return ds.map(lambda k, i: {"k": k, "id": i, **self.read(i)}, tf.data.AUTOTUNE)

    def eval_records(self, shard: Shard):
        lo, hi = self._shard(shard)
        ds = tf.data.Dataset.from_tensor_slices(np.arange(lo, hi, dtype=np.int64))
        return ds.map(lambda i: {"id": i, **self.read(i)}, tf.data.AUTOTUNE)


class MemorySource(IndexedSource):
    """A split held in memory as uint8 images [n, h, w, 3] (small datasets such as digits)."""

    def __init__(self, dataset, split, class_names, images: np.ndarray, labels: np.ndarray):
        super().__init__(dataset, split, class_names, labels)
        self.images = images

    @functools.cached_property
    def image_tensor(self):
        return eager_constant(self.images)

    def read(self, example_id):
        return {
            "image": tf.gather(self.image_tensor, example_id),
            "label": tf.gather(self.label_tensor, example_id),
        }


def eager_constant(array: np.ndarray):
    """A tensor that tf.data functions capture by reference rather than copy into their graphs.

    Without this, a million file paths would be copied into every traced function.
    """
    with tf.init_scope():
        return tf.constant(array)
