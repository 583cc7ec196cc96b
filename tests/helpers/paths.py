"""The repository root and the environment of the tests' subprocesses."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A subprocess on the CPU, importing this checkout (and `tests.helpers`) whatever its cwd.
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
ENV.pop("XLA_FLAGS", None)
