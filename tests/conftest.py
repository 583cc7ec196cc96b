"""The test process is a command line too: it keeps freed host memory (as `vit_jax/cli.py` does
for every CLI), so in-process training in the tests runs at the CLIs' speed."""

from vit_jax.common import host_memory

host_memory.keep_freed_memory()
