"""Normalisation layers by name (`NORMS`): each entry builds one Flax module."""

import flax.linen as nn

from vit_jax.registry import Registry

NORMS = Registry("norm")


@NORMS.register("layernorm")
def layernorm(*, train: bool, dtype, param_dtype, name: str) -> nn.Module:
    del train
    return nn.LayerNorm(epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("rmsnorm")
def rmsnorm(*, train: bool, dtype, param_dtype, name: str) -> nn.Module:
    del train
    return nn.RMSNorm(epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("batchnorm")
def batchnorm(*, train: bool, dtype, param_dtype, name: str) -> nn.Module:
    """Statistics over batch and tokens; running averages live in the `batch_stats` collection."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )
