"""JAX's abort of a multi-host process as one line: its stderr passes through a guard process.

When the coordination service reports a failure first — the coordinator (process 0) died, or a
hung process missed its heartbeats — JAX's client ends the process itself: a FATAL line from
C++ (`client.h ... Terminating process because the JAX distributed service detected fatal
errors`), then abort() and Python's faulthandler dump (about 200 lines). Nothing in the process
can intercept it (jaxlib's `missed_heartbeat_callback` crashes given a Python function), so
`install()` (called by `vit_jax.common.distributed` once a multi-process run has joined) routes the
process's stderr file descriptor through a small guard process, this file run as a script. The
guard passes every byte through as it comes (progress bars included) except:
  - from the first line of JAX's failure report on (`E.... coordination_service_agent.cc` /
    `F.... ... Terminating process`), everything goes to WORKDIR/crash/process-K.log instead;
  - the progress notes the training loop sends (`note_progress`: step and checkpoint folder, a line
    starting with MARK), which it keeps to write the one line.
When the stream ends after such a report, the guard prints

  error: the coordinator (process 0) of N stopped responding at step S; the last complete
  checkpoint is step C — start the same command on all hosts to resume (JAX's report: PATH)

(or `process K`, or `a process`, as JAX's report names it) unless the process printed its own
`error:` line first (a collective that failed because a peer is gone, `distributed.exit_peer_lost`),
which passes through. The exit status stays JAX's (134, SIGABRT). `VIT_JAX_DEBUG=1`: no guard.

This file imports only the standard library: the guard starts in well under a second.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import Optional

MARK = b"\x1evit_jax-progress "  # a control line: MARK + JSON + newline
_STATE = {"proc": None}
# The first line of JAX's failure report (absl's "Lmmdd hh:mm:ss.uuuuuu  tid file:line] ...").
_REPORT = re.compile(
    rb"^[EF]\d{4} [\d:.]+ +\d+ (coordination_service_agent\.cc|client\.h|coordination_service\.cc)"
)
_MAYBE_LOG = re.compile(rb"^[EF](\d{4} |\d{0,4}$)")  # an absl E/F line, or its start so far


def install(process_index: int, process_count: int) -> None:
    """Routes this process's stderr (fd 2) through the guard; once per process."""
    if _STATE["proc"] is not None:
        return
    read_end, write_end = os.pipe()
    original = os.dup(2)
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(process_index), str(process_count)],
        stdin=read_end, stdout=original, stderr=original,
    )  # fmt: skip
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    os.close(original)
    _STATE["proc"] = proc


def installed() -> bool:
    return _STATE["proc"] is not None


def note_progress(step: Optional[int], checkpoint_dir: Optional[str]) -> None:
    """Tells the guard the step being trained and where the complete checkpoints are."""
    if _STATE["proc"] is None:
        return
    note = json.dumps({"step": step, "checkpoints": checkpoint_dir}).encode()
    try:
        os.write(2, MARK + note + b"\n")
    except OSError:
        pass


# ------------------------------------------------------------------ the guard process (script)


def _who(report: str, count: int) -> str:
    """Whom JAX's report blames: the tasks the coordinator saw stop sending heartbeats, or the
    coordinator itself when this process's heartbeats / RPCs to it failed."""
    found = re.search(r"stopped sending heartbeats\):\s*((?:\d+[\s,]*)+)", report)
    if found:
        tasks = [int(t) for t in re.findall(r"\d+", found[1])]
        names = ", ".join(map(str, tasks))
        return f"process {names} of {count}" if len(tasks) == 1 else f"processes {names} of {count}"
    if re.search(
        r"leader task|Failed to send RPC to coordination service|Socket closed|"
        r"CoordinationService/Heartbeat", report,
    ):  # fmt: skip
        return f"the coordinator (process 0) of {count}"
    found = re.findall(r"/task:(\d+)", report)
    if found:
        return f"process {int(found[0])} of {count}"
    return f"a process of {count}"


def _latest(checkpoints: Optional[str]) -> str:
    try:
        steps = [int(n) for n in os.listdir(checkpoints) if n.isdigit()] if checkpoints else []
    except OSError:
        return "unknown"
    return f"step {max(steps)}" if steps else "none yet (the run starts afresh)"


def _report_path(checkpoints: Optional[str], index: int) -> str:
    folder = os.path.join(os.path.dirname(checkpoints.rstrip("/")), "crash") if checkpoints else ""
    try:
        if not folder or "://" in folder:
            raise OSError
        os.makedirs(folder, exist_ok=True)
    except OSError:
        folder = tempfile.gettempdir()
    return os.path.join(folder, f"process-{index}.log")


class Guard:
    """The byte stream filter (a class so tests can feed it directly)."""

    def __init__(self, out, index: int, count: int):
        self.out, self.index, self.count = out, index, count
        self.line = b""  # the current line while it might be a report's first line (held)
        self.mid = False  # inside a line that is being streamed on
        self.note = None  # inside a progress note (bytes after MARK)
        self.carry = b""  # a read's tail that may be the start of MARK
        self.report = None  # bytearray once JAX's report began
        self.own_error = False
        self.progress = {"step": None, "checkpoints": None}

    def _write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.out.flush()

    def feed(self, data: bytes) -> None:
        data, self.carry = self.carry + data, b""
        while data:
            if self.note is not None:  # a progress note runs to its newline
                cut = data.find(b"\n")
                if cut < 0:
                    self.note += data
                    return
                self._noted(self.note + data[:cut])
                self.note, data = None, data[cut + 1 :]
                continue
            mark = data.find(MARK)
            if mark == 0:
                self.note, data = b"", data[len(MARK) :]
                continue
            if mark > 0:
                text, data = data[:mark], data[mark:]
            else:  # keep back a tail that may be MARK's beginning, for the next read
                text, data = data, b""
                for k in range(min(len(MARK) - 1, len(text)), 0, -1):
                    if MARK.startswith(text[-k:]):
                        text, self.carry = text[:-k], text[-k:]
                        break
            for piece in re.split(rb"(?<=\n)", text):
                self._piece(piece)

    def _noted(self, note: bytes) -> None:
        try:
            self.progress.update(json.loads(note))
        except ValueError:
            pass

    def _piece(self, piece: bytes) -> None:
        """A piece of one line (it ends with the newline if the line ends)."""
        if not piece:
            return
        if not self.mid and not self.line and self.report is None and piece[:1] not in b"EF":
            self.own_error |= piece.startswith(b"error: ")  # the process said it itself
            self.mid = not piece.endswith(b"\n")  # an ordinary line: streamed on at once
            self._write(piece)
            return
        if self.mid:
            self.mid = not piece.endswith(b"\n")
            self._write(piece)
            return
        self.line += piece
        if self.line.endswith(b"\n"):
            line, self.line = self.line, b""
            self._line_done(line)
        elif self.report is None and not _MAYBE_LOG.match(self.line[:6]):
            self.mid, line, self.line = True, self.line, b""  # not an absl E/F line: stream it on
            self._write(line)

    def _line_done(self, line: bytes) -> None:
        if self.report is not None:
            if line.startswith(b"error: "):
                self.own_error = True
                self._write(line)
            else:
                self.report += line
        elif _REPORT.match(line):
            self.report = bytearray(line)
        else:
            self._write(line)

    def close(self) -> Optional[str]:
        """At the end of the stream: the report saved and the one line printed; returns the path."""
        if self.carry:
            self._piece(self.carry)
        if self.line:
            self._line_done(self.line)
        if self.report is None:
            return None
        path = _report_path(self.progress["checkpoints"], self.index)
        try:
            with open(path, "wb") as f:
                f.write(bytes(self.report))
        except OSError:
            path = "not saved"
        if not self.own_error:
            step = self.progress["step"]
            at = f" at step {step}" if step is not None else " at start"
            text = bytes(self.report).decode("utf-8", "replace")
            self._write(
                f"error: {_who(text, self.count)} stopped responding{at}; the last complete "
                f"checkpoint is {_latest(self.progress['checkpoints'])} — start the same command "
                f"on all hosts to resume (JAX's report: {path})\n".encode()
            )
        return path


def _main(argv) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the process decides; we follow
        signal.signal(sig, signal.SIG_IGN)
    guard = Guard(sys.stdout.buffer, int(argv[1]), int(argv[2]))
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        guard.feed(data)
    guard.close()


if __name__ == "__main__":
    _main(sys.argv)
