"""The stderr guard of multi-host runs (vit_jax/common/stderr_guard.py): every byte passes through
as it comes except JAX's failure report, which goes to WORKDIR/crash/process-K.log and becomes one
line; progress notes are consumed. Fed synthetic streams here, in every split a pipe can deliver;
tests/faults/test_multihost.py runs it for real (a hung process)."""

import io
import json
import os
import subprocess
import sys

import pytest

from vit_jax.common import stderr_guard
from vit_jax.common.stderr_guard import MARK, Guard

# JAX's report when process 1 stopped sending heartbeats, as process 0 printed it (jaxlib 0.10.2)
HUNG_1 = (
    b"E1203 01:13:09.055531   11132 coordination_service.cc:1549] [7669] Use error polling to "
    b"propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy "
    b"(stopped sending heartbeats):\n1\nThe tasks have crashed.\n"
    b"F1203 01:13:09.056243   11143 client.h:80] Terminating process because the JAX distributed "
    b"service detected fatal errors.\n*** Check failure stack trace: ***\n"
    b"Fatal Python error: Aborted\n\nThread 0x00007ff58c3d96c0 (most recent call first):\n"
    b'  File "multihost.py", line 309 in _fn\n'
)
# ... and when the coordinator stopped answering, as process 1 printed it
HUNG_0 = (
    b"F1203 01:13:42.738506   11344 client.h:80] Terminating process because the JAX distributed "
    b"service detected fatal errors. absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded\n\n"
    b"RPC: /xla.coordination.CoordinationService/Heartbeat\nFatal Python error: Aborted\n"
)


def _note(step, checkpoints):
    return MARK + json.dumps({"step": step, "checkpoints": checkpoints}).encode() + b"\n"


def _run(chunks, index=0, count=2):
    out = io.BytesIO()
    guard = Guard(out, index, count)
    seen = []  # what had been written after each chunk: bytes must not be held back
    for c in chunks:
        guard.feed(c)
        seen.append(out.getvalue())
    path = guard.close()
    return out.getvalue(), seen, path


def _splits(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture
def workdir(tmp_path):
    for step in (2, 4):
        os.makedirs(tmp_path / "checkpoints" / str(step))
    os.makedirs(tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp")  # incomplete: not counted
    return tmp_path


@pytest.mark.parametrize("size", [1, 3, 7, 10_000])
def test_ordinary_output_passes_through_unchanged_and_at_once(size):
    text = (
        b"step 1: loss 2.30\n"
        b"Epoch 1 \r 10%|#   | \r 50%|#####  | \r100%|##########|\n"  # a progress bar
        b"Error rates fell\n"  # starts with E but is no absl line
        b"E is for elephant"  # an unfinished line at the end
    )
    out, seen, path = _run(_splits(text, size))
    assert out == text and path is None
    if size == 3:  # a progress bar's partial line is shown before its newline arrives
        assert b"Epoch 1 \r 1" in seen[10] and not seen[10].endswith(b"\n")


@pytest.mark.parametrize("size", [1, 5, 10_000])
def test_progress_notes_are_consumed_in_any_split(size, workdir):
    ckpt = str(workdir / "checkpoints")
    text = b"step 1\n" + _note(3, ckpt) + b"step 3\n" + _note(5, ckpt) + b"step 5\n"
    out, _, path = _run(_splits(text, size))
    assert out == b"step 1\nstep 3\nstep 5\n" and path is None


@pytest.mark.parametrize("size", [1, 4, 10_000])
def test_jax_report_becomes_one_line_and_is_saved(size, workdir):
    ckpt = str(workdir / "checkpoints")
    text = b"step 5: loss 1.2\n" + _note(6, ckpt) + HUNG_1
    out, _, path = _run(_splits(text, size))
    assert path == str(workdir / "crash" / "process-0.log")
    with open(path, "rb") as f:
        assert f.read() == HUNG_1  # the whole report, nothing dropped
    assert out.decode() == (
        "step 5: loss 1.2\n"
        "error: process 1 of 2 stopped responding at step 6; the last complete checkpoint is "
        "step 4 — start the same command on all hosts to resume (JAX's report: "
        f"{path})\n"
    )


def test_a_dead_coordinator_is_named_and_no_checkpoint_yet(tmp_path):
    ckpt = str(tmp_path / "checkpoints")
    os.makedirs(ckpt)
    out, _, path = _run([_note(1, ckpt), HUNG_0], index=1, count=4)
    assert path == str(tmp_path / "crash" / "process-1.log")
    assert out.decode() == (
        "error: the coordinator (process 0) of 4 stopped responding at step 1; the last complete "
        "checkpoint is none yet (the run starts afresh) — start the same command on all hosts to "
        f"resume (JAX's report: {path})\n"
    )


def test_the_process_own_error_line_wins_over_the_guard_line(workdir):
    own = b"error: process 1 of 2 stopped responding at step 6; ...\n"
    cut = HUNG_1.index(b"\n") + 1  # Python's line lands between two lines of JAX's report
    out, _, path = _run([_note(6, str(workdir / "checkpoints")), HUNG_1[:cut], own, HUNG_1[cut:]])
    assert out == own and os.path.isfile(path)
    out, _, path = _run([_note(6, str(workdir / "checkpoints")), own, HUNG_1])  # or before it
    assert out == own and os.path.isfile(path)


def test_absl_lines_that_are_not_the_report_pass_through():
    other = b"E1203 01:13:09.055531   11132 cuda_dnn.cc:8] something else\nW1203 x\n"
    out, _, path = _run(_splits(other, 2))
    assert out == other and path is None


def test_the_guard_script_end_to_end(workdir):
    """The guard as `install` starts it: stdin to stdout, the exit of the stream ends it."""
    ckpt = str(workdir / "checkpoints")
    p = subprocess.run(
        [sys.executable, "-I", stderr_guard.__file__, "1", "2"],
        input=b"hello\n" + _note(7, ckpt) + HUNG_0, capture_output=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0 and p.stderr == b""
    assert p.stdout.decode().startswith(
        "hello\nerror: the coordinator (process 0) of 2 stopped responding at step 7; the last "
        "complete checkpoint is step 4"
    )
    assert len(p.stdout.splitlines()) == 2
