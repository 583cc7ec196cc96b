"""Dataset sources, each named by one dataset string and opened with `open_source`.

  "digits"          scikit-learn's bundled 8x8 handwritten digits, offline (`digits.py`).
  "folder:PATH"     an ImageFolder tree PATH/<split>/<class>/*.jpg|png, or a .tar.gz of one; a
                    tree of clips (folders of frames or .npy) instead of images (`clip_folder.py`).
  "tfds:NAME"       any tensorflow-datasets dataset, e.g. "tfds:cifar10", "tfds:imagenet2012".
  "moving_digits:TASK"  offline clips [8, 16, 16, 3] of moving digits, TASK digits or direction.
  "...?classes=0-4" some classes only, relabelled 0..k-1 (`classes.py`; digits and folder:).

A source holds one split and hands the pipeline un-augmented records: dicts with "image" (encoded
bytes, or uint8 [h, w, 3]), "label" (int32) and "id" (int64 position within the split; -1 where
unknown). The pipeline asks for the records of one process' shard; see `Source`.
"""

from typing import Optional, Protocol, Sequence, Tuple

import numpy as np

from vit_jax.common.registry import Registry
from vit_jax.data import digits, folder, moving_digits, tfds_source
from vit_jax.data.classes import parse_dataset, select_classes
from vit_jax.data.core import DataError, DatasetInfo, Shard, SourceOptions

SOURCES = Registry("dataset source")
SOURCES.register("digits")(digits.open_digits)
SOURCES.register("folder")(folder.open_folder)
SOURCES.register("moving_digits")(moving_digits.open_moving_digits)
SOURCES.register("tfds")(tfds_source.open_tfds)


class Source(Protocol):
    """What the pipeline needs from a source."""

    dataset: str  # The dataset string, for messages.
    split: str
    info: DatasetInfo

    def label_counts(self) -> np.ndarray:
        """int [num_classes] examples per class."""

    def train_records(self, shard: Shard, seed: int, start: int, shuffle_buffer: int):
        """Endless tf.data.Dataset of the shard's records in train order, from stream position
        `start` on; each record also has "k", its stream position."""

    def eval_records(self, shard: Shard):
        """tf.data.Dataset of the shard's records, once each, in split order."""

    def train_ids(self, shard: Shard, seed: int, start: int, stop: int) -> Optional[np.ndarray]:
        """Split ids at stream positions [start, stop) of train_records, or None if unknown."""

    def find_corrupt(self, ids: Sequence[int]) -> Optional[Tuple[str, str]]:
        """(file, reason) of the first undecodable image among `ids`, or None."""


def open_source(dataset: str, split: str, options: Optional[SourceOptions] = None) -> Source:
    """Opens one split of the dataset named by a dataset string.

    Args:
      dataset: "digits", "folder:PATH" or "tfds:NAME".
      split: split string, e.g. "train" or "train[:90%]".
      options: settings for the sources that need them (default: `SourceOptions()`).

    Returns:
      The opened source.

    Raises:
      DataError: unknown dataset string, missing data, bad split (one line naming the culprit).
    """
    base, classes = parse_dataset(dataset)
    scheme, _, arg = base.partition(":")
    if scheme not in SOURCES:
        raise DataError(
            f"unknown dataset {dataset!r}; use digits, folder:PATH, tfds:NAME or moving_digits:TASK"
        )
    if classes and scheme == "tfds":
        raise DataError(f"{dataset}: ?classes= works for digits and folder: datasets, not tfds:")
    source = SOURCES.get(scheme)(arg, split, options or SourceOptions())
    return select_classes(source, classes, dataset)
