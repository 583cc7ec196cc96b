"""The fault suite (issue 26): faults a long run meets, injected into real `python -m vit_jax.main`
runs of a few steps (configs/test_tiny.py on the digits, or on a 3-class image folder of 8x8
JPEGs). Each case checks the one `error:`/`warning:` line, that every other line is one of the
run's own (no traceback, nothing from TensorFlow, JAX, libtpu or Orbax), the exit status, and that
every checkpoint file saved before the fault is byte-identical afterwards.

The faults of tests/train/test_faults.py (two runs on a workdir, a full disk, a cut metrics row,
non-finite weights, nan_policy=skip), tests/cli/test_fault_tolerance.py (SIGTERM/SIGINT and SIGKILL
during saves), tests/cli/test_bad_input.py (a broken config.json, a corrupt train image, ...) and
tests/faults/test_multihost.py (a killed process, an unreachable coordinator) are not repeated.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.data.test_image_limit import bomb_jpeg
from tests.train.test_faults import ROOT, _copy, _digests, _run, _steps

OURS = ("step ", "final: ", "resumed from step ", "error: ", "warning: ", "SIGTERM: ")


def _only_ours(out):
    """The output's lines, after checking that each is one the run prints itself."""
    lines = [x for x in out.splitlines() if x.strip()]
    others = [x for x in lines if not x.startswith(OURS)]
    assert not others, out[-3000:]
    return lines


def _one(out, prefix):
    found = [x for x in _only_ours(out) if x.startswith(prefix)]
    assert len(found) == 1, out[-3000:]
    return found[0]


@pytest.fixture
def digits_run():
    """A finished 4-step digits run of configs/test_tiny.py (the committed fixture; copy it)."""
    return os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")


def _folder(root, classes=("a", "b", "c"), n=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, c, f"{i}.jpg"))
    return root


# ----------------------------------------------------------------- new: data faults
def test_a_changed_image_folder_is_named_not_a_head_mismatch(tmp_path):
    data = _folder(str(tmp_path / "data"))
    workdir = str(tmp_path / "run")
    flags = (f"--config.dataset=folder:{data}", "--config.total_steps=3")
    code, out = _run(workdir, *flags)
    assert code == 0, out[-3000:]
    before = _digests(workdir)
    shutil.copytree(os.path.join(data, "train", "c"), os.path.join(data, "train", "d"))
    code, out = _run(workdir, *flags[:1], "--config.total_steps=5")
    assert code == 2
    assert _one(out, "error: ") == (
        f"error: the dataset folder:{data} changed since the run in {workdir} started: classes "
        "3 -> 4 (new: d); train examples 24 -> 32; restore the data it was trained on, or use a "
        "new --workdir (--config.allow_config_change=True resumes anyway if the class count is "
        "unchanged)"
    )
    assert _digests(workdir) == before


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path):
    data = _folder(str(tmp_path / "data"))
    bomb = os.path.join(data, "train", "b", "bomb.jpg")
    with open(bomb, "wb") as f:
        f.write(bomb_jpeg())
    code, out = _run(str(tmp_path / "run"), f"--config.dataset=folder:{data}",
                     "--config.total_steps=3")  # fmt: skip
    assert code == 2
    assert _one(out, "error: ") == (
        f"error: corrupt image file {bomb} (its header claims 60000x60000 = 3,600,000,000 pixels, "
        "more than the decompression-bomb limit of 89,478,485; a real image that large needs "
        f"VIT_JAX_MAX_IMAGE_PIXELS=N) in folder:{data}; set config.skip_corrupt=True to skip such "
        "files"
    )
    assert "jpeg" not in out.lower().replace(bomb.lower(), "")  # no decoder lines


def test_a_truncated_jpeg_is_one_line_without_libjpeg_lines(tmp_path):
    """A JPEG cut short (a copy interrupted): refused before decoding, so libjpeg never prints
    its `Premature end of JPEG data` / `Improper call to JPEG library` lines."""
    data = _folder(str(tmp_path / "data"))
    cut = os.path.join(data, "train", "c", "3.jpg")
    with open(cut, "rb") as f:
        whole = f.read()
    with open(cut, "wb") as f:
        f.write(whole[: len(whole) * 2 // 3])
    code, out = _run(str(tmp_path / "run"), f"--config.dataset=folder:{data}",
                     "--config.total_steps=3")  # fmt: skip
    assert code == 2
    line = _one(out, "error: ")
    assert line == (
        f"error: corrupt image file {cut} (a truncated JPEG: the file ends before its "
        f"end-of-image marker; copy it again) in folder:{data}; set config.skip_corrupt=True to "
        "skip such files"
    )
    assert "jpeg" not in out.lower().replace(line.lower(), "")  # no decoder lines


def test_a_corrupt_test_image_fails_after_the_final_checkpoint(tmp_path):
    data = _folder(str(tmp_path / "data"))
    bad = os.path.join(data, "test", "a", "bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image at all")
    workdir = str(tmp_path / "run")
    code, out = _run(workdir, f"--config.dataset=folder:{data}", "--config.total_steps=3")
    assert code == 2
    line = _one(out, "error: ")
    assert line.startswith(f"error: corrupt image file {bad} (") and "skip_corrupt=True" in line
    assert _steps(workdir) == ([2, 3], [])  # the training is saved before the evaluation


# ----------------------------------------------------------------- new: the workdir
def test_a_read_only_workdir_is_one_line(digits_run, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (root writes through file permissions)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        workdir = _copy(digits_run, mnt)
        before = _digests(workdir)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, out = _run(workdir, "--config.total_steps=6")
        assert code == 2
        assert _one(out, "error: ") == (
            f"error: cannot write to the workdir {workdir} (a read-only file system); make it "
            "writable, or copy the run to a writable --workdir"
        )
        assert _digests(workdir) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ----------------------------------------------------------------- faults that were one line already
def _newest(workdir):
    return os.path.join(workdir, "checkpoints", str(_steps(workdir)[0][-1]))


def test_a_truncated_newest_checkpoint_is_one_line(digits_run, tmp_path):
    workdir = _copy(digits_run, tmp_path)
    newest = _newest(workdir)
    biggest = max((os.path.join(d, n) for d, _, ns in os.walk(newest) for n in ns),
                  key=os.path.getsize)  # fmt: skip
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)
    before = _digests(workdir)
    code, out = _run(workdir, "--config.total_steps=6")
    assert code == 2
    line = _one(out, "error: ")
    assert line.startswith(f"error: cannot read checkpoint {newest}: ")
    assert line.endswith(
        f"delete {newest} to resume from the checkpoint before it, or use a new --workdir"
    )
    assert _digests(workdir) == before


def test_a_changed_config_is_one_line(digits_run, tmp_path):  # broken config.json: test_bad_input
    workdir = _copy(digits_run, tmp_path)
    before = _digests(workdir)
    code, out = _run(workdir, "--config.total_steps=6", "--config.lr=0.5")
    assert code == 2
    assert _one(out, "error: ") == (
        f"error: workdir {workdir} holds a run with a different config (lr: 0.01 -> 0.5); use a "
        "new --workdir or pass --config.allow_config_change=True to resume anyway"
    )
    assert _digests(workdir) == before
