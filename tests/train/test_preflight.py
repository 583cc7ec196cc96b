"""Start-of-run checks (issue 26): an unwritable workdir, a changed dataset, too little disk space."""

import collections
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.data.core import DatasetInfo
from vit_jax.train import preflight

Config = collections.namedtuple("Config", "dataset")


def _facts(names, n):
    return preflight.facts(Config("folder:/data/x"), DatasetInfo(n, len(names), tuple(names)))


def test_a_changed_dataset_is_named(tmp_path):
    workdir = str(tmp_path)
    old = _facts(["a", "b", "c"], 24)
    assert preflight.check_dataset(workdir, old, resuming=False, allow_change=False)
    preflight.write_facts(workdir, old)
    assert json.load(open(tmp_path / preflight.FACTS_FILE)) == {
        "dataset": "folder:/data/x", "num_classes": 3, "class_names": ["a", "b", "c"],
        "train_examples": 24,
    }  # fmt: skip
    assert not preflight.check_dataset(workdir, old, resuming=True, allow_change=False)
    new = _facts(["a", "b", "c", "d"], 32)
    with pytest.raises(preflight.DatasetChangedError) as e:
        preflight.check_dataset(workdir, new, resuming=True, allow_change=False)
    assert str(e.value) == (
        f"the dataset folder:/data/x changed since the run in {workdir} started: classes 3 -> 4 "
        "(new: d); train examples 24 -> 32; restore the data it was trained on, or use a new "
        "--workdir (--config.allow_config_change=True resumes anyway if the class count is "
        "unchanged)"
    )
    with pytest.raises(preflight.DatasetChangedError, match=r"classes 3 -> 3 \(new: z, gone: c\)"):
        preflight.check_dataset(workdir, _facts(["a", "b", "z"], 24), True, False)
    with pytest.raises(preflight.DatasetChangedError, match=r": train examples 24 -> 23; "):
        preflight.check_dataset(workdir, _facts(["a", "b", "c"], 23), True, False)
    assert preflight.check_dataset(workdir, new, resuming=True, allow_change=True)  # rewrite


def test_free_space_warning_counts_keep_plus_one_checkpoints(tmp_path, monkeypatch):
    state = {"params": jnp.zeros((1000,), jnp.float32), "step": jnp.zeros((), jnp.int32)}
    abstract = jax.eval_shape(lambda: state)
    one = preflight.state_bytes(abstract)
    assert one == 1000 * 4 + 4  # every array's bytes
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(0, 0, 3 * one - 1))
    said = []
    line = preflight.warn_free_space(str(tmp_path), abstract, keep=2, say=said.append)
    assert said == [line] and line == (
        f"warning: {tmp_path} has 12.0 kB free, less than the 12.0 kB that keep_checkpoints=2 "
        "needs (3 checkpoints of ~4.0 kB, one written before the oldest is deleted); a save "
        "will fail when the disk fills: free space or lower keep_checkpoints"
    )
    assert (
        preflight.warn_free_space(str(tmp_path), abstract, keep=2, existing=1, say=said.append)
        is None
    )
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(0, 0, 3 * one))
    assert preflight.warn_free_space(str(tmp_path), abstract, keep=2, say=said.append) is None
    assert preflight.warn_free_space("gs://b/run", abstract, keep=2, say=said.append) is None
    assert len(said) == 1


def test_an_unwritable_workdir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a real read-only mount
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)]
        ).returncode:
            pytest.skip("cannot mount a tmpfs here")
        expected = "a read-only file system"
    else:
        ro.chmod(0o555)
        expected = "permission denied"
    try:
        with pytest.raises(preflight.WorkdirError) as e:
            preflight.check_writable(str(ro / "run"))
        assert str(e.value) == (
            f"cannot write to the workdir {ro / 'run'} ({expected}); make it writable, or copy "
            "the run to a writable --workdir"
        )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
        ro.chmod(0o755)
    preflight.check_writable(str(tmp_path / "fine"))
    assert os.listdir(tmp_path / "fine") == []  # the probe is removed
    np.testing.assert_equal(preflight.check_writable("gs://bucket/run"), None)
