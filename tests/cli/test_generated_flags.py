"""Generated bad flags for the two training command lines, each run as its own subprocess
(`python -m vit_jax.main`, `scripts/ablate.py`): values generated per flag kind (a path of the
wrong kind, a config file that cannot load, an override of the wrong type for each kind of config
key), each checked for the property: one `error:` line and nothing after it, exit status 2, no
traceback, and the finished run in the workdir byte-identical afterwards.

The values of config keys are generated in-process against `validate` (tests/cli/test_bad_flags.py);
here the flag parsing and the path checks run for real.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.paths import ENV, ROOT
from vit_jax import config as config_lib

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")
CONFIG = os.path.join(ROOT, "configs", "test_tiny.py")

# Bad override literals per kind of config value (the kind is read from base_config()).
BAD_LITERALS = {
    int: ("abc", "1.5"),
    float: ("x1",),
    bool: ("maybe",),
    str: ("",),  # an empty choice / name
    tuple: ("((",),
}
# One key of each kind and place (top level, nested, None-typed, tuple), so every parse path runs.
KEYS = ("total_steps", "model.depth", "lr", "keep_best", "optimizer", "model.posemb", "lr_mults")


def _kind(key):
    """The type a config key holds (a None default: its FieldReference's declared type)."""
    *parents, leaf = key.split(".")
    node = config_lib.base_config()
    for p in parents:
        node = node[p]
    declared = node.get_type(leaf)
    return next(k for k in (bool, int, float, str, tuple) if issubclass(declared, k))


# Config files that cannot load, by what is wrong with them.
BAD_CONFIG_FILES = {
    "syntax": "def get_config(:\n",
    "import": "import no_such_module_xyz\n\ndef get_config():\n    return None\n",
    "no_get_config": "X = 1\n",
}
# Placeholders: {run} the finished run's workdir (a copy), {file} a regular file, {tmp} a folder,
# {config} the test config, {bad:NAME} a file of BAD_CONFIG_FILES.
RUN = ["--config={config}", "--workdir={run}"]


def main_cases():
    """(name, argv after `python -m vit_jax.main`)."""
    cases = [
        ("workdir is a file", ["--config={config}", "--workdir={file}"]),
        ("workdir under a file", ["--config={config}", "--workdir={file}/run"]),
        ("workdir empty", ["--config={config}", "--workdir="]),
        ("config missing", ["--config=/no/such/config.py", "--workdir={run}"]),
        ("config is a folder", ["--config={tmp}", "--workdir={run}"]),
        ("config without value", ["--config", "--workdir={run}"]),
        ("unknown flag", [*RUN, "--epochs=3"]),
        ("positional argument", [*RUN, "extra"]),
    ]
    cases += [
        (f"config {name}", [f"--config={{bad:{name}}}", "--workdir={run}"])
        for name in BAD_CONFIG_FILES
    ]
    for key in KEYS:
        for literal in BAD_LITERALS[_kind(key)]:
            cases.append((f"--config.{key}={literal}", [*RUN, f"--config.{key}={literal}"]))
    return cases


def ablate_cases():
    """(name, argv after `python scripts/ablate.py`)."""
    one = [*RUN, "--sweep=seed=1"]
    return [
        ("workdir is a file", ["--config={config}", "--workdir={file}", "--sweep=seed=1"]),
        ("no sweep values", [*RUN, "--sweep=model.posemb="]),
        ("sweep not KEY=V", [*RUN, "--sweep=model.posemb"]),
        ("sweep unknown key", [*RUN, "--sweep=model.posem=learn"]),
        ("seeds 0", [*one, "--seeds=0"]),
        ("seeds text", [*one, "--seeds=two"]),
        ("eval size text", [*one, "--eval_sizes=big"]),
        ("eval size negative", [*one, "--eval_sizes=-8"]),
        ("lock under a file", [*one, "--lock={file}/lock"]),
        ("config import fails", ["--config={bad:import}", "--workdir={run}", "--sweep=seed=1"]),
    ]


def _digest(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


_ALL = [("main", *c) for c in main_cases()] + [("ablate", *c) for c in ablate_cases()]


def test_every_kind_of_key_is_generated():
    kinds = {_kind(k) for k in KEYS}
    assert kinds == set(BAD_LITERALS)
    assert len(_ALL) >= 25


@pytest.mark.parametrize("tool, name, argv", _ALL, ids=[f"{t}: {n}" for t, n, _ in _ALL])
def test_bad_flag_is_one_line(tool, name, argv, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(FIXTURE, run)
    before = _digest(run)
    paths = dict(run=run, file=str(tmp_path / "a_file"), tmp=str(tmp_path), config=CONFIG)
    open(paths["file"], "w").close()
    for bad, text in BAD_CONFIG_FILES.items():
        paths[f"bad:{bad}"] = str(tmp_path / f"{bad}.py")
        with open(paths[f"bad:{bad}"], "w") as f:
            f.write(text)
    command = (
        [sys.executable, "-m", "vit_jax.main"]
        if tool == "main"
        else [sys.executable, os.path.join(ROOT, "scripts", "ablate.py")]
    )
    for key, value in paths.items():
        argv = [a.replace(f"{{{key}}}", value) for a in argv]
    proc = subprocess.run(
        command + argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180
    )
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().endswith(errors[0])  # the last line: no usage block after it
    assert _digest(run) == before
