"""A vivit run on a folder: tree of clips (folders of PNG frames) through the train loop: trains a
few steps on random windows, evaluates the centre window and a 2-window multi-clip evaluator."""

import json

import numpy as np
from PIL import Image

from vit_jax import train as train_lib
from vit_jax.config import base_config, validate

TINY = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, pool="gap")


def _tree(root, rng):
    for split, n in (("train", 4), ("test", 2)):
        for label, c in enumerate(("left", "right")):
            for i in range(n):
                clip = root / split / c / f"clip{i}"
                clip.mkdir(parents=True)
                for f in range(5 + i):  # 5..8 frames: windows of 4 frames 1 apart
                    frame = rng.integers(0, 64, (12, 12, 3), np.uint8)
                    frame[:, :6] += np.uint8(150 * (label == 0))  # a learnable signal
                    Image.fromarray(frame).save(clip / f"{f:02d}.png")


def test_a_vivit_run_on_a_clip_folder_trains_and_evaluates_multi_clip(tmp_path):
    _tree(tmp_path / "data", np.random.default_rng(0))
    c = base_config("vivit")
    c.dataset, c.image_size, c.progress_bar = f"folder:{tmp_path / 'data'}", 8, False
    c.batch_size, c.eval_batch_size, c.total_steps, c.warmup_steps = 4, 4, 3, 1
    c.eval_every, c.checkpoint_every, c.log_every = 0, 3, 1
    c.aug.flip = False
    c.model.variant = None
    c.model.update(dict(TINY, tubelet_size=2, num_frames=4, posemb="learn_sep"))
    c.evals = dict(eval=dict(), multi=dict(clips=2))
    validate(c, num_devices=1)
    result = train_lib.train_and_evaluate(c, str(tmp_path / "run"))
    assert result["eval/count"] == result["multi/count"] == 4
    assert 0.0 <= result["multi/top1"] <= 1.0 and np.isfinite(result["multi/loss"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["clip_frames"] is None and saved["evals"]["multi"]["clips"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    train = [s for s in steps if s.get("split") == "train"]
    assert [s["step"] for s in train] == [1, 2, 3]
    assert train[-1]["loss"] < train[0]["loss"]  # measured 0.6896 < ln 2 (step 1 has lr 0)
