"""Writes tests/fixtures/google_gelu/: tiny checkpoints saved in the layouts of Google's own Flax code,
with the logits that code computes (issue 27: released weights must compute Google's function).

  git clone --depth 1 https://github.com/google-research/big_vision /tmp/big_vision
  git clone --depth 1 https://github.com/google-research/vision_transformer /tmp/vision_transformer
  python scripts/make_bv_fixture.py --big_vision=/tmp/big_vision \
      --vision_transformer=/tmp/vision_transformer [--out=tests/fixtures/google_gelu]

Each argument is a checkout (or `git archive` extract) of the repository: the directory holding
`big_vision/models/vit.py`, resp. `vit_jax/models_vit.py`. Only those model files run (and
vision_transformer's `models_resnet.py`, which `models_vit.py` imports); big_vision's `utils` and
`models/common` are imported when they import here, else replaced by empty stubs (the model code does
not call them; the checkpoint keys are then flattened by a copy of `utils.tree_flatten_with_names`).
Needs only jax, flax, numpy, scipy and absl. Google's `vit_jax` package shares our package's name,
so it is never imported: its files are loaded under other module names.

For every model below: their module is initialised, every parameter perturbed (p + 0.1·N(0, 1), so
zero-initialised heads and class tokens, unit LayerNorm scales and 1e-6 biases all matter), the
params written as `NAME.npz` in the layout their code saves, and `NAME.expected.npz` holds the
fixed input `images` and their `logits` (float32). `manifest.json` records, per fixture, their
module's options, the matching `vit_jax.create_model` options and the image shape; the tests
(tests/weights/test_google_fixture.py) read only these files, never Google's code.

* big_vision layout: `{"params": params}` flattened to '/'-joined keys (`params/embedding/kernel`,
  top-level `params/pos_embedding` without a class slot, `params/Transformer/encoderblock/...`
  stacked when the model is scanned), the `.npz` big_vision's `utils.load_params` reads.
* vision_transformer layout: the released `.npz` files (`ViT-B_16.npz`): flat '/'-joined keys with
  the pre-Linen block names (`MultiHeadDotProductAttention_1`, `MlpBlock_3`, ...) that its
  `checkpoint.load` converts back with `flax.training.checkpoints.convert_pre_linen` (checked here).
"""

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import types

import numpy as np

NUM_CLASSES = 5
TINY = dict(width=16, depth=2, mlp_dim=32, num_heads=2)
OURS_TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, gelu_approximate=True)

# name: (their module's options, our create_model options, image (H, W))
BIG_VISION = {
    "bv_map": (
        dict(posemb="learn", pool_type="map"),
        dict(posemb="learn", pool="map"),
        (16, 16),
    ),
    "bv_gap_sincos2d": (  # a non-square 3x5 patch grid
        dict(posemb="sincos2d", pool_type="gap"),
        dict(posemb="sincos2d", pool="gap"),
        (12, 20),
    ),
    "bv_tok_scan": (  # class token without position, tanh pre-logits, the scanned layout
        dict(posemb="learn", pool_type="tok", rep_size=8, scan=True),
        dict(posemb="learn", pool="token", prefix_posemb=False, representation_size=8),
        (16, 16),
    ),
}
VISION_TRANSFORMER = {
    "vt_token": (  # the ViT paper's model: learned table with a class row, tanh pre-logits
        dict(classifier="token", representation_size=8),
        dict(posemb="learn", pool="token", representation_size=8),
        (16, 16),
    ),
}
_TO_PRE_LINEN = {  # Linen's per-type numbering in a block -> pre-Linen's call order (released files)
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


# ------------------------------------------------------------------ loading their files
def _load_file(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str, path: str):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
    return module


def load_big_vision(root: str):
    """big_vision's `models/vit.py` as a module, and whether its real `utils` imported."""
    if not os.path.isfile(os.path.join(root, "big_vision", "models", "vit.py")):
        sys.exit(f"error: --big_vision={root} holds no big_vision/models/vit.py")
    sys.path.insert(0, root)
    try:
        utils = importlib.import_module("big_vision.utils")
        importlib.import_module("big_vision.models.common")
    except Exception as e:  # noqa: BLE001  (tensorflow, einops, ... missing: stub them)
        print(f"big_vision.utils does not import here ({type(e).__name__}: {e}); stubbing it")
        for name in [m for m in sys.modules if m == "big_vision" or m.startswith("big_vision.")]:
            del sys.modules[name]
        pkg = _package("big_vision", os.path.join(root, "big_vision"))
        models = _package("big_vision.models", os.path.join(root, "big_vision", "models"))
        pkg.utils = sys.modules["big_vision.utils"] = types.ModuleType("big_vision.utils")
        models.common = types.ModuleType("big_vision.models.common")
        sys.modules["big_vision.models.common"] = models.common
        utils = None
    vit = importlib.import_module("big_vision.models.vit")
    return vit, utils


def load_vision_transformer(root: str):
    """vision_transformer's `models_vit.py`, loaded as `gvt_models_vit` (its package is `vit_jax`,
    our package's name: a stub `vit_jax` stands in only while the file executes)."""
    path = os.path.join(root, "vit_jax", "models_vit.py")
    if not os.path.isfile(path):
        sys.exit(f"error: --vision_transformer={root} holds no vit_jax/models_vit.py")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "vit_jax"}
    try:
        stub = _package("vit_jax", os.path.join(root, "vit_jax"))
        resnet = _load_file("gvt_models_resnet", os.path.join(root, "vit_jax", "models_resnet.py"))
        stub.models_resnet = sys.modules["vit_jax.models_resnet"] = resnet
        return _load_file("gvt_models_vit", path)
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] == "vit_jax"]:
            del sys.modules[k]
        sys.modules.update(saved)


def _revision(root: str, given):
    if given:
        return given
    try:
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or None
    except OSError:
        return None


# ------------------------------------------------------------------ params
def perturb(params, seed: int):
    """p + 0.1·N(0, 1) on every leaf (leaves in sorted-path order, one numpy stream)."""
    import flax  # noqa: PLC0415

    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    rng = np.random.RandomState(seed)
    out = {}
    for key in sorted(flat):
        value = np.asarray(flat[key], np.float32)
        out[key] = (value + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)
    return flax.traverse_util.unflatten_dict(out)


def flatten_with_names(tree, prefix: str = ""):
    """big_vision's `utils.tree_flatten_with_names` naming: sorted keys joined by '/'."""
    out = {}
    for key in sorted(tree):
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(tree[key], dict):
            out.update(flatten_with_names(tree[key], name))
        else:
            out[name] = np.asarray(tree[key])
    return out


def to_pre_linen(flat):
    def rename(key):
        m = re.match(r"^(Transformer/encoderblock_\d+/)([^/]+)(/.*)$", key)
        return key if not m else m.group(1) + _TO_PRE_LINEN.get(m.group(2), m.group(2)) + m.group(3)

    return {rename(k): v for k, v in flat.items()}


def _images(height: int, width: int, seed: int):
    return np.random.RandomState(seed).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)


# ------------------------------------------------------------------ the fixtures
def make_big_vision(vit, utils, out: str, manifest: dict, revision) -> None:
    import jax  # noqa: PLC0415

    for seed, (name, (theirs, ours, (h, w))) in enumerate(BIG_VISION.items()):
        theirs = dict(num_classes=NUM_CLASSES, patch_size=(4, 4), **TINY, **theirs)
        model = vit.Model(**theirs)
        images = _images(h, w, seed)
        params = model.init(jax.random.PRNGKey(seed), images)["params"]
        params = perturb(params, seed)
        logits, _ = model.apply({"params": params}, images)
        if utils is not None:  # their own checkpoint naming
            flat = dict(utils.tree_flatten_with_names({"params": params})[0])
        else:
            flat = flatten_with_names({"params": params})
        _write(out, name, flat, images, logits)
        manifest[name] = dict(
            source="big_vision/models/vit.py", revision=revision, theirs=_jsonable(theirs),
            keys_by="big_vision.utils.tree_flatten_with_names" if utils else "its copy here",
            ours=dict(variant="Ti/4", **OURS_TINY, **ours), image_shape=[h, w, 3],
            num_classes=NUM_CLASSES,
        )  # fmt: skip


def make_vision_transformer(models_vit, out: str, manifest: dict, revision) -> None:
    import flax  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import ml_collections  # noqa: PLC0415

    for seed, (name, (theirs, ours, (h, w))) in enumerate(VISION_TRANSFORMER.items(), start=10):
        transformer = dict(
            num_layers=TINY["depth"], mlp_dim=TINY["mlp_dim"], num_heads=TINY["num_heads"],
            dropout_rate=0.0, attention_dropout_rate=0.0,
        )  # fmt: skip
        kwargs = dict(
            num_classes=NUM_CLASSES, hidden_size=TINY["width"], transformer=transformer, **theirs
        )
        model = models_vit.VisionTransformer(
            patches=ml_collections.ConfigDict(dict(size=(4, 4))), **kwargs
        )
        images = _images(h, w, seed)
        params = perturb(model.init(jax.random.PRNGKey(seed), images, train=False)["params"], seed)
        logits = model.apply({"params": params}, images, train=False)
        flat = to_pre_linen(flatten_with_names(params))
        # The layout check: vision_transformer's checkpoint.load converts it back to these params.
        tree = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
        back = flax.training.checkpoints.convert_pre_linen(tree)
        back = flax.traverse_util.flatten_dict(flax.core.unfreeze(back), sep="/")
        assert back.keys() == flatten_with_names(params).keys(), sorted(back)
        _write(out, name, flat, images, logits)
        manifest[name] = dict(
            source="vit_jax/models_vit.py", revision=revision,
            theirs=_jsonable(dict(patches=dict(size=[4, 4]), **kwargs)),
            ours=dict(variant="Ti/4", **OURS_TINY, **ours), image_shape=[h, w, 3],
            num_classes=NUM_CLASSES,
        )  # fmt: skip


def _jsonable(d):
    return json.loads(json.dumps(d, default=list))


def _write(out: str, name: str, flat, images, logits) -> None:
    with open(os.path.join(out, f"{name}.npz"), "wb") as f:
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
    with open(os.path.join(out, f"{name}.expected.npz"), "wb") as f:
        np.savez(f, images=images, logits=np.asarray(logits, np.float32))
    print(f"{name}: {len(flat)} arrays, logits {np.asarray(logits).shape}")


def self_check(out: str, manifest: dict) -> None:
    """Our model on each fixture, tanh and exact GELU (relative max |Δlogits| / max |logits|)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import vit_jax  # noqa: PLC0415
    from vit_jax.weights import finetune  # noqa: PLC0415

    for name, entry in manifest.items():
        expected = np.load(os.path.join(out, f"{name}.expected.npz"))
        for approximate in (True, False):
            opts = {**entry["ours"], "gelu_approximate": approximate}
            model = vit_jax.create_model(num_classes=entry["num_classes"], **opts)
            params = finetune.load_pretrained(
                os.path.join(out, f"{name}.npz"), model, entry["image_shape"], skip_head=False,
                gelu_check=False,
            )  # fmt: skip
            logits = np.asarray(model.apply({"params": params}, expected["images"]))
            ref = expected["logits"]
            rel = np.max(np.abs(logits - ref)) / np.max(np.abs(ref))
            print(f"ours vs theirs, {name}, gelu_approximate={approximate}: {rel:.2e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big_vision", required=True, help="big_vision checkout")
    parser.add_argument("--vision_transformer", required=True, help="vision_transformer checkout")
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "google_gelu"))
    parser.add_argument("--big_vision_rev", default=None, help="commit, if not a git checkout")
    parser.add_argument("--vision_transformer_rev", default=None, help="likewise")
    parser.add_argument("--no_self_check", action="store_true", help="skip our model's check")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    manifest = {}
    vit, utils = load_big_vision(args.big_vision)
    make_big_vision(vit, utils, args.out, manifest, _revision(args.big_vision, args.big_vision_rev))
    models_vit = load_vision_transformer(args.vision_transformer)
    rev = _revision(args.vision_transformer, args.vision_transformer_rev)
    make_vision_transformer(models_vit, args.out, manifest, rev)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    if not args.no_self_check:
        self_check(args.out, manifest)


if __name__ == "__main__":
    main()
