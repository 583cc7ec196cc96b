"""Remote workdirs (a URL instead of a local folder) and profiles (`config.profile_steps`).

The remote file system is `ram://` (tests/helpers/ramfs.py): TensorFlow's in-memory file system,
reached through etils.epath and tf.io.gfile exactly as gs:// is. Orbax cannot write it (TensorStore
has no kvstore for it), so `orbax_directory` maps the checkpoint folders to a local one: the test
covers every file the package itself writes and reads (config.json, metrics.jsonl, curves.png,
TensorBoard events, the profile) and that resume finds the run, not Orbax's own gs:// writer.
"""

import glob
import json
import os

import jax
import pytest

from tests.helpers import ramfs
from tests.helpers.tiny import tiny_config
from vit_jax import train as train_lib
from vit_jax.common import files
from vit_jax.train import checkpoint
from vit_jax.train.checkpoint import CheckpointError


def _digits_config(**kw):
    c = tiny_config(dataset="digits", image_size=8, batch_size=32, eval_batch_size=64, **kw)
    c.checkpoint_every = 1000
    c.eval_every = 0
    c.log_every = 1
    return c


def _train_steps(text):
    return [r["step"] for r in map(json.loads, text.splitlines()) if r["split"] == "train"]


def _steps_in_trace(xplane: bytes):
    """The step numbers of the "train" step annotations in the bytes of an .xplane.pb file."""
    profile = jax.profiler.ProfileData.from_serialized_xspace(xplane)
    return sorted(
        dict(e.stats)["step_num"]
        for plane in profile.planes
        for line in plane.lines
        for e in line.events
        if e.name == "train"
    )


def test_a_run_in_a_remote_workdir_writes_everything_there_and_resumes(tmp_path, monkeypatch):
    cwd, disk = tmp_path / "cwd", tmp_path / "orbax"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a relative "ram:" folder would land here
    monkeypatch.setattr(checkpoint, "orbax_directory", ramfs.orbax_on_disk(str(disk)))
    root = ramfs.new_root()
    workdir = f"{root}/run"
    c = _digits_config(total_steps=6, profile_steps=2)

    assert train_lib.train_and_evaluate(c, workdir, stop_at=3) == {"stopped_at": 3}
    written = ramfs.walk(workdir)
    assert {"config.json", "metrics.jsonl", "curves.png"} <= set(written), written
    assert sum(f.startswith("tb/events.out.tfevents") for f in written) == 1
    profiles = [f for f in written if f.startswith("tb/plugins/profile/")]
    assert [f.rsplit("/", 1)[-1].endswith(".xplane.pb") for f in profiles].count(True) == 1
    assert _train_steps(files.read_text(f"{workdir}/metrics.jsonl")) == [1, 2, 3]
    assert files.read_bytes(f"{workdir}/curves.png")[:4] == b"\x89PNG"
    saved = json.loads(files.read_text(f"{workdir}/config.json"))
    assert saved["total_steps"] == 6 and saved["profile_steps"] == 2
    assert not os.listdir(cwd)  # nothing local, not even an empty "ram:" folder
    ours = disk / root[len(ramfs.PREFIX) :] / "run"
    assert os.listdir(ours) == ["checkpoints"]  # only Orbax's folder is on disk
    assert checkpoint.saved_steps(f"{workdir}/checkpoints") == [3]

    result = train_lib.train_and_evaluate(c, workdir)  # the same command: resumes at step 3
    assert result["count"] == 360
    assert _train_steps(files.read_text(f"{workdir}/metrics.jsonl")) == [1, 2, 3, 4, 5, 6]
    written = ramfs.walk(workdir)
    assert sum(f.startswith("tb/events.out.tfevents") for f in written) == 2
    xplanes = sorted(f for f in written if f.endswith(".xplane.pb"))
    assert len(xplanes) == 2  # one trace per start: steps 2-3, then 5-6 (after the resume's 4)
    traced = [_steps_in_trace(files.read_bytes(f"{workdir}/{f}")) for f in xplanes]
    assert traced == [[2, 3], [5, 6]]
    assert checkpoint.saved_steps(f"{workdir}/checkpoints") == [3, 6]
    assert not os.listdir(cwd)


def test_checkpoints_need_a_local_or_gs_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in (f"{ramfs.new_root()}/run", "s3://bucket/run"):
        with pytest.raises(
            CheckpointError, match=r"Orbax writes checkpoints to local paths and gs"
        ):
            checkpoint.Checkpointer(url, 1)
    assert checkpoint.orbax_directory("gs://bucket/run") == "gs://bucket/run"
    assert checkpoint.orbax_directory("run") == str(tmp_path / "run")
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
    """The .xplane.pb of a local run with profile_steps=2."""
    workdir = str(tmp_path_factory.mktemp("profiled") / "run")
    train_lib.train_and_evaluate(_digits_config(total_steps=4, profile_steps=2), workdir)
    (xplane,) = glob.glob(f"{workdir}/tb/plugins/profile/*/*.xplane.pb")  # the plugin's layout
    return xplane


def test_profile_steps_writes_a_trace_of_the_steps_after_the_first(profiled_run):
    assert os.path.getsize(profiled_run) > 10_000
    with open(profiled_run, "rb") as f:
        assert _steps_in_trace(f.read()) == [2, 3]  # after step 1 (compilation), each step named


def test_the_profile_plugin_reads_the_trace(profiled_run):
    """XProf (tensorboard-plugin-profile's converter) turns it into the trace viewer's steps."""
    xprof = pytest.importorskip("xprof.convert.raw_to_tool_data")
    data, _ = xprof.xspace_to_tool_data([profiled_run], "trace_viewer", {})
    steps = [e["name"] for e in json.loads(data)["traceEvents"] if "step_num" in e.get("args", {})]
    assert steps == ["train 2", "train 3"]
