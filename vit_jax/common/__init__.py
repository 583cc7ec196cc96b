"""Leaf utilities every package may use; imports nothing else from vit_jax.

registry.py     name → object registries (schemes, kernel sets, data sources)
errors.py       the user-facing error type and the one error boundary of the command lines
files.py        atomic file writes
trees.py        flattening nested dicts / ConfigDicts to joined keys
host_memory.py, cpu_devices.py, distributed.py, quiet.py
                process-wide settings (malloc, CPU device split, jax.distributed, muted C++ start-up
                lines): defined here, called only by the command lines before JAX starts computing
"""
