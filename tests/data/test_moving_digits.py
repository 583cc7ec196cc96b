"""Moving digits: deterministic clips whose direction needs time; a tiny vivit learns it, a
single-frame model cannot."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import vit_jax
from vit_jax import data
from vit_jax.data import moving_digits
from vit_jax.data.core import DataError


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.images, d.target


def test_clips_are_deterministic_and_move_as_labelled(digits):
    clips, classes, dirs = moving_digits.make_clips(*digits, 40, seed=3)
    again = moving_digits.make_clips(*digits, 40, seed=3)
    assert clips.shape == (40, 8, 16, 16) and clips.dtype == np.uint8
    np.testing.assert_array_equal(clips, again[0])
    for clip, d in zip(clips, dirs):  # frame f+1 is frame f rolled by SPEED along the direction
        dy, dx = moving_digits._STEPS[d]
        step = moving_digits.SPEED
        # each digit is rolled on its own, so compare the clip with itself moved: exact on a torus
        np.testing.assert_array_equal(np.roll(clip[0], (dy * step, dx * step), (0, 1)), clip[1])
    assert set(np.unique(dirs)) == {0, 1, 2, 3} and set(np.unique(classes)) <= set(range(10))


def test_dataset_strings_splits_and_bad_task():
    info = data.get_info("moving_digits:direction", "train")
    assert (info.num_examples, info.num_classes) == (2000, 4)
    assert data.get_info("moving_digits:digits", "test[:100]").num_classes == 10
    with pytest.raises(DataError, match="unknown moving_digits task"):
        data.get_info("moving_digits:colour", "train")


def _train(model, x, y, xt, yt, steps=60):
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
        def loss(p):
            logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 64)
        params, opt = step(params, opt, x[idx], y[idx])
    pred = jax.jit(model.apply)({"params": params}, xt).argmax(-1)
    return float((np.asarray(pred) == yt).mean())


def test_direction_is_learned_from_clips_and_not_from_one_frame(digits):
    clips, _, dirs = moving_digits.make_clips(*digits, 768, seed=0)
    x = jnp.asarray(clips[..., None] / 255.0, jnp.float32)[:, :4]  # 4 frames, 1 channel
    train, test = slice(0, 512), slice(512, 768)
    tiny = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, pool="gap",
                attn_impl="xla", posemb="learn_sep")  # fmt: skip
    video = vit_jax.create_model(None, 4, model_name="vivit", tubelet_size=2, num_frames=4, **tiny)
    acc = _train(video, x[train], dirs[train], x[test], dirs[test])
    frame = vit_jax.create_model(None, 4, model_name="vivit", tubelet_size=1, num_frames=1, **tiny)
    one = _train(frame, x[train, 1:2], dirs[train], x[test, 1:2], dirs[test])
    assert acc > 0.6, acc  # chance 0.25; measured 0.84 (60 steps), one frame 0.20
    assert one < 0.4, one
