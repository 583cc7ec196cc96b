"""Output heads by name (`HEADS`): each builds the final Dense, called `head` unless `name` says
otherwise (the distillation token's `head_dist`)."""

import flax.linen as nn

from vit_jax.common.registry import Registry

HEADS = Registry("head")


@HEADS.register("classification")
def classification(
    num_classes: int, *, use_bias: bool, bias_init: float, dtype, param_dtype, name: str = "head"
):
    """Zero-initialised linear classifier (ViT): logits start at `bias_init`, softmax is uniform."""
    return nn.Dense(
        num_classes,
        use_bias=use_bias,
        kernel_init=nn.initializers.zeros,
        bias_init=nn.initializers.constant(bias_init),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


@HEADS.register("regression")
def regression(
    num_classes: int, *, use_bias: bool, bias_init: float, dtype, param_dtype, name: str = "head"
):
    """`num_classes` real outputs (no softmax); LeCun-normal init so outputs vary from step 0."""
    return nn.Dense(
        num_classes,
        use_bias=use_bias,
        kernel_init=nn.initializers.lecun_normal(),
        bias_init=nn.initializers.constant(bias_init),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )
