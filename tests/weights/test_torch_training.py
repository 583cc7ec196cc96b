"""timm / transformers checkpoints through the trainer and the CLIs: the model and preprocessing come
from the checkpoint (`vit_jax.config.from_checkpoint`), offline from a hub-cache folder."""

import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest

from tests.helpers.tiny import tiny_config
from tests.weights.test_torch_checkpoints import FIXTURES, _hub_cache, _rel
from vit_jax import config as config_lib
from vit_jax import models, predict
from vit_jax import train as train_lib
from vit_jax.config import from_checkpoint
from vit_jax.train import loop

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _hub_cache(cache, "timm/tiny_avg", os.path.join(FIXTURES, "timm_avg"))
    _hub_cache(cache, "google/tiny_vit", os.path.join(FIXTURES, "hf_vit"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize(
    "uri,fixture", [("hf://timm/tiny_avg", "timm_avg"), ("hf://google/tiny_vit", "hf_vit")]
)
def test_the_finetune_recipe_takes_the_checkpoints_model_and_preprocessing(
    hub_cache, uri, fixture, capsys
):
    c = config_lib.load_config(os.path.join(ROOT, "configs", "finetune.py"))  # B/16, tanh GELU
    c.init_from.path, c.init_from.skip_head, c.image_size = uri, False, 16
    c.aug.std = (0.3, 0.3, 0.3)  # set by the config: kept
    lines = from_checkpoint.apply_to_training(c)
    assert c.model.variant is None and c.model.hidden_size == 16 and c.model.patch_size == 4
    assert c.model.gelu_approximate is False  # timm / transformers: exact GELU
    mean = (0.485, 0.456, 0.406) if fixture == "timm_avg" else (0.5, 0.5, 0.5)
    assert tuple(c.aug.mean) == mean and tuple(c.aug.std) == (0.3, 0.3, 0.3)
    assert c.aug.eval_crop_pct == (0.875 if fixture == "timm_avg" else 1.0)
    assert (
        capsys.readouterr().err.splitlines() == lines
        and "kept from the config: aug.std" in lines[-1]
    )
    c.model.dtype = "float32"
    model = models.from_config(c.model, 5, "vit")
    state = loop._init_from_pretrained(
        c, model, optax.sgd(0.1), {}, {"params": None, "opt_state": None}
    )
    expected = np.load(os.path.join(FIXTURES, fixture, "expected.npz"))
    assert (
        _rel(model.apply({"params": state["params"]}, expected["input"]), expected["logits"]) < 1e-5
    )


def test_fine_tune_then_predict_and_export_offline(hub_cache, tmp_path, capsys):
    """The README's commands in process: train 2 steps from hf://, predict, export to timm."""
    c = tiny_config(dataset="digits", image_size=16, batch_size=16, eval_batch_size=120)
    c.update(dict(total_steps=2, eval_every=0, checkpoint_every=1000, log_every=1000))
    c.init_from.path = "hf://timm/tiny_avg"
    workdir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(c, workdir)
    assert result["count"] == 360
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["model"]["pool"] == "gap_norm" and saved["model"]["num_registers"] == 2
    assert (
        saved["aug"]["mean"] == [0.485, 0.456, 0.406]
        and saved["aug"]["eval_interpolation"] == "bicubic"
    )
    out = str(tmp_path / "export" / "model.safetensors")
    assert (
        predict.main(["predict", f"--workdir={workdir}", f"--export={out}", "--layout=timm"]) == 0
    )
    cfg = json.load(open(tmp_path / "export" / "config.json"))
    assert cfg["model_args"]["global_pool"] == "avg" and cfg["model_args"]["reg_tokens"] == 2
    assert cfg["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406] and cfg["num_classes"] == 10
    # evaluate the export without the run: its config.json brings the model and preprocessing
    # (timm's mean/std, crop 0.875, bicubic), so the metrics are the training run's own
    cfg_file = tmp_path / "eval_config.py"
    cfg_file.write_text(
        "from vit_jax.config import base_config\n\n\ndef get_config():\n    c = base_config()\n"
        "    c.dataset, c.image_size, c.eval_batch_size = 'digits', 16, 120\n    return c\n"
    )
    cmd = [sys.executable, "-m", "vit_jax.evaluate", f"--checkpoint={out}", f"--config={cfg_file}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        f"top-1 {result['top1']:.4f}" in proc.stdout and f"loss {result['loss']:.4f}" in proc.stdout
    )
    assert "aug.eval_interpolation=bicubic" in proc.stderr
    digit = os.path.join(ROOT, "tests", "fixtures", "digit.png")
    capsys.readouterr()
    assert predict.main(["predict", "--checkpoint=hf://google/tiny_vit", digit, "--top_k=1"]) == 0
    assert "class_" in capsys.readouterr().out  # the checkpoint's id2label names the classes
    # a model transformers cannot compute: one line naming why
    err = predict.main(
        ["predict", f"--workdir={workdir}", f"--export={out}", "--layout=transformers"]
    )
    assert err == 2 and "pool='gap_norm'" in capsys.readouterr().err
