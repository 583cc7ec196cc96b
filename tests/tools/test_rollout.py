"""Attention rollout against a hand computation, on a real model, and the PNG overlay."""

import jax
import numpy as np
import pytest
from PIL import Image

import vit_jax
from vit_jax.tools import rollout

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2)


def test_rollout_matches_a_hand_computed_two_layer_example():
    # Two heads per layer whose mean is A1 = [[.5, .5], [.2, .8]] and A2 = [[1, 0], [.4, .6]].
    a1 = np.array([[[[0.6, 0.4], [0.0, 1.0]], [[0.4, 0.6], [0.4, 0.6]]]])
    a2 = np.array([[[[1.0, 0.0], [0.8, 0.2]], [[1.0, 0.0], [0.0, 1.0]]]])
    # (A + I) / 2: Â1 = [[.75, .25], [.1, .9]], Â2 = [[1, 0], [.2, .8]]; R = Â2 Â1.
    want = np.array([[0.75, 0.25], [0.2 * 0.75 + 0.8 * 0.1, 0.2 * 0.25 + 0.8 * 0.9]])
    np.testing.assert_allclose(rollout.rollout([a1, a2])[0], want, atol=1e-6)
    np.testing.assert_allclose(want, [[0.75, 0.25], [0.23, 0.77]], atol=1e-12)
    np.testing.assert_allclose(rollout.rollout([a1])[0], [[0.75, 0.25], [0.1, 0.9]], atol=1e-6)


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_model_rollout_rows_sum_to_one_and_the_heatmap_is_on_the_patch_grid(pool):
    model = vit_jax.create_model("Ti/4", 3, pool=pool, **TINY)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 8, 3))  # a 3 x 2 grid
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), images)
    maps = rollout.attention_maps(model, variables, images)
    tokens = 6 + model.num_prefix
    assert len(maps) == 2 and maps[0].shape == (2, 2, tokens, tokens)
    r = rollout.rollout(maps)
    assert r.shape == (2, tokens, tokens) and (r >= 0).all()
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)
    heat = rollout.rollout_heatmap(model, variables, images)
    assert heat.shape == (2, 3, 2)
    row = r[:, 0] if pool == "token" else r.mean(axis=1)
    np.testing.assert_allclose(heat.reshape(2, -1), row[:, model.num_prefix :], atol=1e-6)
    # The CLS row's mass not on CLS itself is spread over the patches.
    np.testing.assert_allclose(
        heat.sum((1, 2)), 1.0 - row[:, : model.num_prefix].sum(-1), atol=1e-5
    )


def test_save_overlay_writes_a_png_of_the_image_size(tmp_path):
    image = np.full((32, 48, 3), 128, np.uint8)
    heat = np.zeros((4, 6))
    heat[0, 0] = 1.0  # hot top-left patch
    path = rollout.save_overlay(image, heat, str(tmp_path / "out" / "overlay.png"))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (48, 32)
        pixels = np.asarray(png.convert("RGB"), np.float32) / 255.0
    # jet maps 1 to dark red and 0 to dark blue, blended half and half with grey 0.5.
    np.testing.assert_allclose(pixels[0, 0], [0.5 * 0.502 + 0.25, 0.25, 0.25], atol=0.02)
    np.testing.assert_allclose(pixels[-1, -1], [0.25, 0.25, 0.5 * 0.5 + 0.25], atol=0.02)


def test_hybrid_rollout_is_on_the_stem_token_grid():
    """A hybrid's grid is side / 4 (the stem) / patch: 40x24 px → 10x6 → 5x3."""
    model = vit_jax.create_model(None, 3, "hybrid", resnet_layers=(), patch_size=2, **TINY)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 40, 24, 3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), images)
    maps = rollout.attention_maps(model, variables, images)
    assert rollout.token_grid(model, (40, 24)) == (5, 3)
    assert maps[0].shape[-1] == 15 + model.num_prefix  # the model's own token count
    heat = rollout.rollout_heatmap(model, variables, images)
    r = rollout.rollout(maps)
    np.testing.assert_allclose(heat.reshape(2, -1), r[:, 0, model.num_prefix :], atol=1e-6)
    assert heat.shape == (2, 5, 3)


def test_resnet_rollout_is_one_line():
    model = vit_jax.create_model("R20", 10, model_name="resnet")
    with pytest.raises(rollout.RolloutError, match="a ResNet .* has none: use a vit or hybrid"):
        rollout.rollout_heatmap(model, {}, np.zeros((1, 8, 8, 3), np.float32))
