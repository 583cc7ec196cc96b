"""The weights layer for every model family: released BiT files into a bit_paper ResNet (new head,
also through the trainer's init_from), Google's hybrid layout (exact logits, resized position
table), ResNet exports of every layout, DeiT's distillation token (head_dist, its table row)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vit_jax
from vit_jax import predict
from vit_jax.config import defaults
from vit_jax.models import posemb
from vit_jax.models import resnet as R
from vit_jax.train import loop
from vit_jax.weights import bit, finetune, npz

HYBRID = dict(resnet_layers=(1, 1), hidden_size=32, depth=1, mlp_dim=64, num_heads=2, patch_size=1)
BIT_DEPTH = (1, 1, 1, 1)


def _random(model, side, seed=1):
    """Params of `model` at `side` px with every leaf random (a zero head would hide errors)."""
    images = jnp.zeros((1, side, side, 3))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _flat(params):
    return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}


def _assert_equal(a, b):
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _logits(model, params, images):
    return np.asarray(jax.jit(model.apply)({"params": params}, images))


def _images(side, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (2, side, side, 3))


def _bit_file(tmp_path, classes=5):
    """A released-layout BiT file of a random bit_paper ResNet: (path, its params, model)."""
    model = R.ResNet(num_classes=classes, layout="bit_paper", depth=BIT_DEPTH)
    params = _random(model, 32)
    path = str(tmp_path / "BiT-M-tiny.npz")
    np.savez(path, **bit.to_bit(params))
    return path, params, model


# ------------------------------------------------------------------ ResNets
def test_a_bit_file_loads_into_a_bit_paper_resnet_with_a_new_head(tmp_path):
    path, params, model = _bit_file(tmp_path)
    same = finetune.load_pretrained(path, model, (32, 32, 3), skip_head=False)
    _assert_equal(same, params)
    images = _images(32)
    np.testing.assert_array_equal(_logits(model, same, images), _logits(model, params, images))
    new = R.ResNet(num_classes=3, layout="bit_paper", depth=BIT_DEPTH)
    tuned = finetune.load_pretrained(path, new, (48, 48, 3))  # any image size: no position table
    assert tuned["head"]["kernel"].shape == (2048, 3)  # the fresh, zero-initialised head
    assert not np.any(tuned["head"]["kernel"]) and not np.any(tuned["head"]["bias"])
    _assert_equal({k: v for k, v in tuned.items() if k != "head"},
                  {k: v for k, v in params.items() if k != "head"})  # fmt: skip


def test_the_trainers_init_from_loads_a_bit_file(tmp_path):
    path, params, _ = _bit_file(tmp_path)
    config = defaults.base_config("resnet")
    config.image_size, config.init_from.path = 32, path
    model = vit_jax.create_model(None, 7, model_name="resnet", layout="bit_paper", depth=BIT_DEPTH)
    tx = optax.sgd(0.1)
    fresh = _random(model, 32, seed=5)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = {"params": fresh, "opt_state": tx.init(fresh)}
    state = loop._init_from_pretrained(config, model, tx, state, {"params": one, "opt_state": one})
    got = jax.device_get(state["params"])
    assert got["head"]["kernel"].shape == (2048, 7) and not np.any(got["head"]["kernel"])
    _assert_equal({k: v for k, v in got.items() if k != "head"},
                  {k: v for k, v in params.items() if k != "head"})  # fmt: skip


@pytest.mark.parametrize(
    "model",
    [
        vit_jax.create_model("Ti/4", 10, hidden_size=16, depth=1, mlp_dim=32, num_heads=2),
        R.ResNet(num_classes=5, layout="bit", depth=BIT_DEPTH),
    ],
    ids=["vit", "resnet-bit"],
)
def test_a_bit_file_into_another_model_fails_in_one_line(tmp_path, model):
    path, _, _ = _bit_file(tmp_path)
    with pytest.raises(ValueError) as e:
        finetune.load_pretrained(path, model, (32, 32, 3))
    msg = str(e.value)
    assert "\n" not in msg and path in msg
    assert "layout 'bit_paper'" in msg and "config.model.layout='bit_paper'" in msg


def test_no_gelu_warning_for_a_resnet(tmp_path):
    path, _, model = _bit_file(tmp_path)
    assert finetune.gelu_mismatch(npz.read_npz(path), model, path) is None
    assert npz.checkpoint_layout(npz.read_npz(path)) == "bit"
    assert npz.checkpoint_gelu(npz.read_npz(path))[0] is None
    assert npz.timm_incompatibilities(model) == []


def test_a_bit_paper_export_is_the_released_layout_and_round_trips(tmp_path):
    model = R.ResNet(num_classes=5, layout="bit_paper", depth=BIT_DEPTH)
    params = _random(model, 32)
    path = npz.export_npz(params, str(tmp_path / "r.npz"))
    flat, released = npz.read_npz(path), bit.to_bit(params)
    assert set(flat) == set(released) and all(k.startswith("resnet/") for k in flat)
    for k in flat:
        np.testing.assert_array_equal(flat[k], released[k], err_msg=k)
    _assert_equal(finetune.load_pretrained(path, model, (32, 32), skip_head=False), params)
    # layout="linen": our own names, read back as well
    path = npz.export_npz(params, str(tmp_path / "linen.npz"), layout="linen")
    assert set(npz.read_npz(path)) == set(_flat(params))
    _assert_equal(finetune.load_pretrained(path, model, (32, 32), skip_head=False), params)


@pytest.mark.parametrize(
    "model",
    [
        R.ResNet(num_classes=4, layout="bit", depth=BIT_DEPTH),
        R.ResNet(num_classes=4, depth=20, layout="cifar"),
    ],  # noqa: E501
    ids=["bit", "cifar"],
)
def test_other_resnet_exports_hold_our_names_and_round_trip(tmp_path, model):
    params = _random(model, 32)
    path = npz.export_npz(params, str(tmp_path / "r.npz"))
    assert set(npz.read_npz(path)) == set(_flat(params))
    _assert_equal(finetune.load_pretrained(path, model, (32, 32), skip_head=False), params)


def test_predict_exports_a_resnet_in_the_bit_layout(tmp_path, capsys):
    path, params, _ = _bit_file(tmp_path)
    cfg = tmp_path / "resnet_config.py"
    cfg.write_text(
        "import ml_collections\nfrom vit_jax.config import defaults\n\n\ndef get_config():\n"
        "    c = defaults.base_config('resnet')\n"  # depth (1, 1, 1, 1): not a typed int depth
        "    c.model = ml_collections.ConfigDict(dict(layout='bit_paper', depth=(1, 1, 1, 1)))\n"
        "    c.image_size = 32\n    return c\n"
    )
    out_path = tmp_path / "out" / "again.npz"
    code = predict.main(
        ["predict", f"--checkpoint={path}", f"--config={cfg}", f"--export_npz={out_path}"]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (0, f"wrote {out_path}\n"), err
    assert err.strip().splitlines() == [
        "note: a ResNet, written in the released BiT layout; timm's ViT reader does not apply"
    ]
    before, after = npz.read_npz(path), npz.read_npz(str(out_path))
    assert set(before) == set(after)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


# ------------------------------------------------------------------ hybrid
def _google_stem_keys(layers):
    """The stem keys of Google's released R50+ViT-B_16.npz, for `layers` units per stage."""
    keys = {"conv_root/kernel", "gn_root/scale", "gn_root/bias"}
    for i, units in enumerate(layers, 1):
        for j in range(1, units + 1):
            unit = f"block{i}/unit{j}"
            keys |= {f"{unit}/conv{r}/kernel" for r in (1, 2, 3)}
            keys |= {f"{unit}/gn{r}/{p}" for r in (1, 2, 3) for p in ("scale", "bias")}
            if j == 1:
                keys |= {
                    f"{unit}/conv_proj/kernel",
                    f"{unit}/gn_proj/scale",
                    f"{unit}/gn_proj/bias",
                }
    return keys


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    model = vit_jax.create_model(None, 10, model_name="hybrid", **HYBRID)
    params = _random(model, 32)
    path = str(tmp_path_factory.mktemp("hybrid") / "R-tiny+ViT.npz")
    npz.export_npz(params, path, gelu_approximate=model.gelu_approximate)
    return model, params, path


def test_a_hybrid_export_has_googles_names_and_gives_the_same_logits(hybrid):
    model, params, path = hybrid
    keys = set(npz.read_npz(path)) - {npz.GELU_KEY}
    stem = {k for k in keys if k.startswith(("conv_root", "gn_root", "block"))}
    assert stem == _google_stem_keys(HYBRID["resnet_layers"])
    vit = {"embedding/kernel", "embedding/bias", "cls", "head/kernel", "head/bias",
           "Transformer/posembed_input/pos_embedding", "Transformer/encoder_norm/scale",
           "Transformer/encoderblock_0/LayerNorm_0/scale",
           "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
           "Transformer/encoderblock_0/LayerNorm_2/bias",
           "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"}  # fmt: skip
    assert vit <= keys and not any(k.startswith("pre_logits") for k in keys)
    assert npz.checkpoint_layout(npz.read_npz(path)) == "vit_jax"
    loaded = finetune.load_pretrained(path, model, (32, 32, 3), skip_head=False)
    _assert_equal(loaded, params)
    images = _images(32)
    np.testing.assert_array_equal(_logits(model, loaded, images), _logits(model, params, images))


def test_a_hybrid_at_another_resolution_gets_the_resized_table(hybrid, capsys):
    model, params, path = hybrid
    assert finetune.token_grid(model, 32, 64) == (4, 8)  # 32 px / (stem 8 · patch 1)
    new = vit_jax.create_model(None, 7, model_name="hybrid", **HYBRID)
    tuned = finetune.load_pretrained(path, new, (64, 64, 3))  # grid 4x4 → 8x8
    assert capsys.readouterr().err == ""  # the export recorded its GELU: no warning
    table = params["Transformer"]["posembed_input"]["pos_embedding"]
    want = posemb.resize_table(np.asarray(table), (4, 4), (8, 8), 1, "bilinear")
    got = tuned["Transformer"]["posembed_input"]["pos_embedding"]
    assert table.shape == (1, 1 + 16, 32) and got.shape == (1, 1 + 64, 32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[:, 0], table[:, 0])  # the class row as it was
    assert tuned["head"]["kernel"].shape == (32, 7) and not np.any(tuned["head"]["kernel"])
    _assert_equal(tuned["block2"], params["block2"])
    logits = _logits(new, tuned, _images(64))
    assert logits.shape == (2, 7) and np.all(np.isfinite(logits))


# ------------------------------------------------------------------ distillation token
def test_the_dist_token_is_a_head_and_a_prefix_row(tmp_path):
    kw = dict(hidden_size=16, depth=1, mlp_dim=32, num_heads=2)
    model = vit_jax.create_model("Ti/4", 10, distill_token=True, **kw)
    assert "head_dist" in npz.HEAD_KEYS
    params = _random(model, 8)  # a 2x2 grid
    path = npz.export_npz(params, str(tmp_path / "deit.npz"), gelu_approximate=False)
    table = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
    assert table.shape == (1, 2 + 4, 16)  # cls, dist, 4 patches
    tuned = finetune.load_pretrained(
        path, vit_jax.create_model("Ti/4", 3, distill_token=True, **kw), (16, 16)
    )
    got = tuned["Transformer"]["posembed_input"]["pos_embedding"]
    want = posemb.resize_table(table, (2, 2), (4, 4), 2, "bilinear")
    assert got.shape == (1, 2 + 16, 16)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[:, :2], table[:, :2])  # cls and dist rows kept
    # resize_posemb counts the dist row by default
    by_hand = finetune.resize_posemb(params, (2, 2), (4, 4))
    np.testing.assert_allclose(by_hand["Transformer"]["posembed_input"]["pos_embedding"], want,
                               rtol=1e-6, atol=1e-7)  # fmt: skip
    for head in ("head", "head_dist"):  # skip_head replaced both (zero-initialised, 3 classes)
        assert tuned[head]["kernel"].shape == (16, 3) and not np.any(tuned[head]["kernel"])
    np.testing.assert_array_equal(tuned["dist"], params["dist"])
    # Into a model without the token: the dist row goes, cls and the patch rows stay.
    plain = finetune.load_pretrained(path, vit_jax.create_model("Ti/4", 3, **kw), (16, 16))
    got = plain["Transformer"]["posembed_input"]["pos_embedding"]
    no_dist = np.concatenate([table[:, :1], table[:, 2:]], axis=1)
    want = posemb.resize_table(no_dist, (2, 2), (4, 4), 1, "bilinear")
    assert got.shape == (1, 1 + 16, 16) and "dist" not in plain and "head_dist" not in plain
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
