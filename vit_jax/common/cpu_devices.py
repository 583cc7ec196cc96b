"""One XLA device per CPU core, so a CPU training step runs data parallel across the cores.

XLA:CPU gives a whole machine one device by default and runs one program on it: the matmuls use the
intra-op thread pool, but much of the rest (elementwise fusions, reductions, the dispatch between
ops) runs one thing at a time. Split into one device per core, jit's SPMD partitioner gives each
core its share of the global batch for the whole program and sums the gradients across devices;
the maths is the same global-batch step (losses equal to float rounding, tests/common/test_cpu_devices.py).
Measured on a 2-core AMD EPYC (docs/performance.md): the training step +6-9% median; a whole
CIFAR-10 run, whose tf.data pipeline shares the cores, gained nothing measurable, so the configs
leave it off (`config.cpu_devices=0`) and the benchmark turns it on (`--cpu-devices=-1`).

The count is fixed when JAX starts its CPU backend (`jax_num_cpu_devices`), so `split_cpu` must run
before the first JAX computation; afterwards, or when `--xla_force_host_platform_device_count` or
`jax_num_cpu_devices` was set by the user, it changes nothing. Accelerator backends are unaffected.
The CLIs (`vit_jax.main`, `scripts/ablate.py`, `vit_jax.benchmark`) call it first thing; a library
user calls `split_for_config(config)` before touching JAX.
"""

import os
from typing import Iterable

import jax

_FLAG = "xla_force_host_platform_device_count"


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose(requested: int, batch_sizes: Iterable[int], available: int) -> int:
    """Device count for `requested`: N > 0 as given, 0 one (XLA's default), -1 one per core.

    -1 takes the largest count up to `available` cores that divides every batch size, so a global
    batch always splits evenly (batch 128 on 3 cores: 2 devices).
    """
    if requested > 0:
        return requested
    if requested == 0:
        return 1
    if requested != -1:
        raise ValueError(f"cpu_devices={requested}: use -1 (one per core), 0 (one device) or N > 0")
    sizes = list(batch_sizes)
    return max(n for n in range(1, max(available, 1) + 1) if all(b % n == 0 for b in sizes))


def split_cpu(count: int) -> bool:
    """Makes the CPU backend start with `count` devices; True when this call set it."""
    if (
        count <= 1
        or _FLAG in os.environ.get("XLA_FLAGS", "")
        or jax.config.jax_num_cpu_devices >= 0
    ):
        return False
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend has started: the device count is fixed for this process
        return False
    return True


def split_for_config(config) -> int:
    """`config.cpu_devices` CPU devices for a training run; the count set, or 0 when unchanged.

    Not with `config.distributed` (each process keeps XLA's device), nor for values below -1, which
    `vit_jax.config.validate` reports.
    """
    if config.distributed or config.cpu_devices < -1:
        return 0
    micro = config.batch_size // max(config.grad_accum_steps, 1)
    eval_batch = config.eval_batch_size or config.batch_size
    count = choose(config.cpu_devices, (micro, eval_batch), cores())
    if not split_cpu(count):
        return 0
    print(f"CPU split into {count} devices (config.cpu_devices={config.cpu_devices})", flush=True)
    return count
