"""A failed checkpoint save as one line: which workdir and step, the cause, what to do.

Orbax writes a checkpoint from several background threads; when the disk fills (or a quota, a
permission, a remote store fails) each thread logs its own traceback, and the failure reaches the
main thread at the next save or at close. `vit_jax.train.checkpoint.Checkpointer` mutes those
thread logs (`mute_orbax_thread_errors`) and turns the main thread's exception into `message(...)`,
after removing the temporary `N.orbax-checkpoint-tmp` folders of the failed steps: the complete
checkpoints are untouched, so the same command resumes from the latest once the cause is fixed.
"""

import contextlib
import errno
import logging
import os
import re
import sys
from typing import List, Optional, Tuple

from etils import epath

from vit_jax.common import files
from vit_jax.common.errors import debugging, first_line


def mute_orbax_thread_errors() -> None:
    """Drops the ERROR records of Orbax's writer threads and of their abandoned asyncio tasks
    ("Task exception was never retrieved"), each with a traceback (~130 lines for one full disk):
    the same failure is raised in the main thread, where the Checkpointer makes it one line.
    `VIT_JAX_DEBUG=1` keeps them."""
    if debugging():
        return
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if _orbax_noise not in logger.filters:
            logger.addFilter(_orbax_noise)
    if getattr(sys.unraisablehook, "__name__", "") != _closed_loop_hook.__name__:
        _closed_loop_hook.previous = sys.unraisablehook
        sys.unraisablehook = _closed_loop_hook


def _closed_loop_hook(unraisable) -> None:
    """Drops "Event loop is closed" from TensorStore callbacks of a failed write's sibling writes
    (Orbax closed their event loop at the first failure); passes everything else on."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    _closed_loop_hook.previous(unraisable)


def _orbax_noise(record: logging.LogRecord) -> bool:
    """False (drop) for an ERROR logged by Orbax or carrying a traceback through Orbax's code."""
    orbax = f"{os.sep}orbax{os.sep}"
    if record.levelno < logging.ERROR:
        return True
    if orbax in record.pathname:
        return False
    error = record.exc_info[1] if record.exc_info else None
    tb = getattr(error, "__traceback__", None)
    while tb is not None:
        if orbax in tb.tb_frame.f_code.co_filename:
            return False
        tb = tb.tb_next
    return True


def _cause(error: BaseException) -> Tuple[str, str]:
    """(the cause in a few words, what to do) of a failed write."""
    text = str(error)
    codes = {getattr(error, "errno", None)} | {
        int(c) for c in re.findall(r"os_error_code='(\d+)'", text)
    }
    if errno.ENOSPC in codes or "No space left" in text:
        return "no space left on the device", "free space there (or use another --workdir)"
    if errno.EDQUOT in codes or "quota" in text.lower():
        return "disk quota exceeded", "free space or raise the quota (or use another --workdir)"
    if errno.EACCES in codes or "Permission denied" in text or "PERMISSION_DENIED" in text:
        return "permission denied", "make it writable (or use another --workdir)"
    return first_line(error).split(". ")[0][:300], "fix that"


def message(workdir: str, directory: str, step: Optional[int], error: BaseException):
    """The one line of a failed save in `directory`, after removing the temporary folders
    of the steps being written (the failed ones); the complete checkpoints stay as they are."""
    tmp = [n for n in _names(directory) if ".orbax-checkpoint-tmp" in n]
    for name in tmp:
        with contextlib.suppress(Exception):
            epath.Path(directory, name).rmtree()
    failed = sorted({int(n.split(".")[0]) for n in tmp if n.split(".")[0].isdigit()})
    steps = ", ".join(map(str, failed)) or (str(step) if step is not None else "?")
    done = [int(n) for n in _names(directory) if n.isdigit()]
    latest = f"latest complete: step {max(done)}" if done else "no complete checkpoint yet"
    cause, todo = _cause(error)
    return (
        f"cannot save the checkpoint of step {steps} in {workdir}: {cause}; removed its partial "
        f"folder, earlier checkpoints are intact ({latest}); {todo} and rerun the same command to "
        "resume"
    )


def _names(directory: str) -> List[str]:
    with contextlib.suppress(Exception):
        return files.listdir(directory)
    return []
