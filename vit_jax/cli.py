"""What every command line shares: one-line flag errors, and the process set-up before training.

The command lines are the top-level modules of the package (`main.py`, `predict.py`,
`data_stats.py`, `benchmark.py`) and `scripts/`; they alone set process-wide state, all of it
through `prepare_process`, and run inside the one error boundary (`vit_jax.common.errors`).
"""

import re
from typing import Callable, List

from absl import flags

from vit_jax import config as config_lib
from vit_jax.common import cpu_devices, distributed, errors, host_memory


def prepare_process(config) -> None:
    """Sets the process up for training `config`, in the order it must happen: glibc malloc (before
    JAX's threads), the CPU device split (before JAX's backend starts), `jax.distributed` (before
    any device is touched), then `auto` kernels resolved for the backend, in `config` itself (so
    `config.json` records what ran)."""
    host_memory.keep_freed_memory()  # XLA:CPU step temporaries reused, not page-faulted afresh
    cpu_devices.split_for_config(config)
    distributed.init_distributed(config.distributed, config.distributed_timeout_s)
    config_lib.resolve_kernels(config)


def _lines(text: str):
    return [line.strip() for line in text.splitlines() if line.strip()]


def _unknown_override(text: str, argv) -> str:
    """`--config.foo=1`: ml_collections raises a bare KeyError/AttributeError holding "'foo'"."""
    key = (re.findall(r"\w+", text) or ["?"])[0]
    names = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((n for n in names if key in n.split(".")[1:]), f"--config.{key}")
    hint = re.search(r'Did you mean "([^"]+)"', text)
    hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
    return f"{flag}: no config key {key!r}{hint}; every key is listed in vit_jax/config/defaults.py"


def _flag_error(error: BaseException, argv, usage: str) -> str:
    """One line for anything that failed while parsing flags and loading the config file."""
    text = str(error.args[0]) if isinstance(error, LookupError) and error.args else str(error)
    if isinstance(error, SyntaxError):
        return f"cannot load --config file {error.filename}: syntax error on line {error.lineno}"
    if isinstance(error, OSError):  # The config file is missing, a folder, unreadable.
        cause = re.search(r"\[Errno \d+\][^\n]*", text)
        cause = cause.group(0) if cause else _lines(text)[0]
        return f"cannot load the --config file: {cause}; pass --config=PATH/TO/config.py"
    if isinstance(error, ImportError):  # the config file's own import failed
        cause = _lines(text)[0] if _lines(text) else type(error).__name__
        return f"the --config file's imports failed: {cause}; fix the import (or PYTHONPATH)"
    lines = [x for x in _lines(text) if not x.startswith("Pass --help")] or [type(error).__name__]
    if "Error whilst parsing config file" in text:  # Its own error is on the last line.
        return f"in the --config file: {lines[-1]}"
    if "attribute 'get_config'" in text:
        return "the --config file must define get_config() returning an ml_collections.ConfigDict"
    if isinstance(error, (AttributeError, LookupError)):
        return _unknown_override(text, argv)
    return f"{lines[0]} ({usage})"


def flags_parser(config_flag, usage: str) -> Callable[[List[str]], List[str]]:
    """An absl `flags_parser` for `app.run` whose every error is one `error:` line (absl prints
    `FATAL ...` and ml_collections raises tracebacks, some only when the config is first used)."""

    def parse(argv):
        try:
            argv = flags.FLAGS(argv)
            if config_flag.value is not None:
                config_flag.value.get("seed")  # ml_collections defers a load error to here
        except (flags.Error, OSError, SyntaxError, ImportError, AttributeError, LookupError) as e:
            errors.fail(_flag_error(e, argv, usage))
        return argv

    return parse
