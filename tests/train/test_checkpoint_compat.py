"""Runs saved before the package was regrouped still resume and load, with the same numbers.

tests/fixtures/tiny_run_v0 is a workdir written by main at 8935042 (the flat layout):
`python -m vit_jax.main --config=configs/test_tiny.py --workdir=W --config.total_steps=4`, keeping
config.json and checkpoints/4. The numbers below were printed by that same main:
  resumed to step 6 (`--config.total_steps=6`): train loss 2.22517991065979 at step 6,
    eval loss 2.2069302029079862, top-1 0.35, top-5 0.8277777777777777 (360 examples);
  `python -m vit_jax.predict --workdir=W --split=test`: top-1 0.263889, loss 2.248631.
"""

import json
import os
import shutil

import numpy as np
import pytest

from tests.helpers.paths import ROOT
from vit_jax import config as config_lib
from vit_jax import train as train_lib
from vit_jax.train import checkpoint

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")


@pytest.fixture
def old_run(tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(FIXTURE, workdir)
    return workdir


def test_an_old_run_resumes_with_todays_config_file_and_trains_the_same(old_run):
    config = config_lib.load_config(os.path.join(ROOT, "configs", "test_tiny.py"))
    config.total_steps = 6
    result = train_lib.train_and_evaluate(config, old_run)
    np.testing.assert_allclose(result["loss"], 2.2069302029079862, rtol=1e-5)
    assert result["top1"] == pytest.approx(0.35) and result["count"] == 360
    with open(os.path.join(old_run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    step6 = next(r for r in rows if r["step"] == 6 and r["split"] == "train")
    np.testing.assert_allclose(step6["loss"], 2.22517991065979, rtol=1e-5)
    # The saved record of the run was not rewritten: only resumable keys differ from today's.
    with open(os.path.join(old_run, "config.json")) as f:
        assert json.load(f)["model"]["variant"] == "Ti/4"


def test_an_old_checkpoint_restores_on_the_host_and_predicts_the_same(old_run, capsys):
    state = checkpoint.restore(os.path.join(old_run, "checkpoints"))
    assert int(state["step"]) == 4
    assert state["params"]["embedding"]["kernel"].shape == (4, 4, 3, 16)
    from vit_jax import predict  # noqa: PLC0415

    assert predict.main(["predict", f"--workdir={old_run}", "--split=test"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("test: top-1 0.263889") and "loss 2.248631" in line, line
