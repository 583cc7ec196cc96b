"""big_vision's SigLIP towers: the size strings, and the image tower of a two_towers `.npz`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models.variants import decode_variant
from vit_jax.weights import finetune, npz


@pytest.mark.parametrize(
    "variant,sizes",
    [
        ("So400m/14", (1152, 27, 4304, 16, 14)),  # big_vision models/vit.py decode_variant
        ("So150m/16", (896, 18, 2304, 14, 16)),  # timm vit_so150m_patch16_reg4_map_256
        ("mu/16", (32, 1, 128, 2, 16)),
    ],
)
def test_siglip_size_strings(variant, sizes):
    v = decode_variant(variant)
    got = (v["hidden_size"], v["depth"], v["mlp_dim"], v["num_heads"], v["patch_size"][0])
    assert got == sizes


def test_so400m_image_tower_has_siglips_parameter_count():
    """SigLIP So400m/14 at 224 px with its MAP head, no class token and no classifier: 427.68M
    parameters (27 blocks of 4 * 1152² + 2 * 1152 * 4304 weights, biases, norms; table 256 x 1152)."""
    model = vit_jax.create_model("So400m/14", 0, pool="map", cls_token=False)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    d, m, blocks = 1152, 4304, 27
    block = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
    stem = 14 * 14 * 3 * d + d + 256 * d
    map_head = d + 4 * (d * d + d) + 2 * d + (d * m + m) + (m * d + d)
    expected = blocks * block + stem + 2 * d + map_head
    assert expected == 427_680_704
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected


def test_two_towers_npz_loads_its_image_tower(tmp_path):
    """big_vision's two_towers layout: `params/img/...` (scanned blocks, top-level `pos_embedding`
    without a class row, MAPHead_0) beside `params/txt/...` and the `t`, `b` scalars."""
    kw = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, patch_size=(4, 4))
    model = vit_jax.create_model(None, 8, pool="map", cls_token=False, gelu_approximate=True, **kw)
    x = np.random.RandomState(0).randn(2, 16, 16, 3).astype(np.float32)
    params = jax.device_get(model.init(jax.random.PRNGKey(0), x)["params"])
    params = jax.tree.map(
        lambda p: p + np.random.RandomState(p.size).randn(*p.shape).astype(p.dtype), params
    )
    flat = npz.to_layout(params, "linen")
    raw = {}
    for key, value in flat.items():
        if key == npz.POSEMB_KEY:
            raw["params/img/pos_embedding"] = value
        elif key.startswith("Transformer/encoderblock_"):
            continue
        else:
            raw[f"params/img/{key}"] = value
    for rest in {k.split("/", 2)[2] for k in flat if k.startswith("Transformer/encoderblock_")}:
        stacked = np.stack([flat[f"Transformer/encoderblock_{i}/{rest}"] for i in range(2)])
        raw[f"params/img/Transformer/encoderblock/{rest}"] = stacked
    raw["params/txt/Embed_0/embedding"] = np.ones((10, 16), np.float32)
    raw["params/t"], raw["params/b"] = np.array([2.3], np.float32), np.array([-10.0], np.float32)
    path = str(tmp_path / "siglip.npz")
    np.savez(path, **raw)
    assert npz.checkpoint_layout(npz.read_npz(path)) == "big_vision"
    loaded = finetune.load_pretrained(path, model, (16, 16), skip_head=False)
    got = npz.to_layout(loaded, "linen")
    assert sorted(got) == sorted(flat)
    for key in flat:
        np.testing.assert_array_equal(got[key], flat[key], err_msg=key)
    np.testing.assert_array_equal(
        model.apply({"params": loaded}, x), model.apply({"params": params}, x)
    )
