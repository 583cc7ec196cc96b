"""keep_freed_memory: a freed large block is reused without page faults (checked in subprocesses)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

SCRIPT = """
import resource, sys
import numpy as np
from vit_jax.common import host_memory
np._core.multiarray._set_madvise_hugepage(False)  # count 4 KiB pages, as XLA's buffers get
applied = host_memory.keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = np.ones(50_000_000, np.float32)  # 200 MB: glibc would mmap it (over its 32 MB ceiling)
del x
before = faults()
y = np.ones(50_000_000, np.float32)  # same size again, every page written
print(applied, faults() - before)
"""


def run(env_value):
    env = {"VIT_JAX_KEEP_FREED_MEMORY": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    applied, faults = run("1")
    assert applied
    assert faults < 1_000  # the 200 MB come back from the heap: (almost) no new pages


def test_opt_out_leaves_glibc_defaults():
    applied, faults = run("0")
    assert not applied
    assert faults > 200e6 / 4096 * 0.9  # a fresh mmap: one fault per 4 KiB page written
