"""Faults a long run meets (issue 26), injected for real: two jobs on one workdir, a cut last line
of metrics.jsonl, weights that overflow after a finite step, a full disk during a checkpoint save.

Each CLI case checks the one `error:`/`warning:` line, the exit status, that nothing else speaks
(no traceback), and that every checkpoint saved before the fault is kept byte-identical. The CLI
runs are `configs/test_tiny.py` on the digits (about 10 s each here) resumed from one finished
6-step run. The full disk is a real one: a 700 KiB tmpfs (about two checkpoints of this model)
mounted for the test, so it needs root (skipped elsewhere); the unit test of the save's message
injects ENOSPC instead and runs everywhere.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.helpers.paths import ROOT
from vit_jax.train import loop, metrics_log, save_failure, workdir_lock

CONFIG = os.path.join(ROOT, "configs", "test_tiny.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
STEPS = 6


def _cmd(workdir, *flags):
    return [sys.executable, "-m", "vit_jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
            "--config.checkpoint_every=1", *flags]  # fmt: skip


def _run(workdir, *flags, timeout=300):
    p = subprocess.run(_cmd(workdir, *flags), cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    return p.returncode, p.stdout + p.stderr


def _lines(out, prefix):
    return [line for line in out.splitlines() if line.startswith(prefix)]


def _rows(workdir):
    """Every line of metrics.jsonl parsed (fails on any line that is not JSON)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _train_steps(workdir):
    return [r["step"] for r in _rows(workdir) if r["split"] == "train"]


def _digests(workdir):
    """{relative path: sha256} of every file of every complete checkpoint."""
    out, root = {}, os.path.join(workdir, "checkpoints")
    for folder, _, names in os.walk(root):
        for n in names:
            path = os.path.join(folder, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _steps(workdir):
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if "tmp" in n)


def _params(workdir, step):
    from vit_jax.train import checkpoint

    return checkpoint.restore(os.path.join(workdir, "checkpoints"), step)["params"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    code, out = _run(workdir, f"--config.total_steps={STEPS}")
    assert code == 0, out[-3000:]
    return workdir


def _copy(finished, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    return workdir


# ----------------------------------------------------------------- the workdir lock
_HOLDER = textwrap.dedent("""
    import fcntl, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.truncate(0); f.write("pid 4242 on host elsewhere, started yesterday\\n"); f.flush()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    path = workdir_lock.lock_path(workdir)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, path], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir_lock.WorkdirInUseError) as e:
            workdir_lock.acquire(workdir)
        assert str(e.value) == (
            f"{workdir} is in use by another run (pid 4242 on host elsewhere, started yesterday); "
            "stop it or use another --workdir"
        )
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops its flock; its line stays
        holder.wait()
    capsys.readouterr()
    with workdir_lock.held(workdir):
        warned = capsys.readouterr().err.splitlines()
        assert warned == [
            f"warning: took over {path} from a run that is gone "
            "(pid 4242 on host elsewhere, started yesterday)"
        ]
        with open(path) as f:
            assert re.fullmatch(rf"pid {os.getpid()} on host \S+, started \S+\n", f.read())
        with workdir_lock.held(workdir):  # re-entrant in one process: the inner one keeps it
            pass
        probe = open(path)
        with pytest.raises(BlockingIOError):  # still held after the inner block
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        probe.close()
    with open(path) as f:
        assert f.read() == ""  # a run that ends normally leaves nothing to take over
    assert workdir_lock.acquire("gs://bucket/run") is False  # documented: URLs are not locked


def test_second_run_on_a_live_workdir_refuses_with_one_line(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    first = subprocess.Popen(_cmd(workdir, "--config.total_steps=40"), cwd=ROOT, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        for line in first.stdout:  # the first run has the lock once it says it resumed
            if line.startswith("resumed from step"):
                break
        code, out = _run(workdir, "--config.total_steps=40", timeout=120)
        assert code == 2, out[-3000:]
        errors = _lines(out, "error: ")
        assert errors == [
            f"error: {workdir} is in use by another run (pid {first.pid} on host "
            f"{os.uname().nodename}, started {errors[0].split('started ')[1]}"
        ], out[-3000:]
        assert errors[0].endswith("; stop it or use another --workdir")
        assert "Traceback" not in out
    finally:
        rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, rest[-3000:]
    assert _train_steps(workdir) == list(range(1, 41))  # one run's rows, once each, in order
    assert _steps(workdir) == ([39, 40], [])


# ----------------------------------------------------------------- metrics.jsonl cut mid-row
def test_repair_tail_and_tolerant_reader(tmp_path, capsys):
    path = str(tmp_path / "metrics.jsonl")
    rows = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (1, 2)]
    whole = "".join(json.dumps(r) + "\n" for r in rows)
    cut = json.dumps({"step": 3, "split": "train", "loss": 0.3})[:17]
    with open(path, "w") as f:
        f.write(whole + cut)
    metrics_log.repair_tail(path)
    assert capsys.readouterr().err == (
        f"warning: {path} ended in a cut row ({len(cut)} characters, a run stopped mid-write); "
        f"moved it to {path}.cut\n"
    )
    assert open(path).read() == whole
    assert open(f"{path}.cut").read() == cut + "\n"
    metrics_log.repair_tail(path)  # a whole file: nothing to do, nothing said
    assert capsys.readouterr().err == "" and open(path).read() == whole

    with open(path, "a") as f:  # a glued row (what older versions wrote) and a non-row
        f.write(cut + json.dumps(rows[0]) + "\n[1, 2]\n")
    assert metrics_log.read_metrics(path) == rows
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: skipped 2 unreadable line(s) of {path} ")
    assert "(line 3: " in err[0]


def test_cut_metrics_row_is_moved_aside_and_the_run_finishes(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    path = os.path.join(workdir, "metrics.jsonl")
    text = open(path).read()
    last = text[:-1].rfind("\n") + 1
    with open(path, "w") as f:  # a kill in the middle of the last row
        f.write(text[: last + 20])
    code, out = _run(workdir, f"--config.total_steps={STEPS + 2}")
    assert code == 0, out[-3000:]
    assert _lines(out, "warning: ") == [
        f"warning: {path} ended in a cut row (20 characters, a run stopped mid-write); moved it "
        f"to {path}.cut"
    ]
    assert "Traceback" not in out and not _lines(out, "error: ")
    assert open(path).read().startswith(text[:last])  # the complete rows are untouched
    assert _train_steps(workdir) == list(range(1, STEPS + 3))  # every line parses
    assert open(f"{path}.cut").read() == text[last : last + 20] + "\n"
    assert os.path.getsize(os.path.join(workdir, "curves.png")) > 0
    assert _steps(workdir) == ([STEPS + 1, STEPS + 2], [])


# ----------------------------------------------------------------- non-finite weights
def test_step_flags_weights_that_overflow_after_a_finite_step():
    import optax

    from tests.helpers.tiny import batch, tiny_config
    from vit_jax.train import sharding as shd

    c = tiny_config()
    mesh = shd.make_mesh()
    model, _, schedule, *_ = loop.build(c, 3, mesh)
    tx = optax.sgd(1e39)  # a learning rate that overflows float32
    from vit_jax.train import step as ts

    state = ts.init_state(model, tx, (1, c.image_size, c.image_size, 3), 0)
    new, m = jax.jit(lambda s, b: ts.train_step(s, b, model=model, tx=tx, schedule=schedule))(
        state, batch()
    )
    leaves = jax.tree.leaves(new["params"])
    assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
    assert not all(np.isfinite(x).all() for x in leaves)  # the reference: the arrays themselves
    assert not bool(m["weights_finite"]) and not bool(m["finite"])


def test_overflowing_weights_stop_before_they_are_saved(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    before = _digests(workdir)
    code, out = _run(workdir, f"--config.total_steps={STEPS + 4}", "--config.lr=1e39",
                     "--config.allow_config_change=True")  # fmt: skip
    assert code == 2, out[-3000:]
    assert _lines(out, "error: ") == [
        f"error: non-finite weights after the update (loss and gradient finite) at step {STEPS + 1}"
        f"; stopping (last good checkpoint: step {STEPS}). Lower the learning rate, or set "
        "--config.nan_policy=skip"
    ]
    assert "Traceback" not in out
    row = [r for r in _rows(workdir) if r["split"] == "train"][-1]
    assert row["step"] == STEPS + 1 and np.isfinite(row["loss"]) and row["weights_finite"] == 0
    assert _digests(workdir) == before  # nothing was saved, nothing was touched


def test_skip_policy_stops_after_k_skips_in_a_row(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    k = loop.MAX_SKIPS_IN_A_ROW
    code, out = _run(workdir, f"--config.total_steps={STEPS + 10}", "--config.lr=1e39",
                     "--config.nan_policy=skip", "--config.allow_config_change=True")  # fmt: skip
    assert code == 2, out[-3000:]
    bad = range(STEPS + 1, STEPS + k + 1)
    assert _lines(out, "warning: ") == [
        f"warning: step {s}: non-finite weights after the update (loss and gradient finite); "
        f"update skipped ({i} in a row)"
        for i, s in enumerate(bad, 1)
    ]
    assert _lines(out, "error: ") == [
        f"error: nan_policy=skip skipped {k} updates in a row (steps {bad[0]}-{bad[-1]}): the "
        f"weights have not changed since step {STEPS} (last checkpoint: step {bad[-2]}); lower "
        "the learning rate and rerun with --config.allow_config_change=True"
    ]
    assert "Traceback" not in out
    assert _steps(workdir) == ([bad[-3], bad[-2]], [])  # the K-th skip is not saved
    good = _params(os.path.join(finished), STEPS)
    for s in (bad[-3], bad[-2]):  # skipped steps saved the last good weights, unchanged
        jax.tree.map(np.testing.assert_array_equal, _params(workdir, s), good)


# ----------------------------------------------------------------- a full disk during a save
def test_save_failure_message_names_the_workdir_and_removes_the_partial_folder(tmp_path):
    directory = tmp_path / "checkpoints"
    for name in ("3", "4", "5.orbax-checkpoint-tmp-1234"):
        (directory / name).mkdir(parents=True)
        (directory / name / "data").write_bytes(b"x")
    cause = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "params/0": Failed to write 25503 bytes to file 15: '
        "No space left on device [os_error_code='28']"
    )
    msg = save_failure.message(str(tmp_path), str(directory), 6, cause)
    assert msg == (
        f"cannot save the checkpoint of step 5 in {tmp_path}: no space left on the device; "
        "removed its partial folder, earlier checkpoints are intact (latest complete: step 4); "
        "free space there (or use another --workdir) and rerun the same command to resume"
    )
    assert sorted(os.listdir(directory)) == ["3", "4"]
    assert (directory / "4" / "data").read_bytes() == b"x"
    denied = OSError(errno.EACCES, "Permission denied")
    assert "permission denied; " in save_failure.message("w", str(directory), 7, denied)
    assert "of step 7 in w" in save_failure.message("w", str(directory), 7, denied)


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KiB tmpfs (root only); yields its path, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mnt)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_during_a_save_is_one_line_and_the_rerun_resumes(finished, small_disk):
    workdir = os.path.join(small_disk, "run")
    code, out = _run(workdir, f"--config.total_steps={STEPS}")
    assert code == 2, out[-3000:]
    (error,) = _lines(out, "error: ")
    found = re.fullmatch(
        rf"error: cannot save the checkpoint of step (\d+) in {workdir}: no space left on the "
        r"device; removed its partial folder, earlier checkpoints are intact \(latest complete: "
        r"step (\d+)\); free space there \(or use another --workdir\) and rerun the same command "
        "to resume", error,
    )  # fmt: skip
    assert found, error
    failed, latest = int(found[1]), int(found[2])
    assert "Traceback" not in out and "orbax" not in out.lower()
    done, tmp = _steps(workdir)
    assert tmp == [] and done[-1] == latest and latest < failed

    subprocess.run(["mount", "-o", "remount,size=8m", small_disk], check=True)  # space freed
    code, out = _run(workdir, f"--config.total_steps={STEPS}")
    assert code == 0, out[-3000:]
    assert f"resumed from step {latest} in {workdir}" in out
    assert _steps(workdir) == ([STEPS - 1, STEPS], [])
    jax.tree.map(np.testing.assert_array_equal, _params(workdir, STEPS), _params(finished, STEPS))
