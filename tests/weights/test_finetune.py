"""Fine-tuning: position-table resizing against closed forms, load_pretrained, the freeze mask."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vit_jax
from vit_jax.train import optim
from vit_jax.weights import finetune, npz

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2)


def _pixel_centres(n):
    return (np.arange(n) + 0.5) / n  # jax.image.resize samples with half-pixel centres


def _table(fn, grid, dim=3):
    """A `[1, h*w, dim]` table sampling `fn(u, v)` (u down, v across, in [0, 1]) at patch centres."""
    u, v = np.meshgrid(_pixel_centres(grid[0]), _pixel_centres(grid[1]), indexing="ij")
    return np.repeat(fn(u, v).reshape(1, -1, 1), dim, axis=2).astype(np.float32)


def _with_table(table, cls_row=7.0):
    prefix = np.full((1, 1, table.shape[-1]), cls_row, np.float32)
    return {
        "cls": np.zeros((1, 1, table.shape[-1]), np.float32),
        "Transformer": {"posembed_input": {"pos_embedding": np.concatenate([prefix, table], 1)}},
    }


def test_resizing_to_the_same_grid_is_the_identity():
    rng = np.random.default_rng(0)
    params = _with_table(rng.standard_normal((1, 6 * 4, 5)).astype(np.float32))
    out = finetune.resize_posemb(params, (6, 4), (6, 4), method="bicubic")
    np.testing.assert_array_equal(
        out["Transformer"]["posembed_input"]["pos_embedding"],
        params["Transformer"]["posembed_input"]["pos_embedding"],
    )


@pytest.mark.parametrize("method,smooth_tol", [("bilinear", 0.02), ("bicubic", 0.01)])
def test_resized_tables_follow_the_analytic_function(method, smooth_tol):
    old, new = (6, 8), (9, 12)  # non-square, upsampled by 1.5

    def ramp(u, v):
        return 3.0 * u - 2.0 * v

    def wave(u, v):
        return np.sin(2 * np.pi * 0.3 * u) + np.cos(2 * np.pi * 0.2 * v)

    for fn, tol in ((ramp, 1e-5), (wave, smooth_tol)):
        params = _with_table(_table(fn, old))
        out = finetune.resize_posemb(params, old, new, method=method)
        table = out["Transformer"]["posembed_input"]["pos_embedding"]
        assert table.shape == (1, 1 + 9 * 12, 3)
        np.testing.assert_array_equal(table[:, 0], 7.0)  # the class slot is carried over as is
        err = np.abs(table[0, 1:] - _table(fn, new)[0]).reshape(*new, 3)
        # Away from the border the interpolation stencil lies inside the old grid: a linear ramp is
        # reproduced exactly and a low-frequency wave closely.
        assert err[2:-2, 2:-2].max() < tol, (fn.__name__, err[2:-2, 2:-2].max())
        assert err.max() < 0.2  # edges are clamped, not extrapolated


def test_factorised_learn2d_tables_resize_per_axis():
    def down(u, v):
        return 4.0 * u

    def across(u, v):
        return -v

    rows, cols = _table(down, (6, 1))[0], _table(across, (1, 8))[0]  # [6, 3], [8, 3]
    params = {"Transformer": {"posembed_input": {"row": rows, "col": cols}}}
    out = finetune.resize_posemb(params, (6, 8), (12, 4))["Transformer"]["posembed_input"]
    assert out["row"].shape == (12, 3) and out["col"].shape == (4, 3)
    # Each axis is interpolated on its own: the ramps hold away from the ends.
    np.testing.assert_allclose(out["row"][2:-2], _table(down, (12, 1))[0, 2:-2], atol=1e-5)
    np.testing.assert_allclose(out["col"][1:-1], _table(across, (1, 4))[0, 1:-1], atol=1e-5)


def test_fixed_schemes_have_nothing_to_resize():
    model = vit_jax.create_model("Ti/4", 3, posemb="sincos2d", **TINY)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    assert finetune.resize_posemb(params, (2, 2), (4, 4)) is params


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 10-class checkpoint with a representation layer, trained at 8 x 8 (2 x 2 patches)."""
    model = vit_jax.create_model("Ti/4", 10, representation_size=8, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    path = npz.export_npz(params, str(tmp_path_factory.mktemp("ckpt") / "vit.npz"))
    return model, params, path


def test_load_pretrained_new_head_and_resolution(pretrained):
    old_model, old, path = pretrained
    model = vit_jax.create_model("Ti/4", 3, **TINY)  # 3 classes, no representation layer
    params = finetune.load_pretrained(path, model, (16, 8, 3))  # a 4 x 2 grid
    assert "pre_logits" not in params
    np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((16, 3)))
    np.testing.assert_array_equal(params["head"]["bias"], np.zeros(3))
    mlp = lambda p: p["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]["kernel"]
    np.testing.assert_array_equal(mlp(params), mlp(old))
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 8, 16)
    # The resized table is what the old model interpolates at call time, so features agree exactly.
    images = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 8, 3))
    feats = model.clone(num_classes=0).apply({"params": params}, images)
    want = old_model.clone(num_classes=0, representation_size=None).apply({"params": old}, images)
    np.testing.assert_allclose(feats, want, atol=1e-6)
    np.testing.assert_array_equal(model.apply({"params": params}, images), 0.0)  # zero head


def test_load_pretrained_keeps_a_matching_representation_layer(pretrained):
    _, old, path = pretrained
    model = vit_jax.create_model("Ti/4", 5, representation_size=8, **TINY)
    params = finetune.load_pretrained(path, model, (8, 8))
    np.testing.assert_array_equal(params["pre_logits"]["kernel"], old["pre_logits"]["kernel"])
    assert params["head"]["kernel"].shape == (8, 5)
    fresh = finetune.load_pretrained(path, model.clone(representation_size=4), (8, 8))
    assert (
        fresh["pre_logits"]["kernel"].shape == (16, 4) and fresh["pre_logits"]["kernel"].std() > 0
    )


def test_load_pretrained_rejects_unknown_formats(pretrained, tmp_path):
    _, _, path = pretrained
    model = vit_jax.create_model("Ti/4", 3, **TINY)
    with pytest.raises(
        ValueError, match="unknown checkpoint format 'orbax'; choose one of: auto, npz"
    ):
        finetune.load_pretrained(path, model, (8, 8), fmt="orbax")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\x00\x01binary")
    with pytest.raises(ValueError, match=f"cannot tell the format of checkpoint {odd}"):
        finetune.load_pretrained(str(odd), model, (8, 8))


def test_trainable_mask_freezes_the_encoder_for_a_linear_probe(pretrained):
    _, old, _ = pretrained
    mask = optim.trainable_mask(old, freeze_encoder=True)
    flat = flax.traverse_util.flatten_dict(mask, sep="/")
    assert {k for k, v in flat.items() if v} == {
        "head/kernel",
        "head/bias",
        "pre_logits/kernel",
        "pre_logits/bias",
    }
    assert all(jax.tree.leaves(optim.trainable_mask(old, freeze_encoder=False)))
    # One optimiser step with the mask: the encoder stays put, the head moves.
    labels = jax.tree.map(lambda t: "train" if t else "freeze", mask)
    tx = optax.multi_transform({"train": optax.sgd(0.1), "freeze": optax.set_to_zero()}, labels)
    grads = jax.tree.map(jnp.ones_like, old)
    updates, _ = tx.update(grads, tx.init(old), old)
    new = optax.apply_updates(old, updates)
    np.testing.assert_array_equal(new["embedding"]["kernel"], old["embedding"]["kernel"])
    np.testing.assert_allclose(new["head"]["kernel"], old["head"]["kernel"] - 0.1, atol=1e-6)
