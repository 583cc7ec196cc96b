"""A vivit run through the loop on moving digits: trains, evaluates, resumes, inflates an image
checkpoint through init_from; clips from files (folder of frames, .npy, volume) for predict."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vit_jax
from vit_jax import train as train_lib
from vit_jax.config import base_config, from_saved, validate
from vit_jax.data import clips as clips_lib
from vit_jax.data.core import DataError
from vit_jax.tools import inference
from vit_jax.weights import npz

TINY = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, pool="token")


def _config():
    c = base_config("vivit")
    c.dataset, c.image_size, c.progress_bar = "moving_digits:direction", 16, False
    c.train_split, c.eval_split = "train[:256]", "test[:64]"
    c.batch_size, c.eval_batch_size, c.total_steps, c.warmup_steps = 16, 32, 4, 1
    c.eval_every, c.checkpoint_every, c.log_every = 0, 2, 2
    c.aug.flip, c.aug.crop_area_min = False, 1.0
    c.model.variant = None
    c.model.update(dict(TINY, tubelet_size=2, num_frames=8, posemb="learn_sep"))
    return c


def test_a_vivit_run_trains_evaluates_resumes_and_starts_from_an_image_checkpoint(tmp_path):
    c = _config()
    validate(c, num_devices=1)
    result = train_lib.train_and_evaluate(c, str(tmp_path / "run"))
    assert result["eval/count"] == 64 and 0.0 <= result["eval/top1"] <= 1.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_name"] == "vivit" and saved["model"]["encoder"] == "joint"
    again = train_lib.train_and_evaluate(from_saved(saved), str(tmp_path / "run"))
    assert again["eval/top1"] == result["eval/top1"]  # resumed at the end: nothing to train

    image = vit_jax.create_model(None, 10, **TINY, attn_impl="xla")
    params = image.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))["params"]
    c.init_from.path = npz.export_npz(params, str(tmp_path / "image.npz"))
    c.init_from.inflate, c.total_steps, c.lr = "central_frame", 2, 1e-9  # ~ the loaded weights
    c.weight_decay = 0.0
    train_lib.train_and_evaluate(c, str(tmp_path / "inflated"))
    _, inflated, _, _ = inference.load_run(str(tmp_path / "inflated"), None)
    kernel = np.asarray(inflated["params"]["embedding"]["kernel"])
    assert np.abs(kernel[0]).max() < 1e-6  # central_frame: only the second of t=2 frames
    np.testing.assert_allclose(kernel[1], params["embedding"]["kernel"], atol=1e-6)

    model, variables, config, names = inference.load_run(str(tmp_path / "run"), None)
    clip = np.random.default_rng(0).integers(0, 255, (8, 16, 16), np.uint8)
    np.save(tmp_path / "vol.npy", clip)  # a [D, H, W] volume
    inputs, _ = inference.load_clips([str(tmp_path / "vol.npy")], config, config.aug)
    assert inputs.shape == (1, 8, 16, 16, 3)
    probs = inference.predict_probs(model, variables, inputs)
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1.0, atol=1e-5)
    assert list(names) == ["up", "down", "left", "right"]


def test_clips_from_a_folder_of_frames_npy_and_volumes(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (5, 6, 4, 3), np.uint8)
    (tmp_path / "clip").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "clip" / f"{i:02d}.png")
    np.testing.assert_array_equal(clips_lib.read_clip(str(tmp_path / "clip")), frames)
    np.save(tmp_path / "a.npy", frames)
    np.testing.assert_array_equal(clips_lib.read_clip(str(tmp_path / "a.npy")), frames)
    volume = np.linspace(-1.0, 3.0, 5 * 6 * 4).reshape(5, 6, 4)  # float: min-max to 0..255
    np.save(tmp_path / "v.npy", volume)
    got = clips_lib.read_clip(str(tmp_path / "v.npy"))
    assert got.shape == (5, 6, 4, 3) and got.min() == 0 and got.max() == 255
    np.testing.assert_array_equal(got[..., 0], np.round((volume + 1) / 4 * 255))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="a clip is"):
        clips_lib.read_clip(str(tmp_path / "bad.npy"))


def test_temporal_windows_centre_multi_clip_and_clamping():
    assert clips_lib.window_starts(20, 4, 2) == [6]  # span 7, room 13: centre start 6
    assert clips_lib.window_starts(20, 4, 2, windows=3) == [0, 6, 13]
    clip = np.arange(10)[:, None]
    np.testing.assert_array_equal(clips_lib.sample(clip, 4, 3, 3)[:, 0], [3, 6, 9, 9])  # clamped
    rng = np.random.default_rng(0)
    starts = {clips_lib.random_start(10, 4, 2, rng) for _ in range(200)}
    assert starts == {0, 1, 2, 3}
