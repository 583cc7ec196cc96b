"""Released BiT `.npz` layout ↔ our bit_paper ResNet: the key set a released file has, an exact
round trip through a written file, and big_vision's own converter reading what `to_bit` writes."""

import ast
import os
import re
import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_jax.models import resnet as R
from vit_jax.weights import bit
from vit_jax.weights.npz import read_npz

BIG_VISION = "/work/.mirror/google-research+big_vision/repo"


def _params(blocks, width=1, classes=5, seed=0):
    """Random numpy params of ResNet(layout="bit_paper") with `blocks` units per stage."""
    model = R.ResNet(num_classes=classes, layout="bit_paper", depth=blocks, width=width)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(shapes["params"])
    return traverse_util.unflatten_dict(
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in flat.items()}
    )


def _released_keys(blocks):
    """The keys of a released BiT file, written out from big_transfer's / big_vision's names."""
    keys = {"resnet/root_block/standardized_conv2d/kernel", "resnet/group_norm/gamma",
            "resnet/group_norm/beta", "resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"}  # fmt: skip
    for b, units in enumerate(blocks, 1):
        for u in range(1, units + 1):
            unit = f"resnet/block{b}/unit{u:02d}"
            for g in "abc":
                keys |= {f"{unit}/{g}/standardized_conv2d/kernel", f"{unit}/{g}/group_norm/gamma",
                         f"{unit}/{g}/group_norm/beta"}  # fmt: skip
            if u == 1:
                keys.add(f"{unit}/a/proj/standardized_conv2d/kernel")
    return keys


def test_r50x1_has_the_released_keys_and_shapes():
    model = R.ResNet(num_classes=1000, layout="bit_paper", **R.decode_variant("R50x1"))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    zeros = jax.tree_util.tree_map(lambda s: np.broadcast_to(np.float32(0), s.shape), shapes)
    flat = bit.to_bit(zeros)  # the {"params": ...} variables are accepted
    assert set(flat) == _released_keys((3, 4, 6, 3)) and len(flat) == 153
    assert flat["resnet/head/conv2d/kernel"].shape == (1, 1, 2048, 1000)
    assert flat["resnet/group_norm/gamma"].shape == (2048,)
    assert flat["resnet/block1/unit01/a/group_norm/gamma"].shape == (64,)  # gn1: the unit's input
    assert flat["resnet/block1/unit01/a/proj/standardized_conv2d/kernel"].shape == (1, 1, 64, 256)
    assert flat["resnet/block4/unit03/b/standardized_conv2d/kernel"].shape == (3, 3, 512, 512)
    assert bit.is_bit_layout(flat) and not bit.is_bit_layout({"head/kernel": 0})
    assert bit.bit_options(flat) == dict(layout="bit_paper", depth=50, width=1, num_classes=1000)


def test_round_trip_through_a_file_is_exact(tmp_path):
    params = _params((2, 1, 1, 2))
    path = str(tmp_path / "BiT-M-R.npz")
    np.savez(path, **bit.to_bit(params))
    flat = read_npz(path)
    assert set(flat) == _released_keys((2, 1, 1, 2))
    back = bit.from_bit(flat)
    a, b = traverse_util.flatten_dict(params), traverse_util.flatten_dict(back)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    again = bit.to_bit(back)
    assert all(np.array_equal(again[k], flat[k]) for k in flat) and set(again) == set(flat)
    assert bit.bit_options(flat)["depth"] == (2, 1, 1, 2)
    assert "head" not in bit.from_bit(flat, head=False)


def test_loaded_weights_give_the_same_outputs():
    params = _params((1, 1, 1, 1), width=1, classes=3, seed=3)
    model = R.ResNet(num_classes=3, layout="bit_paper", depth=(1, 1, 1, 1))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
    # A file's GroupNorm vectors and numbered conv scopes (some released files) read the same.
    flat = {re.sub("/standardized_conv2d/", "/standardized_conv2d_7/", k): v
            for k, v in bit.to_bit(params).items()}  # fmt: skip
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(
        apply({"params": bit.from_bit(flat)}, x), apply({"params": params}, x)
    )


def test_bad_inputs_fail_in_one_line():
    flat = bit.to_bit(_params((1, 1, 1, 1)))
    for bad, word in [
        ({**flat, "resnet/block1/unit01/d/group_norm/gamma": np.zeros(3)}, "unknown BiT key"),
        ({**flat, "head/kernel": np.zeros(3)}, "unexpected key"),
        ({"Transformer/encoder_norm/scale": np.zeros(3)}, "not a BiT checkpoint"),
    ]:
        with pytest.raises(ValueError, match=word) as e:
            bit.from_bit(bad)
        assert "\n" not in str(e.value)
    v1 = {"conv_root": {"kernel": np.zeros((7, 7, 3, 64))}, "gn_root": {"scale": np.zeros(64)}}
    with pytest.raises(ValueError, match="no BiT key"):
        bit.to_bit(v1)


def _big_vision_converter():
    """big_vision's `maybe_convert_big_transfer_format`, read from its source (not vendored)."""
    try:
        src = subprocess.run(
            ["git", "-C", BIG_VISION, "show", "HEAD:big_vision/models/bit_paper.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("big_vision's source is not mirrored here")
    tree = ast.parse(src)
    fn = next(n for n in tree.body if getattr(n, "name", "") == "maybe_convert_big_transfer_format")
    names = lambda t: (list(traverse_util.flatten_dict(t, sep="/").items()), None)  # noqa: E731
    scope = {"re": re, "u": types.SimpleNamespace(tree_flatten_with_names=names)}
    exec(compile(ast.Module([fn], []), "bit_paper.py", "exec"), scope)
    return scope["maybe_convert_big_transfer_format"]


@pytest.mark.skipif(not os.path.isdir(BIG_VISION), reason="big_vision is not mirrored here")
def test_big_visions_converter_reads_what_to_bit_writes():
    convert = _big_vision_converter()
    params = _params((2, 2, 1, 1), seed=5)
    nested = traverse_util.unflatten_dict(bit.to_bit(params), sep="/")
    theirs = traverse_util.flatten_dict(convert(nested))
    ours = traverse_util.flatten_dict(params)
    assert set(theirs) == set(ours)
    for k, v in theirs.items():  # big_vision keeps GroupNorm vectors as [1, 1, 1, C]
        want = (
            ours[k]
            if k[-2] in ("conv_root", "head") or k[-1] == "kernel"
            else ours[k][None, None, None]
        )
        np.testing.assert_array_equal(v, want, err_msg=str(k))
