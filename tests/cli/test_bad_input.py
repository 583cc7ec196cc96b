"""Bad input through the CLI: one `error: ` line, exit code 2, no traceback, nothing lost.

Each case in `tests/helpers/bad_input_cases.py` is its own `python -m vit_jax.main` subprocess.
Most fail in config validation, before anything is compiled (about 3 s each). After every case
the finished run in the module's workdir must still restore, bit for bit, with its config.json.
"""

import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import bad_input_cases as cases
from tests.helpers.paths import ROOT  # noqa: E402
from vit_jax import train as train_lib
from vit_jax.train.checkpoint import Checkpointer

CONFIG = os.path.join(ROOT, "configs", "test_tiny.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def _tiny_config():
    sys.path.insert(0, ROOT)
    from configs import test_tiny  # noqa: PLC0415

    return test_tiny.get_config()


def _snapshot(workdir: str):
    """(checkpoint steps, final params, config.json text) of a run."""
    ckpt = Checkpointer(workdir, 2)
    steps = sorted(ckpt.manager.all_steps())
    state = ckpt.manager.restore(steps[-1])
    ckpt.close()
    with open(os.path.join(workdir, "config.json")) as f:
        return steps, state["params"], f.read()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A workdir holding the test config's finished 16-step run, and its snapshot."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    train_lib.train_and_evaluate(_tiny_config(), workdir)
    return workdir, _snapshot(workdir)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folders"))
    cases.make_folders(root)
    return root


def _run_cli(case, paths):
    args = [a.format(**paths) for a in case.flags]
    if not any(a.startswith("--config=") for a in args):
        args.insert(0, f"--config={CONFIG}")
    return subprocess.run(
        [sys.executable, "-m", "vit_jax.main", *args], cwd=ROOT, env=dict(ENV, **dict(case.env)),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_there_are_enough_cases():
    assert len(cases.CASES) >= 25
    assert len({c.name for c in cases.CASES}) == len(cases.CASES)


@pytest.mark.parametrize("case", cases.CASES, ids=[c.name for c in cases.CASES])
def test_bad_input(case, finished_run, folders, tmp_path):
    run, before = finished_run
    paths = dict(
        run=run, copy=str(tmp_path / "copy"), new=str(tmp_path / "new"), tmp=str(tmp_path),
        data=folders, config=CONFIG,
    )  # fmt: skip
    shutil.copytree(run, paths["copy"])
    if case.prepare:
        getattr(cases, case.prepare)(paths["tmp"], paths["copy"])

    proc = _run_cli(case, paths)

    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == case.code, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    if case.code == 2:
        assert len(errors) == 1, proc.stderr[-3000:]
        assert re.search(case.message, errors[0]), errors[0]
        assert proc.stderr.rstrip().endswith(errors[0])  # the last word, nothing after it
    else:
        assert not errors
        assert re.search(case.message, proc.stderr + proc.stdout), proc.stderr[-3000:]

    steps, params, config_json = _snapshot(run)  # the earlier run is untouched
    assert steps == before[0] == [14, 16]
    assert config_json == before[2]
    jax.tree.map(np.testing.assert_array_equal, params, before[1])
