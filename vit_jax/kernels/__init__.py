"""Hand-written kernels and the one place that chooses them.

A model's `kernels` option names a kernel set; its `attn_impl` option names the attention path.
Both may be `auto`, which `resolve` turns into a concrete name from the backend: once, in the
command line (so `config.json` records what ran) or in `vit_jax.create_model` for library users.
The model itself never looks at the backend, so its traced program depends only on its options.

Kernel sets (same values up to float rounding; tests/kernels/ compare them):
  stock: the Flax/JAX ops (`nn.LayerNorm`, `lax.dot_general`, `jax.nn.gelu`).
  cpu:   custom-VJP kernels written and measured for XLA:CPU (docs/performance.md): `layernorm.py`
         (reductions as matmuls, +2-4% train step), `dense.py` (weight gradient as one 2-D matmul,
         +2-5%), `gelu.py` (exact GELU with a one-pass backward, as fast as tanh GELU).
`auto` is `cpu` on CPU and `stock` on GPU and TPU: the custom kernels were never measured there
(the H200 numbers in docs/performance.md predate them).

Attention (`attn_impl`): `auto` is `manual` on CPU (`attention.py`, ~5% faster than XLA's on 2
cores), `cudnn` on GPU (H200, B/16 bf16 training: 3,314 vs 2,592 img/s with XLA), `xla` on TPU.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax

from vit_jax.common.registry import Registry
from vit_jax.kernels.attention import manual_attention
from vit_jax.kernels.dense import dense_dot_general
from vit_jax.kernels.gelu import gelu_exact
from vit_jax.kernels.layernorm import LayerNorm, layer_norm

ATTN_IMPLS = ("auto", "xla", "cudnn", "manual", "naive")
_AUTO_KERNELS = {"cpu": "cpu"}  # backend -> kernel set; any other backend: "stock"
_AUTO_ATTENTION = {"cpu": "manual", "gpu": "cudnn"}  # any other backend: "xla"


@dataclasses.dataclass(frozen=True)
class KernelSet:
    """The ops a model's layers call.

    Attributes:
      dot_general: contraction of `nn.Dense`/`nn.DenseGeneral`; None is `lax.dot_general`.
      gelu_exact: x·Φ(x) with the erf form of Φ.
      layer_norm: a module class with `nn.LayerNorm`'s parameters and arguments.
    """

    dot_general: Optional[Callable[..., Any]]
    gelu_exact: Callable[[Any], Any]
    layer_norm: Callable[..., nn.Module]


KERNELS = Registry("kernels")
KERNELS.register("stock")(
    KernelSet(None, functools.partial(jax.nn.gelu, approximate=False), nn.LayerNorm)
)
KERNELS.register("cpu")(KernelSet(dense_dot_general, gelu_exact, LayerNorm))


def get(name: str) -> KernelSet:
    """The kernel set `name` ("stock" or "cpu"); `auto` must have been resolved before."""
    if name == "auto":
        raise ValueError(
            "kernels='auto' reached the model unresolved; build models with vit_jax.create_model "
            "or resolve it with vit_jax.kernels.resolve"
        )
    return KERNELS.get(name)


def resolve(kernels: str = "auto", attn_impl: str = "auto", backend: str = None) -> Tuple[str, str]:
    """Concrete (kernels, attn_impl) for `backend` (default: JAX's); explicit names pass through.

    Raises:
      ValueError: `attn_impl="cudnn"` on a backend other than a GPU (cuDNN is NVIDIA's library).
    """
    if "auto" in (kernels, attn_impl) or attn_impl == "cudnn":
        backend = backend or jax.default_backend()
    if attn_impl == "cudnn" and backend != "gpu":
        raise ValueError(
            f"attn_impl='cudnn' needs an NVIDIA GPU, and JAX's backend here is {backend!r}; "
            "use attn_impl='auto' (or xla)"
        )
    if kernels == "auto":
        kernels = _AUTO_KERNELS.get(backend, "stock")
    if attn_impl == "auto":
        attn_impl = _AUTO_ATTENTION.get(backend, "xla")
    return kernels, attn_impl


__all__ = [
    "ATTN_IMPLS", "KERNELS", "KernelSet", "LayerNorm", "dense_dot_general", "gelu_exact", "get",
    "layer_norm", "manual_attention", "resolve",
]  # fmt: skip
