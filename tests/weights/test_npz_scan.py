"""`.npz` import/export and fine-tuning of a model with scan over layers: the files keep the
per-block names `Transformer/encoderblock_{i}/...`, whichever layout wrote or reads them."""

import jax
import numpy as np

import vit_jax
from vit_jax.models import scan
from vit_jax.weights import finetune, npz

TINY = dict(hidden_size=16, depth=3, mlp_dim=32, num_heads=2)
X = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))


def _models():
    model = vit_jax.create_model("Ti/4", 5, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), X)["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    return model, model.clone(scan=True), params


def _target(model):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), X)["params"]


def test_a_scanned_models_export_equals_the_unrolled_ones(tmp_path):
    _, _, params = _models()
    a = npz.export_npz(params, str(tmp_path / "unrolled.npz"))
    b = npz.export_npz(scan.stack_blocks(params), str(tmp_path / "scanned.npz"))
    fa, fb = npz.read_npz(a), npz.read_npz(b)
    assert sorted(fa) == sorted(fb)
    assert "Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel" in fb  # released names
    assert not any(k.startswith("Transformer/encoderblock/") for k in fb)
    for k in fa:
        np.testing.assert_array_equal(fb[k], fa[k])


def test_an_npz_loads_into_a_scanned_model_with_the_same_logits(tmp_path):
    model, scanned, params = _models()
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    loaded = npz.load_npz(path, _target(scanned))
    assert loaded["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (3, 16)
    jax.tree.map(np.testing.assert_array_equal, loaded, scan.stack_blocks(params))
    np.testing.assert_allclose(
        scanned.apply({"params": loaded}, X), model.apply({"params": params}, X), rtol=1e-5,
        atol=1e-6,
    )  # fmt: skip
    # big_vision's own scanned files (`params/Transformer/encoderblock/...`), into either layout.
    linen = npz.to_layout(params, "linen")
    big_vision = {k: v for k, v in linen.items() if "encoderblock_" not in k}
    for rest in {k.split("/", 2)[2] for k in linen if "encoderblock_" in k}:
        blocks = [linen[f"Transformer/encoderblock_{i}/{rest}"] for i in range(3)]
        big_vision[f"Transformer/encoderblock/{rest}"] = np.stack(blocks)
    path = str(tmp_path / "bv.npz")
    np.savez(path, **{f"params/{k}": v for k, v in big_vision.items()})
    for m, want in ((scanned, scan.stack_blocks(params)), (model, params)):
        jax.tree.map(np.testing.assert_array_equal, npz.load_npz(path, _target(m)), want)


def test_fine_tuning_a_scanned_model_from_an_npz(tmp_path):
    _, _, params = _models()
    path = npz.export_npz(params, str(tmp_path / "vit.npz"))
    scanned = vit_jax.create_model("Ti/4", 7, scan=True, **TINY)
    out = finetune.load_pretrained(path, scanned, (16, 16))  # a 4 x 4 grid: table resized
    assert out["head"]["kernel"].shape == (16, 7)
    blocks = out["Transformer"]["encoderblock"]
    np.testing.assert_array_equal(
        blocks["MlpBlock_0"]["Dense_1"]["kernel"],
        np.stack([params["Transformer"][f"encoderblock_{i}"]["MlpBlock_0"]["Dense_1"]["kernel"]
                  for i in range(3)]),
    )  # fmt: skip
    assert out["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 17, 16)
    logits = scanned.apply(
        {"params": out}, jax.random.normal(jax.random.PRNGKey(2), (1, 16, 16, 3))
    )
    assert logits.shape == (1, 7) and np.isfinite(logits).all()
