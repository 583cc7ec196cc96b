"""The error type users can fix, and the one boundary that prints it as one `error:` line.

Every command line runs inside `boundary()` (or `guarded()` when it returns its exit status): an
`Error`, a `ValueError` or an `OSError` becomes `error: <first line>` on stderr and exit status 2,
never a traceback. `VIT_JAX_DEBUG=1` re-raises instead, with the whole traceback.
"""

import argparse
import contextlib
import os
import re
import sys
from typing import Any, Callable, NoReturn

DEBUG_ENV = "VIT_JAX_DEBUG"


class Error(Exception):
    """A problem the user can fix (a config key, a file, a flag); its message is one line.

    The package's error types derive from it and from the builtin they refine:
    `ConfigError`, `DataError`, `CheckpointError` (ValueError), `NonFiniteError` (RuntimeError).
    """


# What a command line reports as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (Error, ValueError, OSError)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception message, without TensorFlow's "{{function_node
    ...}}" and "[Op:...]" noise; the exception's type name when the message is empty."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:.*?\].*", "", str(error))
    if isinstance(error, LookupError) and error.args:  # KeyError's str() adds quotes
        text = str(error.args[0])
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def fail(message: str) -> NoReturn:
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def boundary():
    """Turns a user error raised inside into one `error:` line and exit status 2."""
    try:
        yield
    except USER_ERRORS as e:
        if debugging():
            raise
        fail(first_line(e))


def guarded(fn: Callable[..., Any], *args, **kwargs) -> int:
    """`fn(*args, **kwargs)` inside `boundary()`; returns the exit status (0, or 2 on an error)."""
    try:
        with boundary():
            fn(*args, **kwargs)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one `error:` line (exit status 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")
