"""Train a ViT from a config file.

  python -m vit_jax.main --config=configs/quickstart.py --workdir=/tmp/run [--config.model.posemb=rope2d]

Re-running the same command on the same workdir resumes from its latest checkpoint. Errors in the
config, data or checkpoints print one line (`error: ...`) and exit with status 2.
"""

import os
import re
import sys

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "2"
)  # TensorFlow's C++ INFO lines drown the progress bar

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and logs (resumed if it exists)."
)


def _known_errors():
    """Exception types that are the user's to fix: printed as one line, no traceback."""
    from vit_jax.checkpointing import CheckpointError  # noqa: PLC0415
    from vit_jax.config_validate import ConfigError  # noqa: PLC0415
    from vit_jax.data import DataError  # noqa: PLC0415
    from vit_jax.train import NonFiniteError  # noqa: PLC0415

    return (ConfigError, DataError, CheckpointError, NonFiniteError, FileNotFoundError, ValueError)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --config=FILE --workdir=DIR")
    if not _WORKDIR.value:
        fail(
            "--workdir is required: the directory for checkpoints and logs, e.g. --workdir=/tmp/run"
        )
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
        fail(f"--workdir={_WORKDIR.value} is a file; pass a directory (it is created if missing)")
    config = _CONFIG.value
    if config is None:
        fail("--config is required, e.g. --config=configs/quickstart.py")
    from vit_jax import cpu_devices  # noqa: PLC0415
    from vit_jax.train import train_and_evaluate  # noqa: PLC0415

    cpu_devices.split_for_config(config)  # before JAX starts its backend

    try:
        result = train_and_evaluate(config, _WORKDIR.value)
    except _known_errors() as e:
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    if "top1" in result:
        print(
            f"final: eval top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  "
            f"loss {result['loss']:.4f}  on {int(result['count'])} examples",
            flush=True,
        )


_USAGE = "usage: --config=FILE --workdir=DIR [--config.KEY=VALUE ...]"


def _lines(text: str):
    return [line.strip() for line in text.splitlines() if line.strip()]


def _unknown_override(text: str, argv) -> str:
    """`--config.foo=1`: ml_collections raises a bare KeyError/AttributeError holding "'foo'"."""
    key = (re.findall(r"\w+", text) or ["?"])[0]
    names = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((n for n in names if key in n.split(".")[1:]), f"--config.{key}")
    hint = re.search(r'Did you mean "([^"]+)"', text)
    hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
    return f"{flag}: no config key {key!r}{hint}; every key is listed in vit_jax/config_defaults.py"


def _flag_error(error: BaseException, argv) -> str:
    """One line for anything that failed while parsing flags and loading the config file."""
    text = str(error.args[0]) if isinstance(error, LookupError) and error.args else str(error)
    if isinstance(error, SyntaxError):
        return f"cannot load --config file {error.filename}: syntax error on line {error.lineno}"
    if isinstance(error, OSError):  # The config file is missing, a folder, unreadable.
        cause = re.search(r"\[Errno \d+\][^\n]*", text)
        cause = cause.group(0) if cause else _lines(text)[0]
        return f"cannot load the --config file: {cause}; pass --config=PATH/TO/config.py"
    lines = [x for x in _lines(text) if not x.startswith("Pass --help")] or [type(error).__name__]
    if "Error whilst parsing config file" in text:  # Its own error is on the last line.
        return f"in the --config file: {lines[-1]}"
    if "attribute 'get_config'" in text:
        return "the --config file must define get_config() returning an ml_collections.ConfigDict"
    if isinstance(error, (AttributeError, LookupError)):
        return _unknown_override(text, argv)
    return f"{lines[0]} ({_USAGE})"


def parse_flags(argv):
    """absl's flag parsing, but every error is one `error:` line (absl prints `FATAL ...` and
    ml_collections raises tracebacks, some of them only when the config is first used)."""
    try:
        argv = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.get("seed")  # ml_collections defers a config file's load error to here
    except (flags.Error, OSError, SyntaxError, AttributeError, LookupError) as e:
        fail(_flag_error(e, argv))
    return argv


def run() -> None:
    """Entry point: parses flags (one-line errors), then trains."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
