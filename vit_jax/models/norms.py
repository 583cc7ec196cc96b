"""Normalisation layers by name (`NORMS`): each entry builds one Flax module.

Every entry takes `train`, `dtype`, `param_dtype`, `kernels` (the kernel set's name, see
`vit_jax.kernels`), `name` and `epsilon` (`model.norm_eps`; BatchNorm keeps its own).
"""

import flax.linen as nn

from vit_jax import kernels as kernels_lib
from vit_jax.common.registry import Registry

NORMS = Registry("norm")


@NORMS.register("layernorm")
def layernorm(
    *, train: bool, dtype, param_dtype, kernels: str, name: str, epsilon: float = 1e-6
) -> nn.Module:
    """LayerNorm (epsilon 1e-6 unless `model.norm_eps` says) from the kernel set: `nn.LayerNorm` or
    an equal custom kernel."""
    del train
    cls = kernels_lib.get(kernels).layer_norm
    return cls(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("rmsnorm")
def rmsnorm(
    *, train: bool, dtype, param_dtype, kernels: str, name: str, epsilon: float = 1e-6
) -> nn.Module:
    del train, kernels
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


@NORMS.register("batchnorm")
def batchnorm(
    *, train: bool, dtype, param_dtype, kernels: str, name: str, epsilon: float = 1e-6
) -> nn.Module:
    """Statistics over batch and tokens; running averages live in the `batch_stats` collection
    (epsilon 1e-5 always: `norm_eps` is the token norms')."""
    del kernels, epsilon
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )
