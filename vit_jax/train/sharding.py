"""Device mesh and shardings: data parallel over (`data`, `fsdp`); FSDP shards params along `fsdp`."""

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A 2-D mesh `data x fsdp` over `devices` (all by default); -1 takes the remaining devices.

    Axes are Auto (not Explicit, the newer `jax.make_mesh` default), so the unannotated model shards
    by propagation from the parameter and batch shardings.
    """
    devices = np.asarray(devices if devices is not None else jax.devices())
    n = devices.size
    if data == -1 and fsdp == -1:
        raise ValueError("config.mesh: at most one of data/fsdp may be -1")
    data = n // fsdp if data == -1 else data
    fsdp = n // data if fsdp == -1 else fsdp
    if data * fsdp != n:
        raise ValueError(f"config.mesh data={data} x fsdp={fsdp} does not match the {n} devices")
    return Mesh(devices.reshape(data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto,) * 2)


def fsdp_spec(shape, fsdp_size: int) -> P:
    """Shards the largest dimension divisible by `fsdp_size` along `fsdp`; small leaves replicate."""
    if fsdp_size == 1 or not shape or math.prod(shape) < 2**12:
        return P()
    dims = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in dims:
        if shape[i] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(abstract_tree, mesh: Mesh):
    """NamedShardings for a pytree of arrays/ShapeDtypeStructs under the FSDP rule."""
    size = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, size)), abstract_tree)


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs of `abstract_tree` carrying `shardings`: a restore target or a lowering
    argument laid out as the state will be."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def to_global(local_batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch → global jax.Arrays sharded over the batch axes (multi-host safe)."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
