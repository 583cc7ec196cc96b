"""tensorflow-datasets sources ("tfds:NAME", e.g. "tfds:cifar10", "tfds:imagenet2012").

Split strings are tfds' own ("train[:98%]", "train+validation"). With download=False (the
default) nothing touches the network: a dataset not prepared under data_dir is a DataError.

Train order: each process reads its own `tfds.even_splits` part of the split. Epoch e is that
part in file order through a shuffle buffer seeded by (seed, process, e), so a resumed stream
starts at its epoch directly and only re-reads (without decoding) the records before it in that
epoch. Images stay encoded until the pipeline decodes (and crops) them.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import splits
from vit_jax.data._tf import tf
from vit_jax.data.core import DataError, DatasetInfo, Shard, SourceOptions, first_line


class TfdsSource:
    """One split of a prepared tfds dataset."""

    def __init__(self, builder, name: str, split: str, options: SourceOptions):
        self.builder = builder
        self.dataset = f"tfds:{name}"
        self.split = split
        self.image_key = options.image_key
        self.label_key = options.label_key
        try:
            num_examples = builder.info.splits[split].num_examples
        except (KeyError, ValueError, AssertionError) as e:
            known = ", ".join(builder.info.splits)
            raise DataError(
                f"{self.dataset} has no split {split!r} ({first_line(e)}); splits: {known}"
            ) from None
        class_names, multi = _class_names(builder, self.dataset, options)
        self.info = DatasetInfo(num_examples, len(class_names), class_names, multi)

    def _read(self, shard: Shard):
        """The shard's records in file order, images still encoded."""
        import tensorflow_datasets as tfds

        index, count = shard
        lo, hi = splits.shard_range(self.info.num_examples, index, count)
        if hi == lo:
            raise DataError(
                f"{self.dataset} split {self.split!r} is too small for {count} processes"
            )
        part = tfds.even_splits(self.split, n=count)[index] if count > 1 else self.split
        ds = self.builder.as_dataset(
            split=part,
            shuffle_files=False,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(try_autocache=False),
        )
        keys, classes = (self.image_key, self.label_key), self.info.num_classes

        def label(value):
            value = tf.cast(value, tf.int32)
            if not self.info.multi_label:
                return value
            hot = tf.reduce_sum(tf.one_hot(value, classes, dtype=tf.int32), axis=0)
            return tf.minimum(hot, 1)  # [classes] multi-hot; all zero for an empty set

        ds = ds.map(lambda ex: {"image": ex[keys[0]], "label": label(ex[keys[1]])})
        return ds, lo, hi

    def label_counts(self) -> np.ndarray:
        ds, _, _ = self._read((0, 1))
        counts = np.zeros(self.info.num_classes, np.int64)
        for labels in ds.map(lambda r: r["label"]).batch(4096).as_numpy_iterator():
            counts += np.bincount(labels, minlength=self.info.num_classes)
        return counts

    def train_records(self, shard: Shard, seed: int, start: int, shuffle_buffer: int):
        base, lo, hi = self._read(shard)
        first_epoch, offset = divmod(start, hi - lo)

        process_seed = tf.constant([seed, shard[0]], tf.int64)

        def epoch(e):
            key = tf.random.experimental.stateless_fold_in(process_seed, e)
            epoch_seed = tf.random.stateless_uniform([], key, None, None, tf.int64)
            return base.shuffle(max(shuffle_buffer, 1), seed=epoch_seed)

        ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
        return ds.enumerate(start).map(lambda k, r: {"k": k, "id": tf.constant(-1, tf.int64), **r})

    def eval_records(self, shard: Shard):
        ds, lo, _ = self._read(shard)
        return ds.enumerate(lo).map(lambda i, r: {"id": i, **r})

    def train_ids(self, shard: Shard, seed: int, start: int, stop: int) -> None:
        del shard, seed, start, stop  # Train records come from a shuffle buffer, not by id.
        return None

    def find_corrupt(self, ids: Sequence[int]) -> Optional[Tuple[str, str]]:
        del ids  # tfds records have no file of their own to name.
        return None


def _class_names(builder, dataset: str, options: SourceOptions) -> Tuple[Tuple[str, ...], bool]:
    """(class names, multi-label): a ClassLabel feature, or a Sequence of one (a label set)."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    for key in (options.image_key, options.label_key):
        if key not in features:
            raise DataError(
                f"{dataset} has no feature {key!r} (it has: {', '.join(features)}); "
                "set config.image_key / config.label_key"
            )
    feature = features[options.label_key]
    multi = isinstance(feature, tfds.features.Sequence)
    names = getattr(feature.feature if multi else feature, "names", None)
    if not names:
        raise DataError(f"{dataset} feature {options.label_key!r} is not a class label")
    return tuple(names), multi


def open_tfds(name: str, split: str, options: SourceOptions) -> TfdsSource:
    """Opens a split of a tfds dataset, preparing it first only if options.download is set."""
    import tensorflow_datasets as tfds

    if not name:
        raise DataError("dataset 'tfds:' needs a name, e.g. tfds:cifar10")
    try:
        builder = tfds.builder(name, data_dir=options.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"unknown tfds dataset {name!r} (from 'tfds:{name}'); "
            "see https://www.tensorflow.org/datasets/catalog"
        ) from None
    if not builder.is_prepared():
        if not options.download:
            raise DataError(
                f"tfds dataset {name!r} is not prepared in {builder.data_dir_root}; "
                "set config.data_dir, or config.download=True to download it"
            )
        builder.download_and_prepare()
    return TfdsSource(builder, name, split, options)
