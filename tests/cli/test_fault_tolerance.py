"""Fault tolerance of the CLI: SIGTERM/SIGINT save and exit, SIGKILL at random moments (also during
an asynchronous checkpoint write) resumes bit-exactly, NaN stops (or skips, up to K in a row)
without harm. More faults (a second run on the workdir, a cut metrics row, weights that overflow,
a full disk) are in tests/train/test_faults.py.

Every run is `python -m vit_jax.main --config=configs/test_tiny.py` with 20 steps and a checkpoint
after every step, so a kill lands between or during saves (each step takes about 0.25 s here).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers.paths import ROOT  # noqa: E402
from vit_jax.train.checkpoint import Checkpointer

CONFIG = os.path.join(ROOT, "configs", "test_tiny.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
STEPS = 20
FLAGS = (f"--config.total_steps={STEPS}", "--config.checkpoint_every=1")
TMP = ".orbax-checkpoint-tmp"  # Orbax's name for a checkpoint still being written


# ----------------------------------------------------------------- helpers
def _start(workdir, *flags):
    """The CLI as a subprocess; stdout and stderr go to files in the workdir's parent."""
    log = open(f"{workdir}.log", "w")
    cmd = [sys.executable, "-m", "vit_jax.main", f"--config={CONFIG}", f"--workdir={workdir}"]
    proc = subprocess.Popen([*cmd, *FLAGS, *flags], cwd=ROOT, env=ENV, stdout=log, stderr=log)
    proc.log = log
    return proc


def _finish(proc, timeout=120):
    """(exit code, everything the run printed)."""
    proc.wait(timeout)
    proc.log.close()
    with open(proc.log.name) as f:
        return proc.returncode, f.read()


def _run(workdir, *flags):
    return _finish(_start(workdir, *flags))


def _train_rows(workdir):
    """The complete rows of metrics.jsonl with split "train" (a killed run may end mid-line)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return [r for r in rows if r["split"] == "train"]


def _checkpoint_dirs(workdir):
    """(complete steps, steps being written) in workdir/checkpoints."""
    folder = os.path.join(workdir, "checkpoints")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    done = sorted(int(n) for n in names if n.isdigit())
    writing = sorted(int(n.split(".")[0]) for n in names if n.endswith(TMP))
    return done, writing


def _restore(workdir, step=None):
    ckpt = Checkpointer(workdir, 2)
    state = ckpt.manager.restore(ckpt.latest_step() if step is None else step)
    ckpt.close()
    return state


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _wait_for(proc, condition, timeout=120.0, poll=0.005):
    """Polls `condition()` until true; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("the run made no progress")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: (workdir, final state)."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    code, out = _run(workdir)
    assert code == 0, out[-3000:]
    return workdir, _restore(workdir)


# ----------------------------------------------------------------- SIGTERM / SIGINT
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_the_rerun_finishes(sig, reference, tmp_path):
    workdir = str(tmp_path / "run")
    proc = _start(workdir)
    assert _wait_for(proc, lambda: len(_train_rows(workdir)) >= 3)
    proc.send_signal(sig)
    code, out = _finish(proc)

    assert code == 0, out[-3000:]
    assert "Traceback" not in out
    stopped = int(re.search(rf"{sig.name}: saved checkpoint at step (\d+); rerun the same", out)[1])
    assert 3 <= stopped < STEPS
    assert _train_rows(workdir)[-1]["step"] == stopped  # the step it reported is the last it took
    assert _checkpoint_dirs(workdir) == ([stopped - 1, stopped], [])
    assert int(_restore(workdir)["step"]) == stopped
    if sig == signal.SIGINT:
        return  # the rerun is the same as after SIGTERM

    code, out = _run(workdir)
    assert code == 0, out[-3000:]
    assert f"resumed from step {stopped} in {workdir}" in out
    final = _restore(workdir)
    assert int(final["step"]) == STEPS
    _assert_same(final, reference[1])


# ----------------------------------------------------------------- SIGKILL
def _resumed_from(out: str) -> int:
    found = re.search(r"resumed from step (\d+) in", out)
    return int(found[1]) if found else 0


def _logged_past(workdir, step):
    """True once this run has logged `step` (earlier runs' rows are already in the file)."""
    earlier = len(_train_rows(workdir))
    return lambda: any(r["step"] >= step for r in _train_rows(workdir)[earlier:])


def _writing_checkpoint(workdir):
    return lambda: bool(_checkpoint_dirs(workdir)[1])


def test_sigkill_at_random_moments_resumes_bit_exactly(reference, tmp_path):
    """Four `kill -9`s at seeded random moments, each followed by the same command again."""
    rng = np.random.default_rng(0)
    workdir = str(tmp_path / "run")
    last_complete, killed_mid_write = 0, 0
    for kill in range(4):
        logged = _logged_past(workdir, last_complete + rng.integers(1, 4))
        proc = _start(workdir)
        if kill == 0:  # right when the first asynchronous checkpoint write has started
            assert _wait_for(proc, _writing_checkpoint(workdir))
        else:  # 1-3 steps after the resumed one, then 0-250 ms later (steps take ~250 ms)
            assert _wait_for(proc, logged)
            time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        code, out = _finish(proc)
        assert code == -signal.SIGKILL
        if kill:  # resumed from the last complete checkpoint, never a half-written one
            assert _resumed_from(out) == last_complete, out[-3000:]
        done, writing = _checkpoint_dirs(workdir)
        print(f"kill {kill}: complete checkpoints {done}, being written {writing}")  # on failure
        killed_mid_write += bool(writing)
        last_complete = max(done, default=0)
    assert killed_mid_write >= 1  # at least the first kill interrupted a write

    code, out = _run(workdir)
    assert code == 0, out[-3000:]
    assert _resumed_from(out) == last_complete
    assert _checkpoint_dirs(workdir) == ([STEPS - 1, STEPS], [])
    final = _restore(workdir)
    assert int(final["step"]) == STEPS
    _assert_same(final, reference[1])


def test_half_written_checkpoint_is_never_picked_up(reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    half = os.path.join(workdir, "checkpoints", f"{STEPS + 1}{TMP}")
    shutil.copytree(os.path.join(workdir, "checkpoints", str(STEPS)), half)
    for d, _, names in os.walk(half):
        for n in names:
            os.truncate(os.path.join(d, n), 0)
    ckpt = Checkpointer(workdir, 2)
    assert ckpt.latest_step() == STEPS
    ckpt.close()


# ----------------------------------------------------------------- NaN / Inf
def _nan_run(reference, tmp_path, *flags):
    """Resumes a copy of the finished reference run for 10 more steps at lr 1e30."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    more = (f"--config.total_steps={STEPS + 10}", "--config.checkpoint_every=2", "--config.lr=1e30")
    code, out = _run(workdir, *more, "--config.allow_config_change=True", *flags)
    assert "Traceback" not in out
    return workdir, code, out


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(reference, tmp_path):
    workdir, code, out = _nan_run(reference, tmp_path)
    assert code == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    step = int(
        re.search(r"error: non-finite loss or gradient at step (\d+); stopping", errors[0])[1]
    )
    assert f"(last good checkpoint: step {STEPS})" in errors[0]
    assert "--config.nan_policy=skip" in errors[0]
    first_bad = next(r["step"] for r in _train_rows(workdir) if not r["finite"])
    assert step == first_bad == STEPS + 2  # step 21's huge update makes step 22's loss overflow
    assert _checkpoint_dirs(workdir) == ([STEPS - 1, STEPS], [])
    state = _restore(workdir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
    _assert_same(state, reference[1])


def test_nan_policy_skip_keeps_the_weights_and_stops_after_k_in_a_row(reference, tmp_path):
    from vit_jax.train.loop import MAX_SKIPS_IN_A_ROW as K

    workdir, code, out = _nan_run(reference, tmp_path, "--config.nan_policy=skip")
    assert code == 2, out[-3000:]
    bad = list(range(STEPS + 2, STEPS + 2 + K))  # step 21's huge update: every later loss overflows
    rows = {r["step"]: r for r in _train_rows(workdir)}
    assert [s for s in sorted(rows) if s > STEPS and not rows[s]["finite"]] == bad
    warnings = [line for line in out.splitlines() if line.startswith("warning: step ")]
    assert [int(re.match(r"warning: step (\d+): ", w)[1]) for w in warnings] == bad
    assert warnings[-1].endswith(f"update skipped ({K} in a row)")
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: nan_policy=skip skipped {K} updates in a row (steps {bad[0]}-{bad[-1]}): the "
        f"weights have not changed since step {STEPS + 1} (last checkpoint: step {STEPS + 4}); "
        "lower the learning rate and rerun with --config.allow_config_change=True"
    ]
    assert K == 5 and _checkpoint_dirs(workdir) == ([STEPS + 2, STEPS + 4], [])  # 26: not saved
    a, b = _restore(workdir, STEPS + 2), _restore(workdir, STEPS + 4)
    assert int(b["step"]) == STEPS + 4  # skipped updates still count as steps
    _assert_same(a["params"], b["params"])  # every update after step 21 was skipped
    _assert_same(a["opt_state"], b["opt_state"])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(b["params"]))
