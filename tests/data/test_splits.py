"""Split strings, stratified order, process shards and epoch streams (pure NumPy)."""

import numpy as np
import pytest

from vit_jax.data import splits
from vit_jax.data.core import DataError

IDS = {"train": np.arange(100, 110), "test": np.arange(200, 204)}


@pytest.mark.parametrize(
    "split, expected",
    [
        ("train", list(range(100, 110))),
        ("train[:30%]", [100, 101, 102]),
        ("train[-20%:]", [108, 109]),
        ("train[2:4]", [102, 103]),
        ("train[-3:-1]", [107, 108]),
        ("test[:50%] + train[:1]", [200, 201, 100]),
        ("test[:13%]", [200]),  # 0.52 rounds to the closest example.
    ],
)
def test_select_slices_like_tfds(split, expected):
    assert splits.select(split, IDS, "ds").tolist() == expected


def test_select_errors_name_the_split():
    with pytest.raises(DataError, match="ds has no split 'val' .*it has: test, train"):
        splits.select("val", IDS, "ds")
    with pytest.raises(DataError, match="bad split string 'train\\[1\\]'"):
        splits.select("train[1]", IDS, "ds")
    assert splits.split_names("train[:5%]+test", "ds") == ["train", "test"]


def test_stratified_order_balances_every_prefix():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    order = splits.stratified_order(labels)
    assert sorted(order) == list(range(100))
    for n in (10, 20, 50):
        counts = np.bincount(labels[order[:n]], minlength=3)
        np.testing.assert_allclose(counts, n * np.array([0.5, 0.3, 0.2]), atol=1)
    assert (np.diff(order[labels[order] == 0]) > 0).all()  # Within a class, original order.


def test_shards_are_contiguous_and_sized_like_tfds_even_splits():
    ranges = [splits.shard_range(11, i, 3) for i in range(3)]
    assert ranges == [(0, 4), (4, 8), (8, 11)]  # tfds.even_splits: 4, 4, 3.


def test_stream_ids_cross_epochs_and_resume_anywhere():
    order = lambda epoch: (np.arange(7) * 3 + epoch) % 7  # noqa: E731  A permutation per epoch.
    stream = splits.stream_ids(7, start=0, stop=21, epoch_order=order)
    for epoch in range(3):
        np.testing.assert_array_equal(stream[7 * epoch : 7 * epoch + 7], order(epoch))
    np.testing.assert_array_equal(splits.stream_ids(7, 5, 16, order), stream[5:16])
    assert stream[5:9].tolist() == [1, 4, 1, 4]  # Epoch 0 ends with ids 1, 4; epoch 1 starts 1, 4.
