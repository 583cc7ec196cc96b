"""Checkpoint I/O: released layouts, exact round trips, logits through the released names, errors."""

import math

import flax
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import vit_jax
from vit_jax.models import posemb
from vit_jax.weights import npz

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2)
IMAGES = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))  # a 2 x 2 patch grid


def _random_params(model, seed=1):
    """Params with every leaf random (a zero head would hide errors in the logits)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), IMAGES)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _target(model, images=IMAGES):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]


def _flat(params):
    return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(params).items()}


def _assert_trees_equal(a, b):
    assert _flat(a).keys() == _flat(b).keys()
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def tiny():
    model = vit_jax.create_model("Ti/4", 10, **TINY)
    return model, _random_params(model)


def test_export_writes_the_released_vit_jax_names(tiny, tmp_path):
    _, params = tiny
    path = npz.export_npz(params, str(tmp_path / "sub" / "vit.npz"))
    keys = set(np.load(path).files)
    blk = "Transformer/encoderblock_1/"
    assert {
        "cls",
        "embedding/kernel",
        "head/bias",
        "Transformer/posembed_input/pos_embedding",
        "Transformer/encoder_norm/scale",
        blk + "LayerNorm_0/scale",
        blk + "MultiHeadDotProductAttention_1/query/kernel",
        blk + "MultiHeadDotProductAttention_1/out/kernel",
        blk + "LayerNorm_2/bias",
        blk + "MlpBlock_3/Dense_1/kernel",
    } <= keys
    assert len(keys) == 6 + 2 * 16 + 2
    assert not any("MultiHeadDotProductAttention_0" in k or "MlpBlock_0" in k for k in keys)


@pytest.mark.parametrize("layout,dtype", [("vit_jax", "float32"), ("linen", "bfloat16")])
def test_export_then_import_is_exact(tmp_path, layout, dtype):
    model = vit_jax.create_model("Ti/4", 10, param_dtype=dtype, **TINY)
    params = _random_params(model)
    path = npz.export_npz(params, str(tmp_path / "vit.npz"), layout=layout)
    loaded = npz.load_npz(path, _target(model))
    _assert_trees_equal(loaded, params)
    assert jax.tree.leaves(loaded)[0].dtype == jnp.dtype(dtype)


def _layer_norm(x, w, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * w[name + "/scale"] + w[name + "/bias"]


def _numpy_vit(w, images, depth):
    """Independent float64 ViT reading the released key names, the way timm's loader does."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    kernel = w["embedding/kernel"]  # [ph, pw, C, D]
    (ph, pw, c, d), (b, hh, ww, _) = kernel.shape, images.shape
    x = np.asarray(images, np.float64).reshape(b, hh // ph, ph, ww // pw, pw, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, ph * pw * c)
    x = x @ kernel.reshape(-1, d) + w["embedding/bias"]
    x = np.concatenate([np.broadcast_to(w["cls"], (b, 1, d)), x], axis=1)
    x = x + w["Transformer/posembed_input/pos_embedding"]
    erf = np.vectorize(math.erf)
    for i in range(depth):
        blk = f"Transformer/encoderblock_{i}/"
        mha = blk + "MultiHeadDotProductAttention_1/"
        y = _layer_norm(x, w, blk + "LayerNorm_0")
        q, k, v = (
            np.einsum("btd,dhk->bthk", y, w[mha + n + "/kernel"]) + w[mha + n + "/bias"]
            for n in ("query", "key", "value")
        )
        logits = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(q.shape[-1])
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = np.einsum("bhqt,bthk->bqhk", att, v)
        x = x + np.einsum("bqhk,hkd->bqd", y, w[mha + "out/kernel"]) + w[mha + "out/bias"]
        y = _layer_norm(x, w, blk + "LayerNorm_2")
        y = y @ w[blk + "MlpBlock_3/Dense_0/kernel"] + w[blk + "MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1.0 + erf(y / math.sqrt(2.0)))  # exact GELU
        x = x + y @ w[blk + "MlpBlock_3/Dense_1/kernel"] + w[blk + "MlpBlock_3/Dense_1/bias"]
    x = _layer_norm(x, w, "Transformer/encoder_norm")[:, 0]
    return x @ w["head/kernel"] + w["head/bias"]


def test_exported_file_read_by_released_names_gives_the_same_logits(tiny, tmp_path):
    model, params = tiny
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    want = _numpy_vit(dict(np.load(path)), IMAGES, depth=2)
    got = model.apply({"params": params}, IMAGES)
    assert want.std() > 0.1  # the random head makes the logits non-trivial
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_timm_reads_our_export_and_gives_the_same_logits(tiny, tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    model, params = tiny
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=8, patch_size=4, num_classes=10, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0
    )
    ref.load_pretrained(path)
    ref.eval()
    with torch.no_grad():
        want = ref(torch.from_numpy(np.asarray(IMAGES)).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(model.apply({"params": params}, IMAGES), want, atol=1e-4)


def _big_vision_layout(params, prefix, scanned):
    """Our params written as big_vision does: prefix, top-level posemb without the class slot."""
    flat = {k: np.asarray(v) for k, v in _flat(params).items()}
    flat["pos_embedding"] = flat.pop("Transformer/posembed_input/pos_embedding")[:, 1:]
    if scanned:
        blocks = [k for k in flat if k.startswith("Transformer/encoderblock_0/")]
        for key in blocks:
            rest = key[len("Transformer/encoderblock_0/") :]
            stack = [flat.pop(f"Transformer/encoderblock_{i}/{rest}") for i in range(2)]
            flat["Transformer/encoderblock/" + rest] = np.stack(stack)
    return {prefix + k: v for k, v in flat.items()}


@pytest.mark.parametrize("prefix,scanned", [("params/img/", False), ("params/", True)])
def test_big_vision_layouts_load(tmp_path, prefix, scanned):
    model = vit_jax.create_model("Ti/4", 10, pool="map", cls_token=True, **TINY)
    params = _random_params(model)
    # big_vision adds no position to the class token: its slot in our table is zero.
    params["Transformer"]["posembed_input"]["pos_embedding"][:, 0] = 0.0
    path = str(tmp_path / "bv.npz")
    np.savez(path, **_big_vision_layout(params, prefix, scanned))
    _assert_trees_equal(npz.load_npz(path, _target(model)), params)


def test_original_layout_with_optimizer_prefix_loads(tiny, tmp_path):
    model, params = tiny
    flat = npz.to_layout(params, "vit_jax")
    path = str(tmp_path / "opt.npz")
    np.savez(path, **{"opt/target/" + k: v for k, v in flat.items()}, **{"opt/state/step": 3})
    _assert_trees_equal(npz.load_npz(path, _target(model)), params)


def test_bfloat16_arrays_stored_by_numpy_read_back_as_bfloat16(tmp_path):
    path = str(tmp_path / "bf16.npz")
    x = np.array([1.5, -2.25, 3.0], ml_dtypes.bfloat16)
    np.savez(path, x=x)
    got = npz.read_npz(path)["x"]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), [1.5, -2.25, 3.0])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(hidden_size=24), "shapes: cls (1, 1, 16) vs model (1, 1, 24), embedding/bias"),
        (dict(patch_size=2), "embedding/kernel (4, 4, 3, 16) vs model (2, 2, 3, 16)"),
        (
            dict(depth=3),
            "depth 2 vs model 3; missing in checkpoint: Transformer/encoderblock_2/LayerNorm_0/bias",
        ),
        (
            dict(depth=1),
            "depth 2 vs model 1; unexpected in checkpoint: Transformer/encoderblock_1/",
        ),
        (dict(pool="gap"), "unexpected in checkpoint: cls$"),
        (dict(qk_norm=True), "missing in checkpoint: Transformer/encoderblock_0/Multi"),
    ],
)
def test_mismatched_checkpoints_raise_one_clear_error(tiny, tmp_path, overrides, message):
    _, params = tiny
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    model = vit_jax.create_model("Ti/4", 10, **{**TINY, **overrides})
    with pytest.raises(ValueError, match="checkpoint .*vit.npz does not match the model: ") as err:
        npz.load_npz(path, _target(model))
    assert err.match(message.replace("(", r"\(").replace(")", r"\)"))
    assert "\n" not in str(err.value)


def test_position_table_is_resized_to_the_model_grid(tiny, tmp_path):
    _, params = tiny
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    model = vit_jax.create_model("Ti/4", 10, **TINY)
    big = jnp.zeros((1, 16, 12, 3))  # a 4 x 3 grid, from the checkpoint's 2 x 2
    loaded = npz.load_npz(path, _target(model, big), grid=(4, 3))
    table = loaded["Transformer"]["posembed_input"]["pos_embedding"]
    old = params["Transformer"]["posembed_input"]["pos_embedding"]
    assert table.shape == (1, 1 + 12, 16)
    np.testing.assert_array_equal(table[:, 0], old[:, 0])  # class slot kept
    np.testing.assert_allclose(table, posemb.resize_table(old, (2, 2), (4, 3), 1), atol=0)
    np.testing.assert_array_equal(loaded["embedding"]["kernel"], params["embedding"]["kernel"])
    with pytest.raises(ValueError, match=r"pos_embedding \(1, 5, 16\) vs model \(1, 13, 16\)"):
        npz.load_npz(path, _target(model, big), resize_posemb=False)


def test_skip_head_leaves_out_the_classifier(tiny, tmp_path):
    _, params = tiny
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    model = vit_jax.create_model("Ti/4", 3, **TINY)  # new number of classes
    loaded = npz.load_npz(path, _target(model), skip_head=True)
    assert "head" not in loaded
    np.testing.assert_array_equal(loaded["cls"], params["cls"])
    with pytest.raises(ValueError, match=r"head/bias \(10,\) vs model \(3,\)"):
        npz.load_npz(path, _target(model))


def _truncated(tmp_path, tiny):
    path = npz.export_npz(tiny[1], str(tmp_path / "cut.npz"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def test_unreadable_files_raise_errors_naming_the_file(tiny, tmp_path):
    garbage, single = tmp_path / "garbage.npz", tmp_path / "single.npz"
    garbage.write_text("not a checkpoint")
    np.save(open(single, "wb"), np.zeros(3))
    cases = {
        str(tmp_path / "none.npz"): "does not exist",
        _truncated(tmp_path, tiny): "not a complete .npz archive",
        str(garbage): "not a complete .npz archive",
        str(single): "single .npy array",
    }
    target = _target(tiny[0])
    for path, message in cases.items():
        with pytest.raises(ValueError, match=f"checkpoint {path}.*{message}"):
            npz.load_npz(path, target)
    empty = str(tmp_path / "other.npz")
    np.savez(empty, weights=np.zeros(3))
    with pytest.raises(ValueError, match=f"no model parameters in {empty}.*found: weights"):
        npz.load_npz(empty, target)


def test_a_non_square_checkpoint_grid_must_be_given(tmp_path):
    model = vit_jax.create_model("Ti/4", 10, **TINY)
    wide = jnp.zeros((1, 8, 12, 3))  # trained on a 2 x 3 grid
    params = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), _target(model, wide))
    path = npz.export_npz(params, str(tmp_path / "wide.npz"))
    with pytest.raises(
        ValueError, match="wide.npz, .*pos_embedding: cannot tell the grid .* 6 patch"
    ):
        npz.load_npz(path, _target(model))
    loaded = npz.load_npz(path, _target(model), ckpt_grid=(2, 3))
    assert loaded["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 5, 16)


@pytest.mark.parametrize(
    "option,named",
    [
        (dict(posemb="sincos2d"), "posemb='sincos2d'"),
        (dict(posemb="rope2d"), "posemb='rope2d'"),
        (dict(layer_scale=0.1), "layer_scale"),
        (dict(qk_norm=True), "qk_norm"),
        (dict(representation_size=8), "representation_size"),
        (dict(pool="gap", final_norm=False), "final_norm=False"),
        (dict(norm="rmsnorm"), "norm='rmsnorm'"),
        (dict(num_registers=4), "num_registers"),
        (dict(prefix_posemb=False), "prefix_posemb=False"),
    ],
)
def test_exports_timm_cannot_read_exactly_are_named(option, named):
    assert npz.timm_incompatibilities(vit_jax.create_model("Ti/4", 3)) == []
    assert npz.timm_incompatibilities(vit_jax.create_model("Ti/4", 3, pool="gap")) == []
    problems = npz.timm_incompatibilities(vit_jax.create_model("Ti/4", 3, **option))
    assert len(problems) == 1 and named in problems[0], problems
