"""Quiet by default (issue 26): TensorFlow's import lines filtered, libtpu never probed without a TPU,
`VIT_JAX_DEBUG=1` keeps everything."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT
from vit_jax.common import quiet

_PROBE = (
    "import sys; from vit_jax.common import quiet\n"
    "if sys.argv[1] == 'quiet': quiet.quiet_process()\n"
    "import jax; jax.devices(); from jax._src import xla_bridge as xb\n"
    "print(jax.config.jax_platforms, sorted(xb.backends()), 'tpu' in xb._backend_errors)\n"
)


def _probe(mode):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    p = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT, env=dict(env, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()


@pytest.mark.skipif(quiet.has_tpu_devices(), reason="a TPU is attached: JAX should probe it")
def test_without_tpu_devices_jax_never_tries_libtpu(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert quiet.platforms_without_tpu().split(",")[-1] == "cpu"  # GPU plugins, if any, stay
    platforms, backends, tried_tpu = _probe("quiet")
    assert "tpu" not in platforms and "cpu" in backends and tried_tpu == "False"
    if importlib.util.find_spec("libtpu") is not None:  # the reference: JAX alone loads libtpu
        assert _probe("plain")[-1] == "True"


def test_platforms_left_alone_when_set_or_a_tpu_is_attached(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert quiet.platforms_without_tpu() is None
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(quiet.glob, "glob", lambda p: ["/dev/vfio/0"] if "vfio" in p else [])
    assert quiet.has_tpu_devices() and quiet.platforms_without_tpu() is None
    monkeypatch.setattr(quiet.glob, "glob", lambda p: ["/dev/vfio/vfio"] if "vfio" in p else [])
    assert not quiet.has_tpu_devices()  # the VFIO control node alone is no TPU


def test_filtered_stderr_drops_only_the_noise(capfd, monkeypatch):
    monkeypatch.delenv("VIT_JAX_DEBUG", raising=False)
    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1 1 port.cc:153] oneDNN custom operations are on. You may see ...\n"
    )
    with quiet.filtered_stderr():
        os.write(2, noise + b"a real warning\n" + noise)
        print("to stdout")
    out, err = capfd.readouterr()
    assert err == "a real warning\n" and out == "to stdout\n"
    monkeypatch.setenv("VIT_JAX_DEBUG", "1")
    with quiet.filtered_stderr():
        os.write(2, noise)
    assert capfd.readouterr().err == noise.decode()


def test_importing_tensorflow_prints_nothing():
    code = "import vit_jax.data._tf"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)  # fmt: skip
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "", p.stderr
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT, VIT_JAX_DEBUG="1"), timeout=120)  # fmt: skip
    assert "oneDNN custom operations are on" in p.stderr  # the reference: what is filtered
