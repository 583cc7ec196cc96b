"""One run per workdir: an exclusive lock on `WORKDIR/run.lock`, held while a run trains.

A second run on the same workdir (a scheduler restarting a job whose first copy is still alive, the
same command started twice) would interleave its rows into `metrics.jsonl` and race the first for
the same checkpoint folders. `held(workdir)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on the lock file
and writes the holder into it (`pid N on host H, started T`); a second run fails at once with one
line naming that holder.

Stale locks never block: the kernel drops a flock when its holder dies (even by `kill -9`), so a
run whose predecessor is gone takes the lock over, with one `warning:` line naming the predecessor
(its line is still in the file; a run that ends normally empties it).

Scope, stated plainly:
  - multi-process runs: only process 0 takes the lock (the others write no shared files);
  - local workdirs only (including NFS, where Linux maps flock onto NFS byte-range locks). A URL
    workdir (gs://) is not locked: object stores have no lock primitive that frees itself when its
    holder dies, so there the scheduler must start one job per workdir;
  - re-entrant within one process (a library caller may train the same workdir twice in a row).
"""

import builtins
import contextlib
import datetime
import fcntl
import os
import socket
import sys
from typing import IO, Dict, Iterator

from vit_jax.common import files
from vit_jax.common.errors import Error

LOCK_NAME = "run.lock"
_HELD: Dict[str, IO] = {}  # this process's locks: absolute lock path -> its open file


class WorkdirInUseError(Error, RuntimeError):
    """Another live run holds the workdir's lock."""


def lock_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), LOCK_NAME)


def holder() -> str:
    """This process as the lock file names it."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()}, started {started}"


def acquire(workdir: str) -> bool:
    """Takes the lock of local `workdir` (created if missing). True if taken now; False for a URL
    or a lock this process already holds (so only the outermost `held` releases it).

    Raises:
      WorkdirInUseError (one line naming the holder) while another live process holds it.
    """
    if files.is_url(workdir):
        return False
    path = lock_path(workdir)
    if path in _HELD:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = builtins.open(path, "a+")  # never truncates: the holder's line must survive a failed try
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError (EWOULDBLOCK): held by a live process
        f.seek(0)
        who = f.read().strip() or "its pid is not written yet"
        f.close()
        raise WorkdirInUseError(
            f"{workdir} is in use by another run ({who}); stop it or use another --workdir"
        ) from None
    f.seek(0)
    stale = f.read().strip()
    if stale:
        print(
            f"warning: took over {path} from a run that is gone ({stale})",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    f.truncate(0)
    f.write(holder() + "\n")
    f.flush()
    _HELD[path] = f
    return True


def release(workdir: str) -> None:
    """Empties and unlocks `workdir`'s lock if this process holds it; nothing otherwise."""
    f = _HELD.pop(lock_path(workdir), None) if not files.is_url(workdir) else None
    if f is None:
        return
    with contextlib.suppress(OSError):  # a full disk cannot stop the unlock
        f.truncate(0)
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


@contextlib.contextmanager
def held(workdir: str, main: bool = True) -> Iterator[None]:
    """The workdir's lock for the block (`main`: this is the run's process 0; others take none)."""
    if not main:
        yield
        return
    taken = acquire(workdir)
    try:
        yield
    finally:
        if taken:
            release(workdir)


__all__ = ["LOCK_NAME", "WorkdirInUseError", "acquire", "held", "holder", "lock_path", "release"]
