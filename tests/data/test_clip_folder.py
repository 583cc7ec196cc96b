"""folder: trees of clips (.npy arrays or folders of frames): the centre / evenly spaced eval
windows equal clips.sample + video.eval_clip of clips.read_clip, train windows are random per seed
and inside the clip, labels are the class folders; bad trees and configs fail in one line."""

import numpy as np
import pytest
from PIL import Image

from vit_jax import data
from vit_jax.data import clips, video
from vit_jax.data.core import DataError
from vit_jax.data.options import read_config

CLASSES = ("cat", "dog")


def _npy_tree(root, rng):
    """2 classes x 3 clips per split; lengths 5..8, 12x10 px, every storage the reader handles."""
    for split in ("train", "test"):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            np.save(d / "a.npy", rng.integers(0, 256, (8, 12, 10, 3), np.uint8))
            np.save(d / "b.npy", rng.standard_normal((6, 12, 10)).astype(np.float32))  # volume
            gray = rng.integers(-300, 300, (5, 12, 10, 1)).astype(">i2")  # big-endian int16
            np.save(d / "c.npy", gray)
            np.save(d / "d.npy", np.asfortranarray(rng.random((7, 12, 10, 3))))  # F order
    return root


def _frames_tree(root, rng, lengths=(6, 4, 8)):
    for split in ("train", "test"):
        for c in CLASSES:
            for i, n in enumerate(lengths):
                d = root / split / c / f"clip{i}"
                d.mkdir(parents=True)
                for f in range(n):
                    frame = rng.integers(0, 256, (12, 10, 3), np.uint8)
                    Image.fromarray(frame).save(d / f"{f:03d}.png")
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("clips")
    return {
        "npy": _npy_tree(base / "npy", rng),
        "frames": _frames_tree(base / "frames", rng),
    }


def _config(root, **kw):
    c = dict(dataset=f"folder:{root}", image_size=8, batch_size=4, eval_batch_size=5)
    c.update(clip_frames=3, clip_stride=2, aug=dict(flip=False, crop_area_min=1.0))
    c.update(kw)
    return c


def _expected(cfg, path, start):
    clip = clips.read_clip(path)
    window = clips.sample(clip, cfg.clip_frames, cfg.clip_stride, start)
    return video.eval_clip(window, cfg.image_size, cfg.aug).numpy()


@pytest.mark.parametrize("kind", ["npy", "frames"])
def test_eval_windows_equal_read_clip_sample_and_eval_clip(trees, kind):
    config = _config(trees[kind], eval_clips=3)
    cfg = read_config(config)
    source = data.open_source(config["dataset"], "test")
    assert source.info.class_names == CLASSES
    seen = 0
    for centre, multi in zip(data.eval_iterator(_config(trees[kind])), data.eval_iterator(config)):
        assert centre["image"].shape == (5, 3, 8, 8, 3)
        assert multi["image"].shape == (5, 3, 3, 8, 8, 3)
        for j in np.flatnonzero(centre["mask"]):
            path = source.paths[centre["index"][j]]
            assert centre["label"][j] == CLASSES.index(path.split("/")[-2])  # its class folder
            length = len(clips.read_clip(path))
            (start,) = clips.window_starts(length, 3, 2)
            np.testing.assert_allclose(centre["image"][j], _expected(cfg, path, start), atol=1e-6)
            for k, s in enumerate(clips.window_starts(length, 3, 2, windows=3)):
                np.testing.assert_allclose(multi["image"][j, k], _expected(cfg, path, s), atol=1e-6)
            seen += 1
    assert seen == source.info.num_examples == (6 if kind == "frames" else 8)


def test_train_windows_vary_with_the_seed_and_stay_inside_the_clip(trees):
    root = trees["frames"]
    source = data.open_source(f"folder:{root}", "train")
    starts = set()
    for seed in range(3):
        config = _config(root, seed=seed, batch_size=6)
        cfg = read_config(config)
        batch = next(data.train_iterator(config, 0, 0, 1, 1))
        again = next(data.train_iterator(config, 0, 0, 1, 1))
        np.testing.assert_array_equal(batch["image"], again["image"])  # a function of the seed
        ids = source.train_ids((0, 1), seed, 0, 6)
        assert list(batch["label"]) == list(source.labels[ids])
        for image, i in zip(batch["image"], ids):
            clip = clips.read_clip(source.paths[i])
            fits = range(max(len(clip) - (3 - 1) * 2, 1))  # clips.random_start's starts
            windows = [clips.sample(clip, 3, 2, s) for s in fits]
            prepared = [video.train_clip(w, np.zeros(2, np.int64), 8, cfg.aug) for w in windows]
            match = [s for s, p in zip(fits, prepared) if np.allclose(p, image, atol=1e-5)]
            assert match, f"train clip of {source.paths[i]} is no window of it"
            starts.add((len(clip), match[0]))
    assert len({s for n, s in starts if n == 8}) > 1  # 4 starts fit an 8-frame clip


def test_a_clip_shorter_than_the_window_repeats_its_last_frame(tmp_path):
    (tmp_path / "train" / "x").mkdir(parents=True)
    clip = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), np.uint8)
    np.save(tmp_path / "train" / "x" / "short.npy", clip)
    config = _config(tmp_path, eval_split="train", clip_frames=4, clip_stride=1)
    batch = next(iter(data.eval_iterator(config)))
    got = batch["image"][0]
    np.testing.assert_allclose(got[1], got[2])
    np.testing.assert_allclose(got[1], got[3])
    np.testing.assert_allclose(got[0], (clip[0] / 255 - 0.5) / 0.5, atol=1e-6)  # 8 px: as is


def _error(config, split="test"):
    with pytest.raises(DataError) as e:
        next(iter(data.eval_iterator(config, split=split)))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_bad_trees_and_configs_fail_in_one_line(tmp_path, trees):
    mixed = tmp_path / "mixed"
    (mixed / "test" / "a").mkdir(parents=True)
    (mixed / "test" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "test" / "a" / "0.png")
    np.save(mixed / "test" / "b" / "0.npy", np.zeros((4, 8, 8, 3), np.uint8))
    assert "mixes images" in _error(_config(mixed)) and "0.png" in _error(_config(mixed))
    (mixed / "test" / "a" / "0.png").unlink()
    (mixed / "test" / "a" / "clip").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "test" / "a" / "clip" / "0.png")
    assert "mixes .npy clips" in _error(_config(mixed))

    bad = tmp_path / "bad"
    (bad / "test" / "a").mkdir(parents=True)
    (bad / "test" / "a" / "x.npy").write_bytes(b"not numpy at all")
    message = _error(_config(bad))
    assert message.startswith("cannot read ") and "x.npy" in message
    np.save(bad / "test" / "a" / "x.npy", np.zeros((4, 8, 8, 3), np.uint8))
    truncated = (bad / "test" / "a" / "x.npy").read_bytes()[:-10]
    (bad / "test" / "a" / "x.npy").write_bytes(truncated)
    assert "x.npy is truncated" in _error(_config(bad))
    np.save(bad / "test" / "a" / "x.npy", np.zeros((4, 8, 8, 2), np.uint8))
    assert "a clip is [T, H, W, C]" in _error(_config(bad))
    np.save(bad / "test" / "a" / "x.npy", np.zeros((4, 8, 8, 3), np.complex64))
    assert "save the clip as one of" in _error(_config(bad))

    frames = tmp_path / "frames"
    (frames / "test" / "a" / "clip").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(frames / "test" / "a" / "clip" / "0.png")
    (frames / "test" / "a" / "clip" / "1.png").write_bytes(b"\x89PNG broken")
    message = _error(_config(frames, clip_frames=2, clip_stride=1))
    assert f"corrupt image file {frames}/test/a/clip (frame 1.png: " in message
    assert "skip_corrupt" in message
    assert read_config(_config(frames, skip_corrupt=True)).skip_corrupt
    info = data.get_info(f"folder:{frames}", "test", skip_corrupt=True)
    assert info.num_examples == 0  # the one broken clip left out

    root = trees["npy"]
    assert "config.clip_stride must be an int >= 1" in _error(_config(root, clip_stride=0))
    assert "config.clip_frames must be" in _error(_config(root, clip_frames=0))
    no_frames = _config(root, clip_frames=None)
    assert "set config.clip_frames" in _error(no_frames)
    assert "config.eval_clips must be 1 without" in _error({**no_frames, "eval_clips": 2})
    digits = dict(dataset="digits", image_size=8, batch_size=4, clip_frames=4, eval_clips=2)
    assert "holds images" in _error(digits)


def test_class_subsets_and_processes_read_every_clip_once(trees):
    root = trees["npy"]
    subset = _config(root, dataset=f"folder:{root}?classes=dog", eval_batch_size=2)
    batches = list(data.eval_iterator(subset))
    assert [b["image"].shape for b in batches] == [(2, 3, 8, 8, 3)] * 2
    assert all((b["label"] == 0).all() for b in batches)  # dog relabelled 0
    seen = []
    for p in range(3):  # 8 clips over 3 processes: padding batches hold [K, T] windows too
        for b in data.eval_iterator(_config(root, eval_clips=2), None, 3, p, 3, 1):
            assert b["image"].shape == (1, 2, 3, 8, 8, 3)
            seen += list(b["index"][b["mask"]])
    assert sorted(seen) == list(range(8))
