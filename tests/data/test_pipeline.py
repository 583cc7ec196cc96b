"""The input pipeline through its public API: sources, eval coverage, sharding, resume, errors."""

import os
import subprocess
import sys
import tarfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from vit_jax import data
from vit_jax.data import indexed, pipeline, sources
from vit_jax.data._tf import tf

ONE_PROCESS = dict(process_index=0, process_count=1, local_device_count=1)
RAW = dict(crop_area_min=1.0, flip=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def make_config(**kw):
    """A data config; `aug` entries are merged into no-augmentation, raw-pixel defaults."""
    aug = dict(RAW, **kw.pop("aug", {}))
    base = dict(dataset="digits", image_size=8, batch_size=8, eval_batch_size=8, seed=0)
    return ml_collections.ConfigDict(dict(base, aug=aug, **kw))


def write_folder(root, counts, split="train", value_of=None, size=(6, 5)):
    """Writes root/split/<class>/NNN.png solid images; returns {value: class}.

    Every image has a distinct gray value (1, 2, ...), so a batch's pixels tell which files it
    holds.
    """
    values, value = {}, 0
    for cls, count in counts.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            value += 1
            pixels = np.full(size + (3,), value, np.uint8)
            Image.fromarray(pixels).save(root / split / cls / f"{n:03d}.png")
            values[value] = cls
    return values


def pixel_values(batch):
    """The gray value of each image of a RAW-config batch."""
    return np.round(batch["image"][:, 0, 0, 0] * 255).astype(int)


def test_importing_the_package_leaves_tensorflow_unloaded():
    code = "import sys, vit_jax.data; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Sources ----------------------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("VIT_JAX_CIFAR10_TAR"), reason="VIT_JAX_CIFAR10_TAR unset")
def test_cifar10_tarball_counts_and_classes():
    dataset = "folder:" + os.environ["VIT_JAX_CIFAR10_TAR"]
    names = ("airplane", "automobile", "bird", "cat", "deer")
    names += ("dog", "frog", "horse", "ship", "truck")
    for split, total in (("train", 50_000), ("test", 10_000)):
        info = data.get_info(dataset, split)
        assert info == data.DatasetInfo(total, 10, names)
        counts = sources.open_source(dataset, split).label_counts()
        np.testing.assert_array_equal(counts, [total // 10] * 10)


def test_digits_fixed_stratified_splits():
    train, test = data.get_info("digits", "train"), data.get_info("digits", "test")
    assert (train.num_examples, test.num_examples) == (1437, 360)
    assert train.class_names == tuple("0123456789")
    head = sources.open_source("digits", "train[:10%]")
    assert head.info.num_examples == 144
    assert head.label_counts().min() >= 13  # Every prefix holds every class.


def test_folder_and_tarball_load_the_same_examples(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    write_folder(tmp_path / "tree", {"cat": 3, "dog": 2}, "train")
    write_folder(tmp_path / "tree", {"dog": 2, "emu": 1}, "test")
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="pets")  # Wrapped in one folder, as archives often are.
    for dataset in ("folder:" + str(tmp_path / "tree"), "folder:" + str(archive)):
        # Classes are the union over splits, so a label means the same class in every split.
        assert data.get_info(dataset, "test") == data.DatasetInfo(3, 3, ("cat", "dog", "emu"))
        assert data.get_info(dataset, "train[:60%]").num_examples == 3
    (extracted,) = (tmp_path / "cache" / "extracted").iterdir()  # Extracted once, then reused.
    assert extracted.name.startswith("pets-")


def test_gray_and_rgba_images_become_rgb(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 40, np.uint8), "L").save(tmp_path / "train/a/gray.png")
    rgba = np.zeros((4, 4, 4), np.uint8) + np.array([10, 20, 30, 128], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "train/a/rgba.png")
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(tmp_path / "train/a/rgb.bmp")
    config = make_config(dataset=f"folder:{tmp_path}", eval_split="train", image_size=4)
    (batch,) = data.eval_iterator(config, batch_size=3, **ONE_PROCESS)
    pixels = np.round(batch["image"][:, 0, 0] * 255)
    by_file = {tuple(p) for p in pixels}
    assert by_file == {(40, 40, 40), (10, 20, 30), (90, 90, 90)}


# --- Eval: every example exactly once ---------------------------------------------------------


@pytest.mark.parametrize("process_count", [1, 2, 3])
def test_eval_counts_every_example_once(process_count):
    config = make_config(eval_batch_size=42 * process_count)  # 360 is no multiple of 42.
    seen, lengths = [], set()
    for index in range(process_count):
        batches = data.eval_iterator(
            config, process_index=index, process_count=process_count, local_device_count=1
        )
        lengths.add(len(batches))
        for batch in batches:
            assert batch["image"].shape == (42, 8, 8, 3)  # Static shape, padding included.
            assert batch["mask"].dtype == bool and batch["index"].dtype == np.int64
            assert (batch["index"][~batch["mask"]] == -1).all()
            seen += batch["index"][batch["mask"]].tolist()
    assert len(lengths) == 1  # Every process runs the same number of eval steps.
    assert len(seen) == 360 and sorted(seen) == list(range(360))


def test_eval_is_reiterable_and_matches_labels():
    batches = data.eval_iterator(make_config(), batch_size=100, **ONE_PROCESS)
    first, second = list(batches), list(batches)
    assert len(first) == len(batches) == 4
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["image"], b["image"])
    labels = np.concatenate([b["label"][b["mask"]] for b in first])
    expected = sources.open_source("digits", "test").labels
    np.testing.assert_array_equal(labels, expected)


# --- Train: sharding, determinism, resume, augmentation -------------------------------------


def test_two_processes_read_disjoint_shards_covering_the_split(tmp_path):
    values = write_folder(tmp_path, {"a": 10, "b": 7, "c": 7})  # 24 files, 12 per process.
    config = make_config(dataset=f"folder:{tmp_path}", batch_size=8)  # 4 per process and step.
    shards = []
    for index in range(2):
        batches = data.train_iterator(
            config, process_index=index, process_count=2, local_device_count=1
        )
        epoch = [next(batches) for _ in range(3)]  # One epoch of this process' shard.
        read = np.concatenate([pixel_values(b) for b in epoch])
        assert len(set(read)) == 12
        labels = np.concatenate([b["label"] for b in epoch])
        names = ["a", "b", "c"]
        assert [names[label] for label in labels] == [values[v] for v in read]
        shards.append(set(read))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(values)


def test_epochs_are_permutations_in_a_new_order():
    batches = data.train_iterator(make_config(dataset="digits", batch_size=479), **ONE_PROCESS)
    first = np.concatenate([next(batches)["image"] for _ in range(3)])  # 1437 = 3 * 479
    second = np.concatenate([next(batches)["image"] for _ in range(3)])
    key = lambda images: sorted(map(bytes, images.reshape(len(images), -1)))  # noqa: E731
    assert key(first) == key(second)  # Same examples ...
    assert not np.array_equal(first, second)  # ... in another order.


def test_epoch_order_is_a_pure_permutation_keyed_by_seed_shard_and_epoch():
    order = indexed.epoch_order(50, seed=3, shard=0, epoch=2).numpy()
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(order, indexed.epoch_order(50, 3, 0, 2).numpy())
    for other in [(3, 0, 3), (3, 1, 2), (4, 0, 2)]:
        assert not np.array_equal(order, indexed.epoch_order(50, *other).numpy())


def test_train_records_read_the_ids_train_ids_recomputes():
    source = sources.open_source("digits", "train[:100]")
    for shard in [(0, 2), (1, 2)]:  # 50 examples each; positions 30..130 cross two epochs.
        ds = source.train_records(shard, seed=5, start=30)
        read = [int(r["id"]) for r in ds.take(100).as_numpy_iterator()]
        np.testing.assert_array_equal(read, source.train_ids(shard, 5, 30, 130))
        lo = 50 * shard[0]
        assert sorted(read[20:70]) == list(range(lo, lo + 50))  # One whole epoch in the middle.


def test_train_pipeline_runs_no_python_callbacks():
    """A Python callback (tf.numpy_function) on tf.data's threads needs the GIL: destroying the
    iterator while one was in flight deadlocked the CLI at exit after a data error."""
    config = pipeline.read_config(make_config())
    source = pipeline.open_split(config, "train")
    placement = pipeline.place(8, "batch_size", 0, 1, 1)
    ds = pipeline.train_dataset(config, source, placement)
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "StatelessShuffle" in ops  # The epoch permutation is in the graph ...
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}  # ... and not a callback.


AUGMENTED = dict(
    crop_area_min=0.3, flip=True, randaug_n=2, randaug_m=10, mixup_alpha=0.4, cutmix_alpha=1.0
)


def test_augmented_batches_keep_shapes_and_ranges():
    config = make_config(image_size=16, batch_size=32, aug=dict(AUGMENTED, **RAW_TO_SIGNED))
    for batch in (next(data.train_iterator(config, start_step=s, **ONE_PROCESS)) for s in (0, 7)):
        assert batch["image"].shape == (32, 16, 16, 3) and batch["image"].dtype == np.float32
        assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert batch["label"].dtype == np.int32 and batch["label"].shape == (32,)
        soft = batch["soft_label"]
        assert soft.shape == (32, 10) and soft.dtype == np.float32
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
        assert (soft[np.arange(32), batch["label"]] > 0).all()


RAW_TO_SIGNED = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_same_seed_same_batches_and_resume_is_exact():
    config = make_config(batch_size=256, aug=AUGMENTED)  # 1437 / 256: steps cross epochs.
    from_zero = data.train_iterator(config, **ONE_PROCESS)
    run = [next(from_zero) for _ in range(8)]
    again = data.train_iterator(config, **ONE_PROCESS)
    np.testing.assert_array_equal(next(again)["image"], run[0]["image"])
    resumed = data.train_iterator(config, start_step=5, **ONE_PROCESS)
    for step in (5, 6, 7):
        batch = next(resumed)
        for key in ("image", "label", "soft_label"):
            np.testing.assert_array_equal(batch[key], run[step][key])
    other = next(
        data.train_iterator(make_config(batch_size=256, seed=1, aug=AUGMENTED), **ONE_PROCESS)
    )
    assert not np.array_equal(other["image"], run[0]["image"])


def test_trainer_default_config_runs():
    from vit_jax.config import base_config

    config = base_config()
    config.update(dict(dataset="digits", image_size=16, batch_size=16))
    batch = next(data.train_iterator(config))  # Processes and devices from JAX.
    assert batch["image"].shape == (16, 16, 16, 3)


# --- Errors -----------------------------------------------------------------------------------


def test_batch_must_divide_over_processes_and_devices():
    with pytest.raises(data.DataError, match=r"config.batch_size=10 .* 4 processes"):
        data.train_iterator(make_config(batch_size=10), process_index=0, process_count=4)
    with pytest.raises(data.DataError, match="3 devices"):
        data.eval_iterator(
            make_config(eval_batch_size=8), process_index=0, process_count=2, local_device_count=3
        )


@pytest.mark.parametrize(
    "dataset, split, message",
    [
        ("folder:/no/such/dir", "train", "dataset folder not found: /no/such/dir"),
        ("tfds:no_such_dataset_xyz", "train", "unknown tfds dataset 'no_such_dataset_xyz'"),
        ("imagenet", "train", "unknown dataset 'imagenet'"),
        ("digits", "validation", "digits has no split 'validation'"),
        ("digits", "train[:x]", "bad split string 'train[:x]'"),
    ],
)
def test_bad_dataset_strings_raise_one_line_errors(dataset, split, message):
    with pytest.raises(data.DataError, match=message.replace("[", r"\[")) as error:
        data.get_info(dataset, split)
    assert "\n" not in str(error.value)


def test_empty_class_and_missing_split_are_named(tmp_path):
    write_folder(tmp_path, {"a": 2})
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(data.DataError, match=f"empty class folder {tmp_path}/train/b"):
        data.get_info(f"folder:{tmp_path}", "train")
    with pytest.raises(
        data.DataError, match=r"split folder 'test' not found in .* \(found: train\)"
    ):
        data.get_info(f"folder:{tmp_path}", "test")


def test_symlink_loop_and_empty_archive_are_named(tmp_path):
    """A link that points at itself (os.scandir raises a bare ELOOP) and an archive with no
    folders give one line naming the link / the archive (not the cache folder it went into)."""
    import tarfile

    write_folder(tmp_path / "d", {"a": 2, "b": 2})
    loop = tmp_path / "d" / "train" / "a" / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(data.DataError, match=f"cannot read {loop} in the image folder .*loops"):
        data.get_info(f"folder:{tmp_path / 'd'}", "train")
    loop.unlink()
    assert data.get_info(f"folder:{tmp_path / 'd'}", "train").num_examples == 4
    (tmp_path / "d" / "train" / "up").symlink_to(tmp_path / "d")  # a cycle: read one level only
    # (its subfolder `train` reads as a clip: a tree of clips and images is refused)
    with pytest.raises(data.DataError, match=f"and clips \\({tmp_path}/d/train/up/train\\)"):
        data.get_info(f"folder:{tmp_path / 'd'}", "train")

    archive = tmp_path / "empty.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    with pytest.raises(data.DataError, match=f"the archive {archive} holds no folders"):
        data.get_info(f"folder:{archive}", "train")


@pytest.fixture(params=[("002.png", b"\x89PNG\r\n\x1a\n truncated"), ("002.jpg", b"<html>")])
def folder_with_corrupt_file(tmp_path, request):
    write_folder(tmp_path, {"a": 5, "b": 5})
    name, content = request.param
    (tmp_path / "train" / "b" / "002.png").unlink()  # Replaced by the corrupt file.
    bad = tmp_path / "train" / "b" / name
    bad.write_bytes(content)
    return tmp_path, bad


@pytest.mark.parametrize("crop", [1.0, 0.5])  # Whole-image decode, and the JPEG crop path.
def test_corrupt_file_is_named(folder_with_corrupt_file, crop):
    root, bad = folder_with_corrupt_file
    config = make_config(
        dataset=f"folder:{root}", eval_split="train", batch_size=4, aug=dict(crop_area_min=crop)
    )
    batches = data.train_iterator(config, **ONE_PROCESS)
    with pytest.raises(data.DataError, match=f"corrupt image file {bad} \\(.*skip_corrupt=True"):
        for _ in range(3):  # 10 examples, 4 per step: every file is read by step 2.
            next(batches)
    with pytest.raises(data.DataError, match=f"corrupt image file {bad}"):
        list(data.eval_iterator(config, batch_size=3, **ONE_PROCESS))


def test_skip_corrupt_skips_and_counts(folder_with_corrupt_file):
    root, bad = folder_with_corrupt_file
    source = sources.open_source(
        f"folder:{root}", "train", data.core.SourceOptions(skip_corrupt=True)
    )
    assert source.skipped == (str(bad),)
    assert source.info.num_examples == 9
    config = make_config(dataset=f"folder:{root}", eval_split="train", skip_corrupt=True)
    seen = [b["index"][b["mask"]] for b in data.eval_iterator(config, **ONE_PROCESS)]
    assert sorted(np.concatenate(seen)) == list(range(9))
