"""FlexiViT's patch-embedding resize: the defining identity <x, w> = <resize(x), w*>, least squares
when downsampling, a whole model at another patch size, fine-tuning across patch sizes and the
classification evaluator's `patch_size` option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from tests.helpers.tiny import tiny_config
from vit_jax import evaluators
from vit_jax.weights import finetune, flexi, npz

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2)


def _resize_patches(x, new):
    """Each `[..., h, w, C]` patch bilinearly resized to `new` (h, w), as B does."""
    return jax.vmap(lambda p: jax.image.resize(p, (*new, p.shape[-1]), "bilinear"))(x)


def _patchwise(images, p, q):
    """`[B, H, W, C]` images whose every p×p patch is bilinearly resized to q×q, in place."""
    b, h, w, c = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    up = _resize_patches(jnp.asarray(patches).reshape(-1, p, p, c), (q, q))
    up = up.reshape(b, h // p, w // p, q, q, c).transpose(0, 1, 3, 2, 4, 5)
    return up.reshape(b, h // p * q, w // p * q, c)


@pytest.mark.parametrize("old,new", [((4, 4), (8, 8)), ((4, 4), (6, 6)), ((3, 5), (6, 7))])
def test_upsampled_patches_give_the_same_tokens(old, new):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((*old, 3, 5)).astype(np.float32)
    x = rng.standard_normal((10, *old, 3)).astype(np.float32)
    w_new = flexi.resize_patch_embedding(w, new)
    assert w_new.shape == (*new, 3, 5) and w_new.dtype == np.float32
    tokens = np.einsum("bhwc,hwcd->bd", x, w)
    again = np.einsum("bhwc,hwcd->bd", np.asarray(_resize_patches(x, new)), w_new)
    np.testing.assert_allclose(again, tokens, rtol=1e-5, atol=1e-5 * np.abs(tokens).max())


@pytest.mark.parametrize("old,new", [(8, 4), (6, 4), (5, 3)])
def test_downsampling_is_the_least_squares_solution(old, new):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((old, old, 2, 3))
    b = flexi.resize_matrix(old, new)  # [new², old²]
    x = rng.standard_normal((4, old, old))
    np.testing.assert_allclose(
        b @ x.reshape(4, -1).T, np.asarray(_resize_patches(x[..., None], (new, new))).reshape(4, -1).T,
        atol=1e-6,
    )  # fmt: skip
    expect = np.linalg.lstsq(b.T, w.reshape(old * old, -1), rcond=None)[0]
    w_new = flexi.resize_patch_embedding(w, new)
    np.testing.assert_allclose(w_new.reshape(new * new, -1), expect, rtol=1e-7, atol=1e-9)
    # It minimises ||Bᵀ w* − w||: any perturbation does worse.
    residual = np.linalg.norm(b.T @ expect - w.reshape(old * old, -1))
    other = expect + 1e-3 * rng.standard_normal(expect.shape)
    assert np.linalg.norm(b.T @ other - w.reshape(old * old, -1)) > residual


def test_jax_arrays_and_jit_give_the_numpy_result():
    w = np.random.default_rng(2).standard_normal((4, 4, 3, 8)).astype(np.float32)
    ref = flexi.resize_patch_embedding(w, 8)
    np.testing.assert_allclose(flexi.resize_patch_embedding(jnp.asarray(w), 8), ref, atol=1e-6)
    jitted = jax.jit(lambda k: flexi.resize_patch_embedding(k, 8))(w)
    np.testing.assert_allclose(jitted, ref, atol=1e-6)
    assert flexi.resize_patch_embedding(w, 4) is w
    with pytest.raises(ValueError, match="patch size 0 must be a positive"):
        flexi.resize_patch_embedding(w, 0)


@pytest.mark.parametrize("posemb,pool", [("sincos2d", "gap"), ("learn", "token")])
def test_a_model_at_patch_8_with_the_resized_kernel_matches_patch_4(posemb, pool):
    """32 px at patch 4 and 64 px at patch 8 are both an 8×8 grid: with every patch upsampled
    bilinearly (patch by patch) the tokens, hence the logits, are the same."""
    kw = dict(TINY, posemb=posemb, pool=pool)
    model4 = vit_jax.create_model("Ti/4", 10, **kw)
    model8 = vit_jax.create_model("Ti/8", 10, **kw)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    params = model4.init(jax.random.PRNGKey(1), images)["params"]
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 10))
    logits = model4.apply({"params": params}, images)
    resized = flexi.with_patch_size({"params": params}, 8)
    assert resized["params"]["embedding"]["kernel"].shape == (8, 8, 3, 16)
    same = model8.apply(resized, _patchwise(images, 4, 8))
    np.testing.assert_allclose(same, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    # A whole-image bilinear upsampling mixes neighbouring patches at their borders: close only.
    whole = model8.apply(resized, jax.image.resize(images, (4, 64, 64, 3), "bilinear"))
    rel = float(jnp.linalg.norm(whole - logits) / jnp.linalg.norm(logits))
    assert 1e-4 < rel < 1.0, rel


def test_finetuning_from_another_patch_size_resizes_the_kernel(tmp_path):
    model4 = vit_jax.create_model("Ti/4", 10, **TINY)
    params = model4.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    path = npz.export_npz(params, str(tmp_path / "p4.npz"))
    model8 = vit_jax.create_model("Ti/8", 5, **TINY)
    loaded = finetune.load_pretrained(path, model8, (32, 32))
    kernel = loaded["embedding"]["kernel"]
    assert kernel.shape == (8, 8, 3, 16)
    np.testing.assert_allclose(
        kernel, flexi.resize_patch_embedding(np.asarray(params["embedding"]["kernel"]), 8),
        rtol=1e-6,
    )  # fmt: skip
    # The learned table: the checkpoint's 8×8 grid resized to 32 px / patch 8 = 4×4.
    assert loaded["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 16, 16)
    model8.apply({"params": loaded}, jnp.zeros((1, 32, 32, 3)))  # a complete, working tree
    with pytest.raises(ValueError, match=r"embedding/kernel \(4, 4, 3, 16\) vs model \(8, 8"):
        finetune.load_pretrained(path, model8, (32, 32), resize_patch=False)


def test_the_evaluator_patch_size_option():
    c = tiny_config(dataset="digits", eval_batch_size=120)  # 8 px, patch 4
    c.evals.p8 = dict(split="test", patch_size=8, image_size=16)
    assert evaluators.spec_errors(c) is None
    for bad, message in [
        (dict(patch_size=0), "patch_size=0 must be a positive int"),
        (dict(patch_size=3), "image_size=8 is not a positive multiple of the patch size 3"),
        (dict(patch_size=8, image_size=12), "image_size=12 is not a positive multiple"),
    ]:
        c.evals.bad = bad
        assert message in evaluators.spec_errors(c), bad
    del c.evals["bad"]

    from vit_jax import data  # noqa: PLC0415

    model = vit_jax.models.from_config(c.model, 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1), (16, 10))
    (ev,) = evaluators.from_config(c, only=["p8"])
    got = ev.run(evaluators.Context(model, put=lambda b: b), {"params": params})
    # The same numbers by hand: the model at patch 8 with the resized kernel, on 16 px images.
    model8, resized = model.clone(patch_size=(8, 8)), flexi.with_patch_size({"params": params}, 8)
    hits, count = 0.0, 0.0
    for batch in data.eval_iterator(ev.config):
        assert batch["image"].shape[1:] == (16, 16, 3)
        logits = np.asarray(model8.apply(resized, batch["image"]))
        hits += ((logits.argmax(-1) == batch["label"]) * batch["mask"]).sum()
        count += batch["mask"].sum()
    assert got["count"] == count == 360
    np.testing.assert_allclose(got["top1"], hits / count)
