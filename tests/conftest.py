"""Test-process set-up, before anything imports JAX.

1. One XLA compilation cache for the whole run. Most tests compile the same tiny models (and every
   CLI subprocess, resume and rerun compiles them again); without a cache, compiling is most of the
   suite's time. The cache is JAX's own persistent cache in a fresh folder per run, shared through
   the environment by the xdist workers and every subprocess they start, and removed at the end, so
   each run starts cold and nothing leaks between runs. Set JAX_COMPILATION_CACHE_DIR yourself to
   keep one between runs (it is then left in place). No size limit: with one, JAX locks the folder
   and lists all of it on every write, which made the whole suite 30% slower than no cache (1896 s
   against 1322-1484 s). Without the lock a process may read an entry another is still writing;
   JAX then warns and compiles it itself.
2. The test process is a command line too: it keeps freed host memory (as `vit_jax/cli.py` does
   for every CLI), so in-process training in the tests runs at the CLIs' speed.
"""

import os
import shutil
import tempfile

_OWN_CACHE = "VIT_JAX_TEST_OWNS_XLA_CACHE"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vit_jax_tests_xla_cache_")
    os.environ[_OWN_CACHE] = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

from vit_jax.common import host_memory  # noqa: E402  (after the cache environment)

host_memory.keep_freed_memory()


def pytest_sessionfinish(session):
    # The process that made the folder removes it (the controller, or a run without xdist); the
    # workers inherited it and end first.
    owned = os.environ.get(_OWN_CACHE)
    if (
        owned
        and not hasattr(session.config, "workerinput")
        and owned == os.environ.get("JAX_COMPILATION_CACHE_DIR")
    ):
        shutil.rmtree(owned, ignore_errors=True)
