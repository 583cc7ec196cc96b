"""Inflation of image checkpoints into vivit models: one frame gives the image model's logits."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import vit_jax
from vit_jax.weights import finetune, inflate, npz

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "google_gelu"
# Google's vision_transformer ViT (token pool, learned table, pre-logits 8): logits from its code
GOOGLE = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, patch_size=4, pool="token",
              representation_size=8, gelu_approximate=True, attn_impl="xla")  # fmt: skip


@pytest.fixture(scope="module")
def google():
    expected = np.load(FIXTURES / "vt_token.expected.npz")
    return str(FIXTURES / "vt_token.npz"), expected["images"], expected["logits"]


def _video(**kw):
    return vit_jax.create_model(None, 5, model_name="vivit", **{**GOOGLE, **kw})


@pytest.mark.parametrize(
    "how, t, posemb",
    [("repeat", 1, "learn"), ("repeat", 2, "learn_sep"), ("central_frame", 3, "learn")],
)
def test_inflated_google_checkpoint_gives_the_image_models_logits(google, how, t, posemb):
    path, images, logits = google
    model = _video(tubelet_size=t, num_frames=t, posemb=posemb)
    params = finetune.load_pretrained(path, model, (16, 16), skip_head=False, inflate_how=how)
    kernel = params["embedding"]["kernel"]
    assert kernel.shape == (t, 4, 4, 3, 16)
    if how == "central_frame":  # the other frames are noise the zero kernel slices ignore
        noise = np.random.default_rng(0).normal(size=(2, t, 16, 16, 3)).astype(np.float32)
        clips = noise.copy()
        clips[:, t // 2] = images
        assert not kernel[0].any() and kernel[t // 2].any()
    else:  # t identical frames: the kernel / t summed t times
        clips = np.repeat(images[:, None], t, axis=1)
    out = model.apply({"params": params}, jnp.asarray(clips))
    np.testing.assert_allclose(out, logits, rtol=1e-4, atol=1e-4)


def test_inflated_factorised_attention_starts_as_the_image_model(tmp_path):
    small = {**GOOGLE, "pool": "gap", "depth": 1, "representation_size": None}
    image = vit_jax.create_model(None, 3, **small)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    params = image.init(jax.random.PRNGKey(0), images)["params"]
    rng = np.random.default_rng(2)  # perturbed: the zero-initialised head would hide everything
    params = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(a.dtype) * 0.1, params)
    path = npz.export_npz(params, str(tmp_path / "gap.npz"))
    video = vit_jax.create_model(
        None, 3, model_name="vivit", **small, encoder="factorised_attention",
        tubelet_size=1, num_frames=2, posemb="learn_sep",
    )  # fmt: skip
    loaded = finetune.load_pretrained(path, video, (16, 16), skip_head=False)
    block = loaded["Transformer"]["encoderblock_0"]["TemporalAttention"]
    assert not block["out"]["kernel"].any() and block["query"]["kernel"].any()
    clips = jnp.repeat(images[:, None], 2, axis=1)
    want = image.apply({"params": params}, images)
    np.testing.assert_allclose(video.apply({"params": loaded}, clips), want, rtol=1e-4, atol=1e-4)


def test_random_inflation_keeps_the_fresh_kernel_and_inflates_the_rest(google):
    path = google[0]
    model = _video(tubelet_size=2, num_frames=2, posemb="learn")
    params = finetune.load_pretrained(path, model, (16, 16), seed=3, inflate_how="random")
    fresh = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 2, 16, 16, 3)))["params"]
    kernel = params["embedding"]["kernel"]
    np.testing.assert_array_equal(kernel, fresh["embedding"]["kernel"])
    assert kernel.shape == (2, 4, 4, 3, 16) and not np.allclose(kernel[0], kernel[1])
    repeat = finetune.load_pretrained(path, model, (16, 16), seed=3, inflate_how="repeat")
    image = npz.canonical(npz.read_npz(path), path)
    np.testing.assert_allclose(repeat["embedding"]["kernel"][0] * 2, image["embedding/kernel"])
    flat = lambda p: {"/".join(k): v for k, v in flatten_dict(p).items()}  # noqa: E731
    got, want = flat(params), flat(repeat)
    assert set(got) == set(want)
    for key in set(got) - {"embedding/kernel"}:  # all else as repeat: from the image checkpoint
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    block = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
    np.testing.assert_allclose(got[block], image[block], rtol=1e-6)


def test_inflation_choices_and_a_video_checkpoint_are_one_line_errors(google, tmp_path):
    with pytest.raises(ValueError, match="unknown inflation"):
        inflate.inflate_kernel(np.zeros((4, 4, 3, 16)), 2, "mean")
    model = _video(tubelet_size=1, num_frames=1, posemb="learn")
    with pytest.raises(ValueError, match="not an inflation"):
        finetune.load_pretrained(google[0], model, (16, 16), inflate_how="zeros")
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 1, 16, 16, 3)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params["params"])
    path = npz.export_npz(zeros, str(tmp_path / "video.npz"))
    with pytest.raises(ValueError, match="already a video checkpoint"):
        finetune.load_pretrained(path, model, (16, 16))
