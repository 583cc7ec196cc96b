"""timm and transformers checkpoints (`.safetensors`, hub cache) in and out, against logits the real
libraries computed (tests/fixtures/torch_vit/, made by scripts/make_torch_fixtures.py)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import vit_jax
from vit_jax.weights import finetune, hub, npz, safetensors_ckpt

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "torch_vit")
NAMES = ("timm_token", "timm_avg", "timm_map", "hf_vit")
EXPECTED_POOL = {
    "timm_token": "token",
    "timm_avg": "gap_norm",
    "timm_map": "map",
    "hf_vit": "token",
}


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def _logits(model, params, x):
    return np.asarray(model.apply({"params": params}, x))


@pytest.mark.parametrize("name", NAMES)
def test_fixture_logits_match_the_library(name):
    folder = os.path.join(FIXTURES, name)
    expected = np.load(os.path.join(folder, "expected.npz"))
    ckpt = safetensors_ckpt.load(folder)
    assert ckpt.model["pool"] == EXPECTED_POOL[name]
    assert ckpt.layout == ("transformers" if name == "hf_vit" else "timm")
    model = vit_jax.create_model(None, 5, **ckpt.model)
    params = finetune.load_pretrained(folder, model, (16, 16), skip_head=False)
    assert _rel(_logits(model, params, expected["input"]), expected["logits"]) < 1e-5
    # the registers' position rows folded in: the timm_avg fixture has two registers
    assert model.num_registers == (2 if name == "timm_avg" else 0)


def test_transformers_layer_norm_eps_is_read():
    """The fixture's config says layer_norm_eps=1e-2: our default 1e-6 would compute other logits."""
    folder = os.path.join(FIXTURES, "hf_vit")
    expected = np.load(os.path.join(folder, "expected.npz"))
    ckpt = safetensors_ckpt.load(folder)
    assert ckpt.model["norm_eps"] == 1e-2
    model = vit_jax.create_model(None, 5, **dict(ckpt.model, norm_eps=1e-6))
    params = finetune.load_pretrained(folder, model, (16, 16), skip_head=False)
    assert _rel(_logits(model, params, expected["input"]), expected["logits"]) > 1e-3


def test_resized_grid_matches_timms_resample():
    """16 px (4x4) weights on 24 px (6x6): our bilinear table resize = timm's resample_abs_pos_embed."""
    folder = os.path.join(FIXTURES, "timm_token")
    expected = np.load(os.path.join(folder, "expected.npz"))
    model = vit_jax.create_model(None, 5, **safetensors_ckpt.load(folder).model)
    params = finetune.load_pretrained(
        folder + "/model.safetensors", model, (24, 24), skip_head=False
    )
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 37, 16)
    got = _logits(model, params, expected["input_24"])
    assert _rel(got, expected["logits_24"]) < 1e-5


def test_preprocessing_from_the_configs():
    timm_pre = safetensors_ckpt.load(os.path.join(FIXTURES, "timm_token")).preprocess
    assert timm_pre == dict(image_size=16, crop_pct=0.875, interpolation="bicubic",
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # fmt: skip
    hf = safetensors_ckpt.load(os.path.join(FIXTURES, "hf_vit"))
    assert hf.preprocess["mean"] == (0.5, 0.5, 0.5) and hf.preprocess["crop_pct"] == 1.0
    assert hf.labels == tuple(f"class_{i}" for i in range(5))


ROUND_TRIP = [
    ("timm", dict()),
    (
        "timm",
        dict(pool="gap_norm", final_norm=False, num_registers=2, layer_scale=0.1, qk_norm=True),
    ),
    ("timm", dict(pool="gap")),
    ("timm", dict(pool="map", cls_token=False, gelu_approximate=True)),
    ("transformers", dict()),
    ("vit_jax", dict(pool="gap", num_registers=1, posemb="sincos2d")),
]


@pytest.mark.parametrize(
    "layout,opts", ROUND_TRIP, ids=[f"{lay}-{i}" for i, (lay, _) in enumerate(ROUND_TRIP)]
)
def test_round_trip_is_exact(tmp_path, layout, opts):
    tiny = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, patch_size=(4, 4))
    model = vit_jax.create_model(None, 3, **tiny, **opts)
    x = np.random.RandomState(0).randn(1, 16, 16, 3).astype(np.float32)
    params = jax.device_get(model.init(jax.random.PRNGKey(1), x)["params"])
    params = jax.tree.map(
        lambda p: p + np.random.RandomState(p.size).randn(*p.shape).astype(p.dtype), params
    )
    path = str(tmp_path / "out" / "model.safetensors")
    _, bad = safetensors_ckpt.export(params, model, path, layout=layout, image_size=16)
    assert bad == []
    ckpt = safetensors_ckpt.load(str(tmp_path / "out"))
    assert ckpt.layout == layout
    back = vit_jax.create_model(None, 3, **{**tiny, **opts, **ckpt.model})
    loaded = finetune.load_pretrained(path, back, (16, 16), skip_head=False)
    flat, got = npz.to_layout(params, "linen"), npz.to_layout(loaded, "linen")
    assert sorted(flat) == sorted(got)
    for k in flat:
        np.testing.assert_array_equal(got[k], flat[k], err_msg=k)
    assert json.load(open(tmp_path / "out" / "config.json"))


def test_export_names_what_the_target_cannot_compute(tmp_path):
    model = vit_jax.create_model(None, 3, hidden_size=16, depth=1, mlp_dim=32, num_heads=2,
                                 patch_size=(4, 4), pool="gap", posemb="sincos2d")  # fmt: skip
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
    with pytest.raises(ValueError, match=r"posemb='sincos2d'.*pool='gap'"):
        safetensors_ckpt.export(
            params, model, str(tmp_path / "m.safetensors"), layout="transformers", image_size=16
        )


def test_a_hub_config_without_num_heads_takes_the_models(tmp_path):
    """timm's hub config.json names the architecture and few model_args (img_size as [h, w]); the
    heads then come from the architecture name or the model being loaded."""
    folder = tmp_path / "ckpt"
    shutil.copytree(os.path.join(FIXTURES, "timm_token"), folder)
    cfg = json.load(open(folder / "config.json"))
    cfg["architecture"], cfg["model_args"] = (
        "vit_custom_patch4_16",
        dict(num_classes=5, img_size=[16, 16]),
    )
    json.dump(cfg, open(folder / "config.json", "w"))
    with pytest.raises(ValueError, match="cannot tell the number of heads"):
        safetensors_ckpt.load(str(folder))
    assert safetensors_ckpt.load(str(folder), num_heads=2).model["prefix_posemb"] is True
    expected = np.load(folder / "expected.npz")
    model = vit_jax.create_model(None, 5, **safetensors_ckpt.load(str(folder), num_heads=2).model)
    params = finetune.load_pretrained(str(folder), model, (16, 16), skip_head=False)
    assert _rel(_logits(model, params, expected["input"]), expected["logits"]) < 1e-5


def test_the_npz_export_warns_that_timm_skips_fc_norm():
    model = vit_jax.create_model("Ti/4", 3, pool="gap_norm", final_norm=False)
    assert npz.timm_incompatibilities(model) == [
        "pool='gap_norm' (timm's .npz reader skips fc_norm; use --export)"
    ]
    assert safetensors_ckpt.problems(model, "timm") == []


def test_export_never_overwrites_a_runs_config_json(tmp_path):
    model = vit_jax.create_model(
        None, 3, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, patch_size=(4, 4)
    )
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
    (tmp_path / "config.json").write_text('{"model": {"variant": "Ti/16"}, "lr": 0.1}')
    with pytest.raises(ValueError, match="not a checkpoint's config.json"):
        safetensors_ckpt.export(
            params, model, str(tmp_path / "m.safetensors"), layout="timm", image_size=16
        )
    assert (
        json.load(open(tmp_path / "config.json"))["lr"] == 0.1
        and not (tmp_path / "m.safetensors").exists()
    )
    safetensors_ckpt.export(
        params, model, str(tmp_path / "a" / "m.safetensors"), layout="timm", image_size=16
    )
    safetensors_ckpt.export(
        params, model, str(tmp_path / "a" / "m.safetensors"), layout="transformers", image_size=16
    )


def test_unknown_timm_keys_are_one_line(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(os.path.join(FIXTURES, "timm_token"), folder)
    flat = safetensors_ckpt.read(str(folder / "model.safetensors"))
    flat["norm_pre.weight"] = np.ones(16, np.float32)
    flat["blocks.0.attn.norm.weight"] = np.ones(16, np.float32)
    safetensors_ckpt.write(flat, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="pre_norm") as e:
        safetensors_ckpt.load(str(folder))
    assert "\n" not in str(e.value)
    del flat["norm_pre.weight"]
    safetensors_ckpt.write(flat, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"options we lack\): blocks\.0\.attn\.norm\.weight$"):
        safetensors_ckpt.load(str(folder))


def _hub_cache(root, repo: str, source: str, commit: str = "a" * 40, ref: str = "main"):
    """The huggingface_hub cache layout: blobs by content, snapshot symlinks, refs/<name>."""
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / ref).write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in os.listdir(source):
        blob = base / "blobs" / f"blob_{name}"
        shutil.copy(os.path.join(source, name), blob)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    return snap


def test_hf_uri_resolves_offline_in_the_hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _hub_cache(cache, "timm/tiny_vit", os.path.join(FIXTURES, "timm_token"), ref="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = safetensors_ckpt.load("hf://timm/tiny_vit@v1")
    assert ckpt.layout == "timm" and ckpt.model["hidden_size"] == 16
    by_hash = hub.locate("hf://timm/tiny_vit@" + "a" * 40)
    assert os.path.realpath(by_hash.weights).endswith("blobs/blob_model.safetensors")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # $HF_HOME/hub
    assert hub.locate("hf://timm/tiny_vit@v1").config["global_pool"] == "token"
    with pytest.raises(
        ValueError,
        match=r"models--timm--tiny_vit/refs/main.*huggingface-cli download timm/tiny_vit",
    ):
        hub.locate("hf://timm/tiny_vit")  # no refs/main
    with pytest.raises(
        ValueError, match="models--org--absent.*huggingface-cli download org/absent`"
    ):
        hub.locate("hf://org/absent")


# ------------------------------------------------------------------ with the real libraries
def test_exports_load_in_timm_and_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    tiny = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, patch_size=(4, 4))
    x = np.random.RandomState(0).randn(2, 16, 16, 3).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    cases = [("timm", dict()), ("timm", dict(pool="gap_norm", final_norm=False, num_registers=2)),
             ("timm", dict(pool="map", cls_token=False, gelu_approximate=True)),
             ("transformers", dict())]  # fmt: skip
    for i, (layout, opts) in enumerate(cases):
        model = vit_jax.create_model(None, 3, **tiny, **opts)
        params = jax.device_get(model.init(jax.random.PRNGKey(1), x)["params"])
        params = jax.tree.map(
            lambda p: p + 0.5 * np.random.RandomState(p.size).randn(*p.shape).astype(p.dtype),
            params,
        )
        ours = _logits(model, params, x)
        folder = tmp_path / f"{layout}{i}"
        safetensors_ckpt.export(
            params, model, str(folder / "model.safetensors"), layout=layout, image_size=16
        )
        cfg = json.load(open(folder / "config.json"))
        if layout == "timm":
            overlay = dict(cfg["pretrained_cfg"], file=str(folder / "model.safetensors"))
            theirs = timm.create_model(
                cfg["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                **cfg["model_args"],
            )  # fmt: skip
        else:
            theirs = transformers.ViTForImageClassification.from_pretrained(str(folder))
        with torch.no_grad():
            out = theirs.eval()(xt)
        out = (out.logits if hasattr(out, "logits") else out).numpy()
        print(f"{layout} {opts}: max |ours - theirs| / max |theirs| = {_rel(ours, out):.2e}")
        assert _rel(ours, out) < 1e-5, (layout, opts)
