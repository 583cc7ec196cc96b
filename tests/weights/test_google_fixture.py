"""Checkpoints written in the layouts of Google's own Flax code compute Google's logits here (issue 27).

tests/fixtures/google_gelu/ was written by scripts/make_bv_fixture.py from big_vision's
`models/vit.py` (MAP, GAP with sincos2d on a 3x5 grid, a class token in the scanned layout) and
vision_transformer's `models_vit.py` (class token, learned table): tiny models, every parameter
perturbed, their logits on fixed images. Both codebases use Flax's `nn.gelu`, the tanh GELU.
"""

import json
import math
import os

import numpy as np
import optax
import pytest

import vit_jax
from tests.helpers.paths import ROOT
from vit_jax import config as config_lib
from vit_jax import models
from vit_jax.models.pooling import MAPHead
from vit_jax.train import loop
from vit_jax.weights import finetune, npz

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "google_gelu")
MANIFEST = json.load(open(os.path.join(FIXTURES, "manifest.json")))
TOL = 1e-5


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def _model(name, **overrides):
    entry = MANIFEST[name]
    return vit_jax.create_model(num_classes=entry["num_classes"], **{**entry["ours"], **overrides})


def _logits(name, model, **kwargs):
    entry, expected = MANIFEST[name], np.load(os.path.join(FIXTURES, f"{name}.expected.npz"))
    path = os.path.join(FIXTURES, f"{name}.npz")
    params = finetune.load_pretrained(path, model, entry["image_shape"], skip_head=False, **kwargs)
    return np.asarray(model.apply({"params": params}, expected["images"])), expected["logits"]


def test_the_fixture_is_small_and_covers_map_gap_tok_and_vision_transformer():
    size = sum(os.path.getsize(os.path.join(FIXTURES, f)) for f in os.listdir(FIXTURES))
    assert size < 200_000
    pools = {(e["source"], e["theirs"].get("pool_type", e["theirs"].get("classifier")))
             for e in MANIFEST.values()}  # fmt: skip
    assert pools == {
        ("big_vision/models/vit.py", "map"), ("big_vision/models/vit.py", "gap"),
        ("big_vision/models/vit.py", "tok"), ("vit_jax/models_vit.py", "token"),
    }  # fmt: skip
    layouts = {n: npz.checkpoint_layout(npz.read_npz(os.path.join(FIXTURES, f"{n}.npz")))
               for n in MANIFEST}  # fmt: skip
    assert layouts == {n: "vit_jax" if n.startswith("vt_") else "big_vision" for n in MANIFEST}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_google_checkpoints_reproduce_their_logits_with_the_tanh_gelu(name, capsys):
    logits, want = _logits(name, _model(name))
    assert _rel(logits, want) < TOL
    assert capsys.readouterr().err == ""  # the GELUs agree: no warning
    # The fixture tells the GELUs apart: the exact GELU (our default) computes another function.
    exact, _ = _logits(name, _model(name, gelu_approximate=False), gelu_check=False)
    assert _rel(exact, want) > 3 * TOL


@pytest.mark.parametrize("name", ["bv_map", "vt_token"])
def test_the_finetune_recipe_reproduces_the_logits_through_the_trainers_init(name):
    """configs/finetune.py's model options (tanh GELU) with the fixture's sizes, loaded by the
    training loop's `init_from` code; float32 compute (the recipe's bfloat16 cannot hold 1e-5)."""
    entry = MANIFEST[name]
    c = config_lib.load_config(os.path.join(ROOT, "configs", "finetune.py"))
    assert c.model.gelu_approximate is True
    ours = {k: v for k, v in entry["ours"].items() if k != "gelu_approximate"}
    c.model.update(dict(ours, dtype="float32"))
    c.image_size = entry["image_shape"][0]
    c.init_from.path = os.path.join(FIXTURES, f"{name}.npz")
    c.init_from.skip_head = False  # the fixture's own head, to compare logits
    model = models.from_config(c.model, entry["num_classes"], c.model_name)
    state = loop._init_from_pretrained(
        c, model, optax.sgd(0.1), {}, {"params": None, "opt_state": None}
    )
    expected = np.load(os.path.join(FIXTURES, f"{name}.expected.npz"))
    logits = model.apply({"params": state["params"]}, expected["images"])
    assert _rel(logits, expected["logits"]) < TOL


# ------------------------------------------------------------------ the MAP head
def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _layernorm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _float64(tree):
    if isinstance(tree, dict):
        return {k: _float64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def big_vision_map_head(p, x):
    """big_vision's MAPHead (models/vit.py:160-183) in float64 numpy: a learned probe attends over
    the tokens (Flax MultiHeadDotProductAttention), then x + MlpBlock(LayerNorm(x)), tanh GELU."""
    x, p = np.asarray(x, np.float64), _float64(p)
    att = p["MultiHeadDotProductAttention_0"]
    probe = np.tile(p["probe"], (x.shape[0], 1, 1))  # [B, 1, D]
    q = np.einsum("bqd,dhk->bqhk", probe, att["query"]["kernel"]) + att["query"]["bias"]
    k = np.einsum("bld,dhk->blhk", x, att["key"]["kernel"]) + att["key"]["bias"]
    v = np.einsum("bld,dhk->blhk", x, att["value"]["kernel"]) + att["value"]["bias"]
    scores = np.einsum("bqhk,blhk->bhql", q, k) / math.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhql,blhk->bqhk", weights, v)
    y = np.einsum("bqhk,hkd->bqd", heads, att["out"]["kernel"]) + att["out"]["bias"]
    mlp = p["MlpBlock_0"]
    h = _layernorm(y, p["LayerNorm_0"])
    h = _gelu_tanh(h @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    y = y + h @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    return y[:, 0]


def test_map_head_with_tanh_gelu_equals_big_vision_map_head_written_out():
    """The MAPHead_0 params of big_vision's checkpoint (perturbed there) on random tokens."""
    flat = npz.canonical(npz.read_npz(os.path.join(FIXTURES, "bv_map.npz")))
    head = {k[len("MAPHead_0/") :]: v for k, v in flat.items() if k.startswith("MAPHead_0/")}
    params = {}
    for key, value in head.items():
        *path, leaf = key.split("/")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    tokens = np.random.default_rng(0).standard_normal((3, 7, 16)).astype(np.float32)
    want = big_vision_map_head(params, tokens)
    got = MAPHead(num_heads=2, mlp_dim=32, gelu_approximate=True).apply({"params": params}, tokens)
    assert _rel(got, want) < TOL
    exact = MAPHead(num_heads=2, mlp_dim=32).apply({"params": params}, tokens)
    assert _rel(exact, want) > 10 * TOL  # the option reaches the head's MLP


# ------------------------------------------------------------------ the warning
def test_a_gelu_mismatch_is_one_warning_line_silenced_by_gelu_check(capsys, tmp_path):
    exact = _model("bv_map", gelu_approximate=False)
    _logits("bv_map", exact)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "tanh GELU (big_vision layout" in err and "exact GELU" in err
    assert "model.gelu_approximate=True" in err and "init_from.gelu_check=False" in err
    _logits("bv_map", exact, gelu_check=False)
    _logits("vt_token", _model("vt_token", gelu_approximate=False), gelu_check=False)
    assert capsys.readouterr().err == ""
    # The config key reaches load_pretrained through the training loop.
    c = config_lib.load_config(os.path.join(ROOT, "configs", "finetune.py"))
    c.model.update(dict(MANIFEST["bv_map"]["ours"], gelu_approximate=False, dtype="float32"))
    c.image_size, c.init_from.path = 16, os.path.join(FIXTURES, "bv_map.npz")
    for check, lines in ((True, 1), (False, 0)):
        c.init_from.gelu_check = check
        loop._init_from_pretrained(
            c, exact, optax.sgd(0.1), {}, {"params": None, "opt_state": None}
        )
        assert capsys.readouterr().err.count("warning: ") == lines


@pytest.mark.parametrize("layout", ["vit_jax", "linen"])
def test_an_export_records_its_gelu_and_warns_only_on_a_change(layout, capsys, tmp_path):
    """Our own exports (vit_jax layout: the names of Google's releases) say which GELU they are."""
    model = _model("vt_token", gelu_approximate=False)
    params = finetune.load_pretrained(
        os.path.join(FIXTURES, "vt_token.npz"), model, (16, 16), skip_head=False, gelu_check=False
    )
    marked = npz.export_npz(params, str(tmp_path / "m.npz"), layout=layout, gelu_approximate=False)
    unmarked = npz.export_npz(params, str(tmp_path / "u.npz"), layout=layout)
    assert npz.checkpoint_gelu(npz.read_npz(marked))[0] == "exact"
    assert npz.read_npz(marked).keys() - npz.read_npz(unmarked).keys() == {npz.GELU_KEY}
    back = finetune.load_pretrained(marked, model, (16, 16), skip_head=False)
    np.testing.assert_array_equal(back["head"]["kernel"], params["head"]["kernel"])
    assert capsys.readouterr().err == ""  # exact into exact
    finetune.load_pretrained(marked, _model("vt_token"), (16, 16))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained with the exact GELU (as recorded" in err
    finetune.load_pretrained(unmarked, model, (16, 16))  # no record: only the layout tells
    assert capsys.readouterr().err.count("warning: ") == (layout == "vit_jax")
