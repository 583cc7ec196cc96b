"""A run prints only its own lines: TensorFlow's and libtpu's start-up chatter muted.

`quiet_process()` (called by every command line, `vit_jax/cli.py`) sets, before TensorFlow starts:
  - TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow's C++ INFO and WARNING lines, e.g. cpu_feature_guard);
  - JAX's platforms without `tpu` when this machine has no TPU device files (/dev/accel*,
    /dev/vfio/N): with libtpu installed (the `tpu`/`test` extras) JAX otherwise loads and probes it
    on every start, and libtpu prints its failed host-bounds and hostname probes (and takes
    /tmp/libtpu_lockfile). GPU plugins stay: only `tpu` is left out.
`filtered_stderr()` drops the lines TensorFlow's import writes to the stderr file descriptor itself
before its log level applies (the oneDNN notice and absl's "before absl::InitializeLog()"
preamble, twice: two copies of absl); `vit_jax.data._tf` imports TensorFlow inside it. Turning
oneDNN off (TF_ENABLE_ONEDNN_OPTS=0) would silence it too but changes the pipeline's pixels.

`VIT_JAX_DEBUG=1` keeps every line (nothing is set or filtered).
"""

import contextlib
import glob
import importlib.metadata
import os
import pkgutil
import sys
import tempfile
from typing import Iterator, List, Optional

from vit_jax.common.errors import debugging

# Lines C++ libraries print at import, whole-line substrings; anything else is passed through.
NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


def has_tpu_devices() -> bool:
    """True where TPU chips are attached: /dev/accel* (v2-v4) or VFIO groups (v5e and newer)."""
    groups = [p for p in glob.glob("/dev/vfio/*") if os.path.basename(p).isdigit()]
    return bool(glob.glob("/dev/accel*") or groups)


def _gpu_plugins() -> List[str]:
    """JAX's GPU platforms whose plugins are installed ('cuda', 'rocm'), as JAX discovers them."""
    names = [e.name for e in importlib.metadata.entry_points(group="jax_plugins")]
    with contextlib.suppress(ImportError):
        import jax_plugins  # noqa: PLC0415  (a namespace package; absent without plugins)

        names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
    found = [p for p in ("cuda", "rocm") if any(p in n for n in names)]
    return [p for p in found if p != "rocm" or os.path.exists("/dev/kfd")]


def platforms_without_tpu() -> Optional[str]:
    """The JAX_PLATFORMS value to use here, or None to leave JAX's choice alone: the user set it,
    or a TPU is attached."""
    if "JAX_PLATFORMS" in os.environ or has_tpu_devices():
        return None
    return ",".join(_gpu_plugins() + ["cpu"])


def quiet_process() -> None:
    """The process settings above; before TensorFlow is imported and before JAX's backend starts."""
    platforms = platforms_without_tpu()
    if platforms:
        os.environ["JAX_PLATFORMS"] = platforms
        if "jax" in sys.modules:  # read at import: tell the imported config too
            import jax  # noqa: PLC0415

            jax.config.update("jax_platforms", platforms)
    if not debugging():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def filtered_stderr(noise=NOISE, fd: int = 2) -> Iterator[None]:
    """Runs the block with file descriptor `fd` (2: stderr) captured, then writes back every line
    that holds none of `noise` (C++ code writes to the descriptor, past `sys.stderr`)."""
    if debugging():
        yield
        return
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(x for x in lines if not any(n in x for n in noise))
            if kept:
                stream.write(kept)
                stream.flush()
