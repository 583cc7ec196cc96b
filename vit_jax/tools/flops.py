"""FLOP count of a model: the matrix multiplications and convolutions, 2 FLOPs per multiply-add.

A plain ViT (patch tokenizer) is counted analytically (`vit_forward_flops`); every other model
(ResNet, hybrid, conv tokenizer) by walking the forward pass's jaxpr and counting each
`dot_general` and `conv_general_dilated` (`jaxpr_forward_flops`, which agrees with the analytic
ViT count: tests/tools/test_flops.py).

This is the "model FLOPs" of MFU: elementwise work (norms, GELU, softmax) and the extra forward pass
of rematerialisation are left out. A training step counts 3x the forward pass (the backward pass
multiplies by the weights and by the activations). `vit_jax.benchmark` cross-checks the count
against XLA's cost analysis of the compiled step.
"""

import math
from typing import Tuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from vit_jax.models import VisionTransformer


def _attention_flops(queries: int, keys: int, width: int, kv_width: int) -> int:
    """q/k/v/out projections and the two attention products, for one sequence."""
    projections = 2 * queries * width * width * 2  # query and out
    projections += 2 * keys * kv_width * width * 2  # key and value
    products = 2 * queries * keys * width * 2  # q kᵀ and weights · v over all heads
    return projections + products


def _mlp_flops(tokens: int, width: int, mlp_dim: int) -> int:
    return 2 * tokens * width * mlp_dim * 2


def forward_flops(model, image_hw: Tuple[int, int], channels: int = 3) -> int:
    """Matmul and convolution FLOPs of the forward pass of one `image_hw` image through `model`."""
    plain = getattr(model, "tokenizer", "patch") == "patch" and not getattr(
        model, "distill_token", 0
    )
    if type(model) is VisionTransformer and plain:
        return vit_forward_flops(model, image_hw, channels)
    return jaxpr_forward_flops(model, image_hw, channels)


def _eqn_flops(eqn) -> int:
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        k = math.prod(lhs[d] for d in lhs_contract)
        return 2 * math.prod(eqn.outvars[0].aval.shape) * k
    if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        per_output = math.prod(rhs) // out_features  # (in / groups) · kernel window
        return 2 * math.prod(eqn.outvars[0].aval.shape) * per_output
    return 0


def _jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    total += times * _jaxpr_flops(sub.jaxpr)
                elif isinstance(sub, jex_core.Jaxpr):
                    total += times * _jaxpr_flops(sub)
    return total


def jaxpr_forward_flops(model, image_hw: Tuple[int, int], channels: int = 3) -> int:
    """`forward_flops` of any Flax model, counted in its jaxpr (one image, eval mode)."""
    images = jnp.zeros((1, *image_hw, channels), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images)
    return _jaxpr_flops(jaxpr.jaxpr)


def vit_forward_flops(model: VisionTransformer, image_hw: Tuple[int, int], channels: int = 3):
    """Matmul FLOPs of the forward pass of one `image_hw` image through a ViT (analytic)."""
    (ph, pw), d = model.patch_size, model.hidden_size
    patches = (image_hw[0] // ph) * (image_hw[1] // pw)
    tokens = patches + model.num_prefix
    flops = 2 * patches * ph * pw * channels * d  # patch embedding
    block = _attention_flops(tokens, tokens, d, d) + _mlp_flops(tokens, d, model.mlp_dim)
    flops += model.depth * block
    if model.pool == "map":  # one learned probe attends over all tokens, then an MLP
        flops += _attention_flops(1, tokens, d, d) + _mlp_flops(1, d, model.mlp_dim)
    features = d
    if model.representation_size:
        flops += 2 * d * model.representation_size
        features = model.representation_size
    if model.num_classes:
        tokens_out = tokens if model.pool == "none" else 1
        flops += 2 * tokens_out * features * model.num_classes
    return flops


def step_flops(model, image_hw: Tuple[int, int], mode: str) -> int:
    """Model FLOPs per image of one `train` (3x forward) or `infer` (forward) step."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode={mode!r}; use 'train' or 'infer'")
    forward = forward_flops(model, image_hw)
    return 3 * forward if mode == "train" else forward
