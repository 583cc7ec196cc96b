"""The hybrid family: ResNet stem + ViT encoder (the ViT paper's R50+ViT-B/16)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models import resnet
from vit_jax.models.posemb import POSEMB

TINY = dict(hidden_size=32, depth=1, mlp_dim=64, num_heads=2, patch_size=1)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _params(model, size):
    images = jnp.zeros((1, size, size, 3))
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]


def _stem_params(layers, width):
    """Parameters of Google's ResNet stem by formula (bottleneck units, GroupNorm scale+bias)."""
    n = 7 * 7 * 3 * width + 2 * width  # conv_root, gn_root
    cin = width
    for i, units in enumerate(layers):
        f = width * 2**i
        for j in range(units):
            n += cin * f + 2 * f + 9 * f * f + 2 * f + f * 4 * f + 2 * 4 * f
            if j == 0:  # conv_proj + gn_proj (channels change, or stride 2)
                n += cin * 4 * f + 2 * 4 * f
            cin = 4 * f
    return n, cin


def test_r50_b16_parameter_count_is_the_stem_plus_vit_b_on_a_1x1_patch():
    model = vit_jax.create_model("R50+B/16", 1000, model_name="hybrid")
    got = _count(_params(model, 224))
    vit = _count(_params(vit_jax.create_model("B/16", 1000), 224))
    stem, channels = _stem_params((3, 4, 9), 64)
    assert channels == 1024
    # the ViT's 16x16x3 patch embedding becomes a 1x1 embedding of the stem's 1024 channels
    expected = vit - 16 * 16 * 3 * 768 + 1024 * 768 + stem
    assert got == expected
    # timm's vit_base_r50_s16_384 (the same weights at 384 px: 24x24+1 position rows): 98.95 M
    at_384 = _count(_params(model, 384))
    assert at_384 == got + (24 * 24 - 14 * 14) * 768
    assert at_384 == pytest.approx(98.95e6, rel=1e-3)


def test_parameter_names_are_those_of_googles_r50_vit_b16_file():
    model = vit_jax.create_model(None, 10, model_name="hybrid", resnet_layers=(3, 4), **TINY)
    names = flax.traverse_util.flatten_dict(_params(model, 64), sep="/")
    for key in (
        "conv_root/kernel", "gn_root/scale", "gn_root/bias", "block1/unit1/conv1/kernel",
        "block1/unit1/gn3/scale", "block1/unit1/conv_proj/kernel", "block1/unit3/conv2/kernel",
        "block2/unit4/gn2/bias", "embedding/kernel", "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
        "Transformer/posembed_input/pos_embedding", "cls", "head/kernel",
    ):  # fmt: skip
        assert key in names, key
    assert "block1/unit4/conv1/kernel" not in names and "block3/unit1/conv1/kernel" not in names


@pytest.mark.parametrize(
    "variant, grid",
    [("R50+B/16", 14), ("R26+B/32", 7), ("R26+S/32", 7), ("R50+L/32", 7), ("R+Ti/16", 7)],
)
def test_token_grid_of_every_size_string_at_224px(variant, grid):
    """R+Ti/16: Google's config comment claims /16, its code (root conv /2, max-pool /2, 8x8
    patches) gives /32: a 7x7 grid at 224 px, as timm's vit_tiny_r_s16_p8_224."""
    model = vit_jax.create_model(variant, 10, model_name="hybrid")
    assert model.stem_stride * model.patch_size[0] == 224 // grid
    table = _params(model, 224)["Transformer"]["posembed_input"]["pos_embedding"]
    assert table.shape[1] == grid * grid + 1
    assert vit_jax.models.stride(dict(variant=variant), "hybrid") == 224 // grid


def _tiny(**kw):
    opts = {**TINY, "resnet_layers": (1, 1), "resnet_width": 1, **kw}
    return vit_jax.create_model(None, 10, model_name="hybrid", **opts)


def test_hybrid_equals_its_stem_followed_by_a_vit_on_the_feature_map():
    model = _tiny()
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), images)
    params = jax.tree.map(  # perturb everything (zero-initialised heads and gn3 scales too)
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
        variables["params"],
    )
    logits = model.apply({"params": params}, images)

    def stem(x):
        x = resnet.StdConv(64, (7, 7), (2, 2), use_bias=False, name="conv_root")(x)
        x = flax.linen.max_pool(
            flax.linen.relu(flax.linen.GroupNorm(name="gn_root")(x)), (3, 3), (2, 2), "SAME"
        )
        x = resnet.ResNetStage(1, 64, (1, 1), name="block1")(x)
        return resnet.ResNetStage(1, 128, (2, 2), name="block2")(x)

    stem_keys = ("conv_root", "gn_root", "block1", "block2")
    stem_module = _StemOnly(stem)
    fmap = stem_module.apply({"params": {k: params[k] for k in stem_keys}}, images)
    assert fmap.shape == (2, 4, 4, 512)  # 32 px / 4 (root) / 2 (block2)
    vit = vit_jax.create_model(None, 10, **TINY)
    rest = {k: v for k, v in params.items() if k not in stem_keys}
    np.testing.assert_allclose(vit.apply({"params": rest}, fmap), logits, rtol=1e-5, atol=1e-6)


class _StemOnly(flax.linen.Module):
    fn: object

    @flax.linen.compact
    def __call__(self, x):
        return self.fn(x)


@pytest.mark.parametrize("posemb", POSEMB.names())
def test_every_position_scheme_runs_on_the_hybrid_grid(posemb):
    model = _tiny(posemb=posemb, pool="gap", resnet_layers=(1,))
    images = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 24, 3))  # 8x6 token grid
    variables = model.init(jax.random.PRNGKey(0), images)
    feats = vit_jax.get_features(model, variables, images)
    assert feats["block_0"].shape == (2, 8 * 6, 32)
    if posemb == "learn":
        table = variables["params"]["Transformer"]["posembed_input"]["pos_embedding"]
        assert table.shape == (1, 48, 32)
    out = model.apply(variables, images)
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))


def test_bad_hybrid_options_are_one_line_errors():
    for kw, match in [
        (dict(resnet_layers=(3, 0)), "resnet_layers"),
        (dict(resnet_width=0), "resnet_width"),
        (dict(posemb="nope"), "posemb"),
        (dict(typo=1), "unknown model option"),
    ]:
        with pytest.raises(ValueError, match=match) as e:
            _tiny(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown hybrid variant 'R50\\+B/15'"):
        vit_jax.create_model("R50+B/15", 10, model_name="hybrid")
    with pytest.raises(ValueError, match="R50\\+B/16"):  # names the valid strings
        vit_jax.create_model("R50+B/15", 10, model_name="hybrid")
    with pytest.raises(ValueError, match="unknown model family"):
        vit_jax.create_model("B/16", 10, model_name="cnn")
    with pytest.raises(ValueError, match="not divisible"):
        _tiny().init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 3)))
