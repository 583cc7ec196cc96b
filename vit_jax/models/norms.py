"""Normalisation layers by name (`NORMS`): each entry builds one Flax module.

Every entry takes `train`, `dtype`, `param_dtype`, `kernels` (the kernel set's name, see
`vit_jax.kernels`) and `name`.
"""

import flax.linen as nn

from vit_jax import kernels as kernels_lib
from vit_jax.common.registry import Registry

NORMS = Registry("norm")


@NORMS.register("layernorm")
def layernorm(*, train: bool, dtype, param_dtype, kernels: str, name: str) -> nn.Module:
    """LayerNorm (epsilon 1e-6) from the kernel set: `nn.LayerNorm` or an equal custom kernel."""
    del train
    cls = kernels_lib.get(kernels).layer_norm
    return cls(epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("rmsnorm")
def rmsnorm(*, train: bool, dtype, param_dtype, kernels: str, name: str) -> nn.Module:
    del train, kernels
    return nn.RMSNorm(epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("batchnorm")
def batchnorm(*, train: bool, dtype, param_dtype, kernels: str, name: str) -> nn.Module:
    """Statistics over batch and tokens; running averages live in the `batch_stats` collection."""
    del kernels
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )
