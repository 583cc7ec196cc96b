"""The path library (vit_jax/common/files.py) on the local file system and on a URL scheme."""

import io
import os

import pytest

from tests.helpers import ramfs
from vit_jax.common import files
from vit_jax.common.errors import Error


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path, monkeypatch):
    """A fresh folder: local, or on the in-memory ram:// file system (seen from an empty cwd)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield str(tmp_path / "root") if request.param == "local" else ramfs.new_root()
    assert not os.listdir(cwd)  # nothing lands in a local folder named after the scheme


def test_write_read_append_list(root):
    run = files.join(root, "run")
    files.write_text(files.join(run, "config.json"), "{}\n")  # parent folders are created
    files.write_text(files.join(run, "config.json"), '{"a": 1}\n')  # replaced, not appended
    files.append_text(files.join(run, "metrics.jsonl"), "1\n")
    files.append_text(files.join(run, "metrics.jsonl"), "2\n")
    files.write_bytes(files.join(run, "tb", "x.bin"), b"\x00\x01")
    assert files.read_text(files.join(run, "config.json")) == '{"a": 1}\n'
    assert files.read_text(files.join(run, "metrics.jsonl")) == "1\n2\n"
    assert files.read_bytes(files.join(run, "tb", "x.bin")) == b"\x00\x01"
    assert files.listdir(run) == ["config.json", "metrics.jsonl", "tb"]
    assert files.isdir(run) and files.isdir(files.join(run, "tb"))
    assert files.isfile(files.join(run, "config.json")) and not files.isfile(run)
    assert not files.exists(files.join(run, "nope"))
    files.makedirs(files.join(run, "a", "b"))
    files.makedirs(files.join(run, "a", "b"))  # exists: nothing
    assert files.isdir(files.join(run, "a", "b"))
    files.remove(files.join(run, "tb", "x.bin"))
    assert files.listdir(files.join(run, "tb")) == []


def test_a_failed_atomic_write_keeps_the_old_file(root):
    path = files.join(root, "result.json")
    files.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write("half")
            raise RuntimeError
    assert files.read_text(path) == "old"
    assert files.listdir(root) == ["result.json"]  # no temporary left behind


def test_copy_tree_and_figures(root, tmp_path):
    src = tmp_path / "src"
    (src / "plugins" / "profile" / "r").mkdir(parents=True)
    (src / "plugins" / "profile" / "r" / "h.xplane.pb").write_bytes(b"xp")
    (src / "top.txt").write_text("t")
    out = files.copy_tree(str(src), files.join(root, "tb"))
    assert sorted(out) == [
        files.join(root, "tb", "plugins", "profile", "r", "h.xplane.pb"),
        files.join(root, "tb", "top.txt"),
    ]
    assert files.read_bytes(out[0] if out[0].endswith(".pb") else out[1]) == b"xp"

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    files.write_figure(fig, files.join(root, "curves.png"), dpi=50)
    direct = io.BytesIO()
    fig.savefig(direct, format="png", dpi=50)
    plt.close(fig)
    png = files.read_bytes(files.join(root, "curves.png"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == direct.getvalue()


def test_local_figure_bytes_equal_savefig_to_a_path(tmp_path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots()
    ax.plot([3, 1, 2])
    fig.savefig(tmp_path / "direct.png", dpi=60)
    files.write_figure(fig, str(tmp_path / "ours.png"), dpi=60)
    plt.close(fig)
    assert (tmp_path / "ours.png").read_bytes() == (tmp_path / "direct.png").read_bytes()


def test_url_helpers():
    assert files.is_url("gs://b/run") and files.is_url("ram://x") and not files.is_url("/tmp/run")
    assert not files.is_url("run/gs://x") and files.scheme("gs://b/x") == "gs"
    assert files.scheme("/tmp") == ""
    assert files.join("gs://b/run", "tb", "x") == "gs://b/run/tb/x"
    assert files.dirname("gs://b/run/config.json") == "gs://b/run"
    assert files.dirname("gs://b/run") == "gs://b" and files.dirname("gs://b") == "gs://b"
    assert files.absolute("gs://b/run") == "gs://b/run"
    assert files.absolute("run") == os.path.abspath("run")


def test_check_output_path_on_a_url(root):
    files.write_text(files.join(root, "f"), "x")
    files.check_output_path(files.join(root, "new"), "--workdir", folder=True)
    files.check_output_path(files.join(root, "f"), "--export_npz")
    with pytest.raises(Error, match="is a file; give a folder"):
        files.check_output_path(files.join(root, "f"), "--workdir", folder=True)
    with pytest.raises(Error, match="is a folder; give a file path"):
        files.check_output_path(root, "--export_npz")
