"""The `resnet` family: parameter counts against published ones (and a count written out from the
architecture), weight standardisation and units against numpy/lax references, feature-map shapes,
the sown pre-logits, BatchNorm statistics, and the one-line option errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_jax.models import get_features
from vit_jax.models import resnet as R


def _shapes(model, size):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))


def _count(model, size=32):
    return sum(x.size for x in jax.tree_util.tree_leaves(_shapes(model, size)["params"]))


# ------------------------------------------------------------ counts written out by hand
def _bottleneck_count(blocks, width, classes, preact):
    """Conv weights, norm scale+bias (2 per channel) and the head of a BiT ResNet."""
    w = 64 * width
    n = 49 * 3 * w + (0 if preact else 2 * w)  # root conv (+ gn_root in v1)
    c_in = w
    for i, units in enumerate(blocks):
        m = w * 2**i
        for j in range(units):
            n += c_in * m + 9 * m * m + m * 4 * m  # conv1, conv2, conv3
            n += 2 * (c_in + m + m) if preact else 2 * (m + m + 4 * m)  # gn1, gn2, gn3
            if j == 0:  # projection (1x1 conv [+ gn_proj in v1])
                n += c_in * 4 * m + (0 if preact else 2 * 4 * m)
            c_in = 4 * m
    n += 2 * c_in if preact else 0  # norm-pre-head
    return n + c_in * classes + classes


def _basic_count(widths, blocks, classes, projection):
    n = 27 * widths[0] + 2 * widths[0]  # 3x3 stem conv + norm
    c_in = widths[0]
    for c, units in zip(widths, blocks):
        for _ in range(units):
            n += 9 * c_in * c + 9 * c * c + 4 * c
            if c_in != c and projection:
                n += c_in * c + 2 * c
            c_in = c
    return n + c_in * classes + classes


def test_bit_r50x1_counts_equal_the_architecture_and_published():
    v1 = R.ResNet(num_classes=1000, **R.decode_variant("R50x1"))
    v2 = R.ResNet(num_classes=1000, layout="bit_paper", **R.decode_variant("R50x1"))
    assert _count(v1, 64) == _bottleneck_count((3, 4, 6, 3), 1, 1000, preact=False)
    assert _count(v2, 64) == _bottleneck_count((3, 4, 6, 3), 1, 1000, preact=True)
    # torchvision resnet50: the same conv shapes, BatchNorm weight+bias where GroupNorm has
    # scale+bias, so the post-activation layout has exactly its 25,557,032 parameters.
    assert _count(v1, 64) == 25_557_032
    # BiT-M-R50x1 (v2: no root norm, no gn_proj, norms on unit inputs, a final norm): timm's
    # resnetv2_50x1_bit lists 25.55M; 7,680 fewer than v1.
    assert round(_count(v2, 64) / 1e6, 2) == 25.55


@pytest.mark.parametrize(
    "variant,published",  # timm's resnetv2_*_bit model cards (M params, 1000 classes)
    [("R101x1", 44.54), ("R50x3", 217.32), ("R101x3", 387.93), ("R152x4", 936.53)],
)
def test_bit_paper_counts_equal_published(variant, published):
    opts = R.decode_variant(variant)
    n = _count(R.ResNet(num_classes=1000, layout="bit_paper", **opts), 32)
    assert n == _bottleneck_count(R.BIT_BLOCKS[opts["depth"]], opts["width"], 1000, True)
    assert round(n / 1e6, 2) == published


def test_cifar_counts_equal_published():
    r18 = _count(R.ResNet(num_classes=10, **R.decode_variant("R18")))
    assert r18 == _basic_count((64, 128, 256, 512), (2, 2, 2, 2), 10, True) == 11_173_962
    # He et al. 2016 Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M (option A: no projections).
    for variant, published in [("R20", 0.27), ("R32", 0.46), ("R44", 0.66), ("R56", 0.85)]:
        n = _count(R.ResNet(num_classes=10, **R.decode_variant(variant)))
        blocks = ((int(variant[1:]) - 2) // 6,) * 3
        assert n == _basic_count((16, 32, 64), blocks, 10, False)
        assert round(n / 1e6, 2) == published, variant
    assert round(_count(R.ResNet(num_classes=10, **R.decode_variant("R110"))) / 1e6, 1) == 1.7


# ------------------------------------------------------------ numpy / lax references
def _conv_ref(x, w, stride, padding):
    return np.asarray(
        jax.lax.conv_general_dilated(
            jnp.asarray(x),
            jnp.asarray(w),
            (stride, stride),
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision="highest",
        )  # fmt: skip
    )


def _gn_ref(x, scale, bias, eps, groups=32):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def _ws_google(w):
    return (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)


def _ws_paper(w):
    m = w.mean(axis=(0, 1, 2))
    return (w - m) / np.sqrt(((w - m) ** 2).mean(axis=(0, 1, 2)) + 1e-10)


def _randomised(variables, seed=1):
    """Every parameter random (so zero-initialised scales take part)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variables["params"])
    flat = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in flat.items()}
    return {**variables, "params": traverse_util.unflatten_dict(flat)}


@pytest.mark.parametrize("cls,ws", [(R.StdConv, _ws_google), (R.PaperStdConv, _ws_paper)])
def test_weight_standardisation_equals_the_formula(cls, ws):
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 5)).astype(np.float32)
    conv = cls(6, (3, 3), use_bias=False)
    variables = _randomised(conv.init(jax.random.PRNGKey(0), x))
    w = np.asarray(variables["params"]["kernel"]) * 3.0 + 1.0  # nonzero mean, std 3
    y = conv.apply({"params": {"kernel": w}}, x)
    np.testing.assert_allclose(y, _conv_ref(x, ws(w), 1, "SAME"), rtol=1e-4, atol=1e-4)
    assert np.allclose(ws(w).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    assert np.allclose(ws(w).std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_residual_unit_equals_a_reference():
    """Google's post-activation bottleneck unit, strided with projection, GroupNorm eps 1e-6."""
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype(np.float32)
    unit = R.ResidualUnit(features=32, strides=(2, 2))
    variables = _randomised(unit.init(jax.random.PRNGKey(0), x))
    p = jax.tree_util.tree_map(np.asarray, variables["params"])
    assert set(p) == {"conv1", "gn1", "conv2", "gn2", "conv3", "gn3", "conv_proj", "gn_proj"}

    def cg(y, conv, gn, stride=1):
        y = _conv_ref(y, _ws_google(p[conv]["kernel"]), stride, "SAME")
        return _gn_ref(y, p[gn]["scale"], p[gn]["bias"], 1e-6)

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    y = relu(cg(x, "conv1", "gn1"))
    y = relu(cg(y, "conv2", "gn2", 2))
    want = relu(cg(x, "conv_proj", "gn_proj", 2) + cg(y, "conv3", "gn3"))
    got = jax.jit(unit.apply)(variables, x)
    assert got.shape == (2, 4, 4, 128)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    fresh = unit.init(jax.random.PRNGKey(0), x)["params"]
    assert np.all(np.asarray(fresh["gn3"]["scale"]) == 0)  # Google's zero-initialised gn3


def test_preact_unit_equals_a_reference():
    """bit_paper's pre-activation unit: GroupNorm eps 1e-5, paper standardisation, padding 1."""
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 64)).astype(np.float32)
    unit = R.PreActUnit(features=32, strides=(2, 2))
    variables = _randomised(unit.init(jax.random.PRNGKey(0), x))
    p = jax.tree_util.tree_map(np.asarray, variables["params"])
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    gn = lambda y, n: relu(_gn_ref(y, p[n]["scale"], p[n]["bias"], 1e-5))  # noqa: E731
    conv = lambda y, n, s, pad: _conv_ref(y, _ws_paper(p[n]["kernel"]), s, pad)  # noqa: E731
    a = gn(x, "gn1")
    residual = conv(a, "conv_proj", 2, "VALID")
    y = gn(conv(a, "conv1", 1, "VALID"), "gn2")
    y = gn(conv(y, "conv2", 2, ((1, 1), (1, 1))), "gn3")
    want = conv(y, "conv3", 1, "VALID") + residual
    got = jax.jit(unit.apply)(variables, x)
    assert got.shape == (2, 4, 4, 128)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_basic_unit_zeropad_with_batchnorm_equals_a_reference():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)
    unit = R.BasicUnit(features=32, strides=(2, 2), shortcut="zeropad")
    variables = _randomised(unit.init(jax.random.PRNGKey(0), x))
    rng = np.random.default_rng(2)
    stats = jax.tree_util.tree_map(lambda v: rng.uniform(0.5, 2, v.shape), variables["batch_stats"])
    variables = {**variables, "batch_stats": stats}
    p = variables["params"]
    assert set(p) == {"conv1", "norm1", "conv2", "norm2"}  # no projection parameters

    def bn(y, n):
        s = stats[n]
        return (y - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p[n]["scale"] + p[n]["bias"]

    pad = ((1, 1), (1, 1))
    y = np.maximum(bn(_conv_ref(x, p["conv1"]["kernel"], 2, pad), "norm1"), 0)
    y = bn(_conv_ref(y, p["conv2"]["kernel"], 1, pad), "norm2")
    shortcut = np.pad(x[:, ::2, ::2], ((0, 0), (0, 0), (0, 0), (8, 8)))
    got = unit.apply(variables, x, train=False)
    np.testing.assert_allclose(got, np.maximum(y + shortcut, 0), rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------ the model
@pytest.mark.parametrize("size", [32, 224, 33])
@pytest.mark.parametrize(
    "variant,layout,root_stride,widths",
    [
        ("R50x1", "bit", 4, (256, 512, 1024, 2048)),
        ("R50x1", "bit_paper", 4, (256, 512, 1024, 2048)),
        ("R18", "cifar", 1, (64, 128, 256, 512)),
        ("R20", "cifar", 1, (16, 32, 64)),
    ],
)
def test_feature_map_of_every_stage(variant, layout, root_stride, widths, size):
    model = R.ResNet(num_classes=10, **{**R.decode_variant(variant), "layout": layout})
    variables = _shapes(model, 32)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    out, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x
    )
    feats = {
        k[-1]: v[0].shape for k, v in traverse_util.flatten_dict(state["intermediates"]).items()
    }
    side = math.ceil(size / root_stride)
    assert feats["stem"][:3] == (2, side, side)
    for i, c in enumerate(widths):
        s = math.ceil(size / (root_stride * 2**i))
        assert feats[f"stage{i + 1}"] == (2, s, s, c)
    assert feats["pre_logits_input"] == (2, widths[-1]) and out.shape == (2, 10)


@pytest.mark.parametrize(
    "opts",
    [
        dict(layout="bit", depth=(1, 1)),
        dict(layout="bit_paper", depth=(1, 1)),
        dict(layout="cifar", depth=8),
    ],  # fmt: skip
)
def test_pre_logits_are_the_mean_of_the_last_map_and_the_head_reads_them(opts):
    model, bare = R.ResNet(num_classes=3, **opts), R.ResNet(num_classes=None, **opts)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    variables = _randomised(jax.jit(model.init)(jax.random.PRNGKey(0), x))
    run = lambda v, x: (get_features(model, v, x), model.apply(v, x), bare.apply(v, x))  # noqa: E731
    f, logits, feats = jax.jit(run)(variables, x)
    np.testing.assert_allclose(
        f["pre_logits_input"], f["pre_logits_2d"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
    )
    if opts["layout"] != "bit_paper":  # bit_paper pools relu(norm-pre-head(last stage))
        np.testing.assert_array_equal(f["pre_logits_2d"], f[f"stage{len(R.block_sizes(**opts))}"])
    head = variables["params"]["head"]
    assert logits.dtype == jnp.float32 and logits.shape == (2, 3)
    want = f["pre_logits_input"] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats, f["pre_logits_input"], rtol=1e-5)


def test_batch_stats_follow_the_running_average_in_train_mode():
    model = R.ResNet(num_classes=10, layout="cifar", depth=8)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    _, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    y = _conv_ref(
        np.asarray(x), np.asarray(variables["params"]["conv_root"]["kernel"]), 1, ((1, 1), (1, 1))
    )
    root = new["batch_stats"]["norm_root"]
    np.testing.assert_allclose(root["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(root["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4)
    old = traverse_util.flatten_dict(variables["batch_stats"])
    assert all(
        not np.allclose(v, old[k])
        for k, v in traverse_util.flatten_dict(new["batch_stats"]).items()
    )
    _, same = model.apply(variables, x, train=False, mutable=["batch_stats"])
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(np.array_equal, same, {"batch_stats": variables["batch_stats"]})
    )
    assert "batch_stats" not in _shapes(R.ResNet(num_classes=10, layout="bit", depth=(1,)), 32)


def test_bfloat16_computation_gives_float32_outputs():
    model = R.ResNet(num_classes=4, layout="cifar", depth=8, dtype="bfloat16")
    x = jnp.ones((1, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).dtype == jnp.float32
    assert jax.tree_util.tree_leaves(variables["params"])[0].dtype == jnp.float32


def test_decode_variant():
    assert R.decode_variant("R50x1") == dict(depth=50, width=1)
    assert R.decode_variant("R152x4") == dict(depth=152, width=4)
    assert R.decode_variant("R20") == dict(depth=20, width=1, layout="cifar")
    assert R.decode_variant("R18") == dict(depth=18, width=1, layout="cifar")
    assert R.block_sizes("cifar", 110) == (18, 18, 18)


@pytest.mark.parametrize("variant", ["R51x1", "R50", "B/16", "R20x0", "R19", "r50x1", 50])
def test_bad_variants_fail_in_one_line(variant):
    with pytest.raises(ValueError, match="resnet variant") as e:
        R.decode_variant(variant)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "opts,word",
    [
        (dict(layout="resnet"), "layout"), (dict(depth=20), "depth"),
        (dict(layout="cifar", depth=50, width=0), "width"), (dict(layout="cifar", depth=21), "depth"),
        (dict(depth=(3, 0)), "depth"), (dict(layout="cifar", depth=(2, 2)), "depth"),
        (dict(norm="layernorm"), "norm"), (dict(shortcut="zeropad"), "shortcut"),
        (dict(dtype="int8"), "dtype"), (dict(param_dtype="f32x"), "param_dtype"),
        (dict(weight_std="yes"), "weight_std"), (dict(num_classes=-1), "num_classes"),
        (dict(patch_size=16), "patch_size"), (dict(width=1.5), "width"),
    ],
)  # fmt: skip
def test_bad_options_fail_in_one_line(opts, word):
    with pytest.raises(ValueError, match=word) as e:
        R.validate(opts)
    assert "\n" not in str(e.value)
    if "patch_size" not in opts and "num_classes" not in opts:
        with pytest.raises(ValueError, match=word):  # the model checks them too
            _shapes(R.ResNet(num_classes=2, **opts), 32)


def test_defaults_are_the_fields_and_resolve_by_layout():
    assert R.OPTION_DEFAULTS["layout"] == "bit" and R.OPTION_DEFAULTS["depth"] == 50
    R.validate({})
    bit, cifar = R.resolve({}), R.resolve(dict(layout="cifar", depth=20))
    assert (bit["norm"], bit["weight_std"], bit["shortcut"]) == ("groupnorm", True, "projection")
    assert (cifar["norm"], cifar["weight_std"], cifar["shortcut"]) == (
        "batchnorm",
        False,
        "zeropad",
    )
    assert R.resolve(dict(layout="cifar", depth=18))["shortcut"] == "projection"
