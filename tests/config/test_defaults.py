"""One source for every default: the config defaults equal the fields they mirror, and the configs in
configs/ state only what they change (relative to the recipe they build on)."""

import ast
import dataclasses
import glob
import json
import os

import ml_collections
import pytest

import vit_jax
from tests.helpers.paths import ROOT
from vit_jax import config as config_lib
from vit_jax import models
from vit_jax.common import trees
from vit_jax.data.options import AugConfig, DataConfig, read_config

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_model_defaults_are_the_vision_transformer_fields():
    model = config_lib.base_config().model
    fields = {
        f.name: f.default
        for f in dataclasses.fields(models.VisionTransformer)
        if f.default is not dataclasses.MISSING and f.name not in ("parent", "name")
    }
    assert set(model) == {"variant", *models.SIZE_KEYS, *fields} - {"num_classes"}
    for key, default in fields.items():
        assert model[key] == default, key
    assert all(model[k] is None for k in models.SIZE_KEYS)
    # And create_model uses the same ones (its options are the fields).
    built = vit_jax.create_model("Ti/16", 10)
    for key in ("posemb", "pool", "norm", "final_norm", "head_bias", "gelu_approximate", "remat"):
        assert getattr(built, key) == model[key], key


def test_data_and_aug_defaults_are_the_data_options_fields():
    c = config_lib.base_config()
    for f in dataclasses.fields(AugConfig):
        assert _plain(c.aug[f.name]) == _plain(f.default), f.name
    for f in dataclasses.fields(DataConfig):
        if f.name != "aug":
            assert c[f.name] == f.default, f.name
    # What the data pipeline reads from the base config is exactly its own defaults.
    assert read_config(c) == dataclasses.replace(DataConfig(), eval_batch_size=c.batch_size)
    assert config_lib.eval_batch_size(c) == c.batch_size == DataConfig.batch_size


def test_none_defaults_are_typed():
    c = config_lib.base_config()
    c.model.layer_scale = 0.1
    c.eval_batch_size = 64
    with pytest.raises(TypeError):
        c.model.cls_token = "yes"
    with pytest.raises(TypeError):
        c.model.hidden_size = "wide"


def _parent(tree):
    """The recipe a config builds on: ("load_config", file) or ("base_config", None)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "load_config":
            return node.args[0].value
    return None


def _set_keys(tree):
    """Dotted keys a config file assigns: `c.a.b = ...` and `c.a.update(dict(k=...))`."""

    def dotted(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return ".".join(reversed(parts)) if isinstance(node, ast.Name) and node.id == "c" else None

    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            keys += [k for k in map(dotted, node.targets) if k]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update":
            prefix = dotted(node.func.value)
            for arg in node.args:
                if isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "dict":
                    keys += [f"{prefix}.{kw.arg}" for kw in arg.keywords]
    return keys


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_configs_state_only_what_they_change(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    parent_file = _parent(tree)
    if parent_file:
        parent = config_lib.load_config(parent_file, relative_to=path)
    else:
        parent = config_lib.base_config()
    config = config_lib.load_config(path)
    old, new = trees.flatten(parent), trees.flatten(config)
    keys = _set_keys(tree)
    assert keys, "found no assignments in the config file"
    restated = [k for k in keys if k in old and _plain(old[k]) == _plain(new[k])]
    assert not restated, f"{os.path.basename(path)} restates its base's values: {restated}"
    # A size string means what it says: a variant is never resized, sizes come without one.
    if not all(k in config.model for k in models.SIZE_KEYS):  # a family without ViT sizes
        assert config.model_name != "vit" and config.model.variant, config.model
    elif config.model.variant:
        assert all(config.model[k] is None for k in models.SIZE_KEYS), config.model
    else:
        assert all(config.model[k] is not None for k in models.SIZE_KEYS), config.model
    config_lib.validate(config, num_devices=1)


def test_configs_mean_what_they_meant_before_the_rewrite():
    """The configs were rewritten to state only their changes (and cifar10 lost its misleading
    "S/4"); what they train is unchanged: compared with their values on the previous main."""
    from vit_jax.train.checkpoint import effective  # noqa: PLC0415

    with open(os.path.join(ROOT, "tests", "fixtures", "configs_v0.json")) as f:
        before = json.load(f)
    # The recipes were then changed on purpose to equal their sources (issue 14): docs/recipes.md
    # and tests/config/test_recipes.py hold them now.
    recipes = {"imagenet_s16.py", "i21k_b16.py", "finetune.py"}
    recipes.add("ablation_cifar10.py")  # issue 15: 900 steps instead of 300 (docs/ablation.md)
    newer = {
        "quickstart_evals.py",
        "vit_g14.py",
        "vit_G14.py",
        "data_scaling.py",
        "cifar10_cct.py",
        "cifar10_resnet.py",
        "cifar10_hybrid.py",
        "video_digits.py",
        "video_digits_image.py",
    }  # added since
    assert sorted(before) == sorted(set(map(os.path.basename, CONFIGS)) - newer)
    for name, old in before.items():
        if name in recipes:
            continue
        new = json.loads(config_lib.load_config(os.path.join(ROOT, "configs", name)).to_json())
        a, b = effective(old), effective(new)
        diff = {
            k: (a.get(k), b.get(k))
            for k in set(a) | set(b)
            if a.get(k) != b.get(k) and not k.startswith("evals.")  # what is measured, not trained
        }
        assert not diff, f"{name}: {diff}"


def test_effective_config_fills_new_keys_and_expands_size_strings():
    from vit_jax.train.checkpoint import effective  # noqa: PLC0415

    c = config_lib.base_config()
    c.model.variant = "S/16"
    flat = effective(json.loads(c.to_json()))
    assert flat["model.hidden_size"] == 384 and flat["model.patch_size"] == [16, 16]
    assert "model.variant" not in flat
    assert flat["eval_batch_size"] == c.batch_size
    old = json.loads(c.to_json())
    del old["model"]["kernels"]  # a run saved before the key existed
    assert effective(old) == flat
    explicit = ml_collections.ConfigDict(json.loads(c.to_json()))
    explicit.model.variant = None
    explicit.model.update(dict(patch_size=16, hidden_size=384, depth=12, mlp_dim=1536, num_heads=6))
    assert effective(json.loads(explicit.to_json())) == flat
