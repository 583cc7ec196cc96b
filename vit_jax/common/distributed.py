"""`jax.distributed.initialize()` for multi-host runs: a process-wide setting, called by the
command lines before anything touches the devices."""

import os

import jax

from vit_jax.common.errors import Error

ENV = ("VIT_JAX_COORDINATOR", "VIT_JAX_NUM_PROCESSES", "VIT_JAX_PROCESS_ID")


def init_distributed(enabled: bool) -> None:
    """Joins the multi-host job when `enabled` (config.distributed) and not yet joined.

    Coordinator, process count and id come from the cluster environment (TPU pods, SLURM, …) or,
    for a hand-started run, from VIT_JAX_COORDINATOR / VIT_JAX_NUM_PROCESSES / VIT_JAX_PROCESS_ID.
    """
    if not enabled or jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    addr = os.environ.get("VIT_JAX_COORDINATOR")
    try:
        if addr:
            count, index = (
                int(os.environ["VIT_JAX_NUM_PROCESSES"]),
                int(os.environ["VIT_JAX_PROCESS_ID"]),
            )
            jax.distributed.initialize(addr, count, index)
        else:
            jax.distributed.initialize()
    except (KeyError, ValueError) as e:
        raise Error(
            f"config.distributed=True but the coordinator is not known ({e}); on a cluster JAX finds "
            f"it, otherwise set {'=..., '.join(ENV)}=..."
        ) from None
