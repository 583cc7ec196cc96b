"""The offline default dataset: scikit-learn's bundled 8x8 handwritten digits ("digits").

1797 grayscale images of 10 classes. Values 0..16 are rescaled to 0..255 and copied to 3
channels. Splits are fixed: a stratified 80/20 split seeded with 0 gives "train" (1437) and
"test" (360); inside each split examples are in `splits.stratified_order`, so "train[:90%]" and
"train[90%:]" are balanced too.
"""

import numpy as np

from vit_jax.data import splits
from vit_jax.data.core import SourceOptions
from vit_jax.data.indexed import MemorySource


def split_ids(labels: np.ndarray) -> dict:
    """Ids of the fixed "train" and "test" splits, each in stratified order."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    return {
        name: ids[splits.stratified_order(labels[ids])]
        for name, ids in (("train", np.sort(train)), ("test", np.sort(test)))
    }


def open_digits(arg: str, split: str, options: SourceOptions) -> MemorySource:
    """Opens a split of digits (`arg` and `options` are unused)."""
    del arg, options
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int32)
    ids = splits.select(split, split_ids(labels), "digits")
    gray = np.round(digits.images[ids] * (255 / 16)).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    return MemorySource("digits", split, [str(d) for d in range(10)], images, labels[ids])
