"""vit_jax.common.cpu_devices: the device count chosen, set before JAX starts, and the same training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.paths import ROOT  # noqa: E402
from vit_jax.common import cpu_devices

ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
ENV.pop("XLA_FLAGS", None)


@pytest.mark.parametrize(
    "requested, batches, cores, expected",
    [
        (-1, (128, 500), 2, 2),
        (-1, (128, 500), 3, 2),  # 3 does not divide 128
        (-1, (96, 120), 8, 8),
        (-1, (96, 120), 16, 12),
        (-1, (33,), 2, 1),
        (0, (128,), 8, 1),
        (3, (128,), 2, 3),  # as given; validation reports a batch it does not divide
    ],
)
def test_choose(requested, batches, cores, expected):
    assert cpu_devices.choose(requested, batches, cores) == expected


def test_choose_rejects_values_below_minus_one():
    with pytest.raises(ValueError, match=r"cpu_devices=-2: use -1 \(one per core\)"):
        cpu_devices.choose(-2, (128,), 2)


def _python(code, **env):
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=dict(ENV, **env), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_split_cpu_before_jax_starts_and_never_after():
    code = (
        "import jax; from vit_jax.common import cpu_devices as c; "
        "a = c.split_cpu(3); n = jax.device_count(); b = c.split_cpu(2); "
        "print(a, n, b, jax.device_count())"
    )
    assert _python(code) == ["True", "3", "False", "3"]


def test_split_cpu_leaves_a_device_count_set_by_the_user():
    code = "import jax; from vit_jax.common import cpu_devices as c; "
    code += "print(c.split_cpu(2), jax.device_count())"
    flags = "--xla_force_host_platform_device_count=4"
    assert _python(code, XLA_FLAGS=flags) == ["False", "4"]


def _train(workdir, *flags):
    cmd = [
        sys.executable, "-m", "vit_jax.main", f"--config={ROOT}/configs/test_tiny.py",
        f"--workdir={workdir}", "--config.checkpoint_every=0", *flags,
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return out.stdout, rows


def test_training_split_over_cpu_devices_equals_one_device(tmp_path):
    """The CLI with config.cpu_devices=2 trains the same global-batch steps as one device."""
    out1, rows1 = _train(tmp_path / "one")
    out2, rows2 = _train(tmp_path / "two", "--config.cpu_devices=2")
    assert "CPU split into 2 devices" in out2 and "CPU split" not in out1
    loss1 = [r["loss"] for r in rows1 if r["split"] == "train"]
    loss2 = [r["loss"] for r in rows2 if r["split"] == "train"]
    assert len(loss1) == len(loss2) == 16
    np.testing.assert_allclose(loss2, loss1, rtol=1e-4)
    eval1, eval2 = [[r for r in rows if r["split"] != "train"][-1] for rows in (rows1, rows2)]
    assert eval1["count"] == eval2["count"] == 360
    np.testing.assert_allclose(eval2["top1"], eval1["top1"], atol=1 / 360)


def test_ab_script_times_one_and_two_devices():
    cmd = [
        sys.executable, "scripts/bench_cpu_devices.py", "--devices=2", "--variant=Ti/4",
        "--image-size=16", "--num-classes=10", "--batch=8", "--option=depth=1", "--steps=2",
        "--warmup=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert all(float(line.split()[-2]) > 0 for line in lines)
