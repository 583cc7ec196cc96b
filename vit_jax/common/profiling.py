"""Profiles: a `jax.profiler` trace of a few steps, where TensorBoard's profile plugin finds it.

`jax.profiler.start_trace(LOGDIR)` writes `LOGDIR/plugins/profile/<run>/<host>.xplane.pb`, the
layout TensorBoard's profile plugin (XProf: `pip install tensorboard-plugin-profile`, or `xprof`)
reads: `tensorboard --logdir LOGDIR`, tab "Profile" (or `xprof --logdir LOGDIR`). Every step runs
under `jax.profiler.StepTraceAnnotation(name, step_num=step)`, so the trace viewer's step row and
the overview page's step-time graph name each step by its number.

The trace starts after the device has finished everything before the first traced step (so the
trace holds no compilation or earlier steps) and stops after the last traced step's results are
ready. A URL logdir (gs://) is traced into a local temporary folder, then copied there with
`vit_jax.common.files` (the profiler writes through its own C++ file systems).
"""

import shutil
import tempfile
from typing import Callable, List, Optional

import jax

from vit_jax.common import files


class StepProfiler:
    """Traces steps `first` .. `first + steps - 1` of a loop into `logdir`; nothing when `steps` is 0
    or `logdir` None. Call it as the step: `out = profiler(step, fn, *args)` is `fn(*args)`."""

    def __init__(
        self, logdir: Optional[str], steps: int, first: int, name: str = "train",
        say: Callable[[str], None] = print,
    ):  # fmt: skip
        self.logdir, self.name, self.say = logdir, name, say
        self.first, self.last = first, first + steps - 1
        self.enabled = bool(logdir) and steps > 0
        self._local: Optional[str] = None  # where the running trace is written
        self.written: List[str] = []  # the files of the finished trace
        self._step = first - 1  # the last step run

    def __call__(self, step: int, fn: Callable, *args):
        if self.enabled and step == self.first:
            self._start(args)
        with jax.profiler.StepTraceAnnotation(self.name, step_num=step):
            out = fn(*args)
        self._step = step
        if self._local is not None and step == self.last:
            self._stop(out, step)
        return out

    def _start(self, args) -> None:
        jax.block_until_ready(args)  # the earlier steps (and compilation) stay out of the trace
        remote = files.is_url(self.logdir)
        self._local = tempfile.mkdtemp(prefix="vit_jax_profile_") if remote else self.logdir
        jax.profiler.start_trace(self._local)

    def _stop(self, out, step: int) -> None:
        jax.block_until_ready(out)
        local, self._local = self._local, None
        jax.profiler.stop_trace()
        if local == self.logdir:
            found = [
                files.join(folder, name)
                for folder in _run_folders(local)
                for name in files.listdir(folder)
            ]
        else:
            found = files.copy_tree(local, self.logdir)
            shutil.rmtree(local, ignore_errors=True)
        self.written = sorted(f for f in found if f.endswith(".xplane.pb"))
        self.say(
            f"profile of {self.name} steps {self.first}-{step}: {', '.join(self.written)} "
            f"(tensorboard --logdir {self.logdir}, tab Profile)"
        )

    def close(self) -> None:
        """Stops a trace the loop left running (it ended before the last traced step)."""
        if self._local is not None:
            self._stop(None, self._step)


def _run_folders(logdir: str) -> List[str]:
    """The newest run folder of `logdir/plugins/profile` (the one just written), as a list."""
    root = files.join(logdir, "plugins", "profile")
    runs = files.listdir(root) if files.isdir(root) else []
    return [files.join(root, runs[-1])] if runs else []
