"""tfds sources, on a tiny dataset built offline in a temporary data_dir."""

import socket

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax import data


class TinyShades(tfds.core.GeneratorBasedBuilder):
    """23 train and 7 test solid images whose gray value is the example's key."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(6, 5, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
            # A label set, as ImageNet ReaL's real_label: {}, {key%3}, {key%3, (key+1)%3}, ...
            "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=["a", "b", "c"])),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(1, 23), "test": self._generate_examples(101, 7)}

    def _generate_examples(self, first, count):
        for key in range(first, first + count):
            labels = [(key + i) % 3 for i in range(key % 3)]
            yield (
                key,
                {"image": np.full((6, 5, 3), key, np.uint8), "label": key % 3, "labels": labels},
            )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    TinyShades(data_dir=str(path)).download_and_prepare()
    return str(path)


def config(data_dir, **kw):
    aug = dict(crop_area_min=1.0, flip=False, mean=(0, 0, 0), std=(1, 1, 1))
    base = dict(
        dataset="tfds:tiny_shades",
        data_dir=data_dir,
        image_size=4,
        batch_size=4,
        eval_batch_size=4,
        shuffle_buffer=64,
        aug=aug,
    )
    return ml_collections.ConfigDict(dict(base, **kw))


def values(batch):
    return np.round(batch["image"][:, 0, 0, 0] * 255).astype(int)


def test_info_and_split_slicing(data_dir):
    info = data.get_info("tfds:tiny_shades", "train", data_dir)
    assert info == data.DatasetInfo(23, 3, ("a", "b", "c"))
    assert data.get_info("tfds:tiny_shades", "train[:40%]", data_dir).num_examples == 9
    with pytest.raises(data.DataError, match="has no split 'validation'"):
        data.get_info("tfds:tiny_shades", "validation", data_dir)


def test_not_prepared_is_an_error_without_network_access(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in ("tiny_shades", "cifar10"):
        with pytest.raises(data.DataError, match=f"'{name}' is not prepared in .*download=True"):
            data.get_info(f"tfds:{name}", "train", str(tmp_path))


def test_eval_shards_cover_the_split_once(data_dir):
    seen = {}
    for index in range(2):
        batches = data.eval_iterator(
            config(data_dir), process_index=index, process_count=2, local_device_count=1
        )
        assert len(batches) == 2
        for batch in batches:
            mask = batch["mask"]
            seen.update(zip(batch["index"][mask].tolist(), values(batch)[mask].tolist()))
            np.testing.assert_array_equal(batch["label"][mask], values(batch)[mask] % 3)
    assert sorted(seen) == list(range(7)) and sorted(seen.values()) == list(range(101, 108))


def test_train_shards_epochs_and_resume(data_dir):
    shards = []
    for index in range(2):
        kw = dict(process_index=index, process_count=2, local_device_count=1)
        batches = data.train_iterator(config(data_dir), **kw)
        run = [values(next(batches)) for _ in range(12)]  # 2 per step: 24 reads, 2 epochs.
        size = 12 - index  # even_splits: 12 and 11 examples.
        stream = np.concatenate(run)
        assert sorted(stream[:size]) == sorted(stream[size : 2 * size])  # Whole epochs ...
        assert not np.array_equal(stream[:size], stream[size : 2 * size])  # ... reshuffled.
        shards.append(set(stream[:size]))
        resumed = data.train_iterator(config(data_dir), start_step=7, **kw)
        for step in (7, 8, 9):
            np.testing.assert_array_equal(values(next(resumed)), run[step])
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(1, 24))


def test_a_label_set_reads_as_multi_hot_and_only_multilabel_evaluators_take_it(data_dir):
    from vit_jax import evaluators  # noqa: PLC0415
    from vit_jax.config import base_config  # noqa: PLC0415

    info = data.get_info("tfds:tiny_shades", "test", data_dir, label_key="labels")
    assert info.multi_label and info.num_classes == 3 and info.num_examples == 7
    c = config(data_dir, eval_split="test", label_key="labels", eval_batch_size=4)
    batches = list(data.eval_iterator(c))
    labels = np.concatenate([b["label"] for b in batches])[
        np.concatenate([b["mask"] for b in batches])
    ]
    keys = np.concatenate([values(b) for b in batches])[
        np.concatenate([b["mask"] for b in batches])
    ]
    expect = np.zeros((7, 3), np.int32)
    for row, key in enumerate(keys):
        expect[row, [(key + i) % 3 for i in range(key % 3)]] = 1
    np.testing.assert_array_equal(labels, expect)
    assert labels.shape == (7, 3) and (labels.sum(1) == 0).sum() == sum(k % 3 == 0 for k in keys)
    run = base_config()
    run.update(dict(dataset="tfds:tiny_shades", data_dir=data_dir, image_size=4))
    run.evals.real = dict(type="multilabel", split="test", label_key="labels")
    run.evals.top1 = dict(type="classification", split="test", label_key="labels")
    real, top1 = evaluators.from_config(run)
    real.check(3)
    with pytest.raises(evaluators.EvalError, match="type='multilabel'"):
        top1.check(3)
