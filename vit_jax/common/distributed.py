"""`jax.distributed.initialize()` for multi-host runs, and a lost process as one line.

A process-wide setting, called by the command lines before anything touches the devices. Every
timeout of JAX's coordination service is `timeout_s` (config.distributed_timeout_s): joining at
start (an unreachable coordinator), the heartbeats that find a dead or hung process, the final
shutdown barrier. When a process dies, each survivor ends within that bound with one line,

  error: process K of N stopped responding at step S; the last complete checkpoint is step C —
  start the same command on all hosts to resume

and exit status 2, instead of a traceback and JAX's shutdown: a collective that fails because
a peer is gone (gloo: "Connection closed by peer") is caught by the loop (`is_peer_failure`) and
reported by `exit_peer_lost`, which ends the process with os._exit (JAX's atexit shutdown would
wait on the dead process, then abort with the coordination-service dump).

When the coordination service reports the failure first (the coordinator, process 0, died; or a
hung process missed its heartbeats), JAX's client aborts the process with its own FATAL line and
dump, which nothing inside the process can intercept (jaxlib 0.10.2's `missed_heartbeat_callback`
crashes given a Python function): `vit_jax.common.stderr_guard` turns that into the same kind of
one line (JAX's report saved to WORKDIR/crash/process-K.log; the exit status stays JAX's, 134).
"""

import contextlib
import os
import re
import socket
import sys
import threading
import time
from typing import Optional

import jax

from vit_jax.common import files, stderr_guard
from vit_jax.common.errors import Error, debugging

ENV = ("VIT_JAX_COORDINATOR", "VIT_JAX_NUM_PROCESSES", "VIT_JAX_PROCESS_ID")
DEFAULT_TIMEOUT_S = 300
EXIT_STATUS = 2
# What a collective's or the coordination service's error says when another process is gone.
PEER_FAILURE = re.compile(
    r"Connection closed by peer|Connection reset by peer|Gloo .* failed|heartbeat|"
    r"coordination service|CoordinationService|Broken pipe|connect to all addresses",
    re.IGNORECASE,
)
_STATE = {"step": None, "checkpoints": None, "timeout_s": DEFAULT_TIMEOUT_S}
_EXITING = threading.Lock()


def init_distributed(enabled: bool, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
    """Joins the multi-host job when `enabled` (config.distributed) and not yet joined.

    Coordinator, process count and id come from the cluster environment (TPU pods, SLURM, …) or,
    for a hand-started run, from VIT_JAX_COORDINATOR / VIT_JAX_NUM_PROCESSES / VIT_JAX_PROCESS_ID.
    """
    if not enabled or jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _STATE["timeout_s"] = timeout_s
    addr = os.environ.get("VIT_JAX_COORDINATOR")
    timeouts = dict(initialization_timeout=timeout_s, heartbeat_timeout_seconds=timeout_s,
                    shutdown_timeout_seconds=timeout_s)  # fmt: skip
    try:
        if addr:
            count, index = (
                int(os.environ["VIT_JAX_NUM_PROCESSES"]),
                int(os.environ["VIT_JAX_PROCESS_ID"]),
            )
            if index != 0:  # JAX aborts the process when it cannot reach the coordinator
                _wait_for_coordinator(addr, timeout_s)
            jax.distributed.initialize(addr, count, index, **timeouts)
        else:
            jax.distributed.initialize(**timeouts)
    except (KeyError, ValueError) as e:
        raise Error(
            f"config.distributed=True but the coordinator is not known ({e}); on a cluster JAX finds "
            f"it, otherwise set {'=..., '.join(ENV)}=..."
        ) from None
    except jax.errors.JaxRuntimeError as e:
        raise Error(
            f"cannot join the multi-host run at {addr or 'the coordinator'} within "
            f"config.distributed_timeout_s={timeout_s} s ({str(e).splitlines()[0][:160]}); start "
            "the same command on every host (process 0 hosts the coordinator)"
        ) from None
    from jax.experimental import multihost_utils  # noqa: PLC0415

    from vit_jax.common import quiet  # noqa: PLC0415

    noise = (*quiet.NOISE, "[Gloo] Rank")  # gloo's "connected to N peer ranks", at its first use
    with quiet.filtered_stderr(noise, fd=1), quiet.filtered_stderr(noise, fd=2):
        multihost_utils.sync_global_devices("vit_jax: all processes joined")
    if jax.process_count() > 1 and not debugging():  # JAX's own abort as one line, too
        stderr_guard.install(jax.process_index(), jax.process_count())


def _wait_for_coordinator(addr: str, timeout_s: float) -> None:
    """Returns once `addr` (host:port) accepts a TCP connection; a one-line Error after
    `timeout_s` seconds of refused or unanswered attempts."""
    host, _, port = addr.rpartition(":")
    deadline, why = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as e:
            why = e.strerror or type(e).__name__
            time.sleep(0.5)
    raise Error(
        f"cannot reach the coordinator {addr} within config.distributed_timeout_s={timeout_s} s "
        f"({why}); start the same command on every host, process 0 (which hosts the "
        "coordinator) included, or fix VIT_JAX_COORDINATOR"
    )


def note_progress(step: int, checkpoint_dir: Optional[str] = None) -> None:
    """What the one line reports: the step being trained, where the complete checkpoints are."""
    _STATE["step"] = step
    if checkpoint_dir is not None:
        _STATE["checkpoints"] = checkpoint_dir
    stderr_guard.note_progress(step, _STATE["checkpoints"])


def is_peer_failure(error: BaseException) -> bool:
    """True for an error of a multi-process run that says another process is gone."""
    if jax.process_count() < 2:
        return False
    text = f"{error} {error.__cause__ or ''} {error.__context__ or ''}"
    return bool(PEER_FAILURE.search(text))


def _lost_process(text: str) -> Optional[int]:
    me, n = jax.process_index(), jax.process_count()
    found = re.findall(r"task[ :/]*(\d+)|heartbeats\):\s*(\d+)", text, re.IGNORECASE)
    ids = [int(a or b) for a, b in found if int(a or b) != me]
    if ids:
        return ids[0]
    return 1 - me if n == 2 else None


def _latest_checkpoint() -> str:
    directory = _STATE["checkpoints"]
    with contextlib.suppress(Exception):
        steps = [int(n) for n in files.listdir(directory) if n.isdigit()] if directory else []
        return f"step {max(steps)}" if steps else "none yet (the run starts afresh)"
    return "unknown"


def peer_lost_line(text: str) -> str:
    k = _lost_process(text)
    who = f"process {k}" if k is not None else "a process"
    step = _STATE["step"]
    at = f" at step {step}" if step is not None else " at start"
    return (
        f"{who} of {jax.process_count()} stopped responding{at}; the last complete checkpoint is "
        f"{_latest_checkpoint()} — start the same command on all hosts to resume"
    )


def exit_peer_lost(text: str) -> None:
    """Prints the one line and ends the process now (exit status 2, no atexit shutdown)."""
    _exit_with(peer_lost_line(text))


def _exit_with(line: str) -> None:
    with _EXITING:
        sys.stdout.flush()
        sys.stderr.flush()
        # one write: JAX's C++ threads may be printing their report at the same moment, and a
        # line cut by theirs would not be recognised by the stderr guard as ours
        os.write(2, f"error: {line}\n".encode())
        os._exit(EXIT_STATUS)
