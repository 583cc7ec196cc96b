"""vit_jax.common: the one error boundary, atomic writes, tree flattening, the registry."""

import os

import ml_collections
import pytest

from vit_jax.common import errors, files, trees
from vit_jax.common.registry import Registry
from vit_jax.config import ConfigError
from vit_jax.data import DataError
from vit_jax.train import NonFiniteError
from vit_jax.train.checkpoint import CheckpointError


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("config.lr=0 must be positive"),
        DataError("no such folder\n  /data/x"),
        CheckpointError("checkpoint /w/4 does not fit"),
        NonFiniteError("non-finite loss at step 3"),
        FileNotFoundError(2, "No such file or directory"),
        ValueError(""),
    ],
)
def test_boundary_prints_one_error_line_and_exits_2(error, capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)

    def boom():
        raise error

    assert errors.guarded(boom) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert err[0] == f"error: {errors.first_line(error)}"
    assert isinstance(error, (errors.Error, ValueError, OSError))


def test_boundary_lets_bugs_through_and_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error
        errors.guarded(lambda: 1 / 0)
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        errors.guarded(lambda: (_ for _ in ()).throw(ConfigError("x")))
    assert errors.guarded(lambda: None) == 0


def test_first_line_drops_tensorflow_noise_and_keyerror_quotes():
    tf_error = ValueError("{{function_node __wrapped__}} corrupt JPEG [Op:DecodeImage] name: x")
    assert errors.first_line(tf_error) == "corrupt JPEG"
    assert errors.first_line(KeyError("no key 'a'")) == "no key 'a'"
    assert errors.first_line(RuntimeError("\n\n  second line\nthird")) == "second line"
    assert errors.first_line(OSError()) == "OSError"


def test_argument_parser_errors_are_one_line(capsys):
    parser = errors.ArgumentParser()
    parser.add_argument("--steps", type=int)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--steps=x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: argument --steps: invalid int value: 'x' (see --help)"]


def test_atomic_write_replaces_whole_files_only(tmp_path):
    path = str(tmp_path / "sub" / "result.json")
    with files.atomic_write(path) as f:
        f.write("first")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write("half of the sec")
            raise RuntimeError("killed mid-write")
    with open(path) as f:
        assert f.read() == "first"  # the old file is intact and no temporary is left
    assert os.listdir(tmp_path / "sub") == ["result.json"]
    with files.atomic_write(path, "wb") as f:
        f.write(b"second")
    with open(path, "rb") as f:
        assert f.read() == b"second"
    os.makedirs(tmp_path / "sub" / "folder")
    with pytest.raises(IsADirectoryError):  # an OSError: one `error:` line at the boundary
        with files.atomic_write(str(tmp_path / "sub" / "folder")) as f:
            f.write("x")
    assert sorted(os.listdir(tmp_path / "sub")) == ["folder", "result.json"]


def test_flatten_descends_into_dicts_and_config_dicts():
    cfg = ml_collections.ConfigDict(dict(a=1, m=dict(b=(1, 2), c=dict(d=None))))
    assert trees.flatten(cfg) == {"a": 1, "m.b": (1, 2), "m.c.d": None}
    params = {"Transformer": {"encoder_norm": {"scale": 3}}, "head": {"bias": 4}}
    assert trees.flatten(params, "/") == {"Transformer/encoder_norm/scale": 3, "head/bias": 4}


def test_registry_finds_by_name_and_lists_the_choices():
    reg = Registry("thing")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ("a",)
    with pytest.raises(ValueError, match="unknown thing 'b'; choose one of: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_a_distributed_run_without_a_coordinator_names_the_variables(monkeypatch):
    from vit_jax.common import distributed  # noqa: PLC0415

    monkeypatch.setenv("VIT_JAX_COORDINATOR", "localhost:1234")
    monkeypatch.delenv("VIT_JAX_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    with pytest.raises(errors.Error, match="VIT_JAX_COORDINATOR=..., VIT_JAX_NUM_PROCESSES"):
        distributed.init_distributed(True)
    distributed.init_distributed(False)  # a one-process run does nothing
