"""Analytic FLOP count of a ViT: the matrix multiplications, 2 FLOPs per multiply-add.

This is the "model FLOPs" of MFU: elementwise work (norms, GELU, softmax) and the extra forward pass
of rematerialisation are left out. A training step counts 3x the forward pass (the backward pass
multiplies by the weights and by the activations). `vit_jax.benchmark` cross-checks the count
against XLA's cost analysis of the compiled step.
"""

from typing import Tuple

from vit_jax.models import VisionTransformer


def _attention_flops(queries: int, keys: int, width: int, kv_width: int) -> int:
    """q/k/v/out projections and the two attention products, for one sequence."""
    projections = 2 * queries * width * width * 2  # query and out
    projections += 2 * keys * kv_width * width * 2  # key and value
    products = 2 * queries * keys * width * 2  # q kᵀ and weights · v over all heads
    return projections + products


def _mlp_flops(tokens: int, width: int, mlp_dim: int) -> int:
    return 2 * tokens * width * mlp_dim * 2


def forward_flops(model: VisionTransformer, image_hw: Tuple[int, int], channels: int = 3) -> int:
    """Matmul FLOPs of the forward pass of one `image_hw` image through `model`."""
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


def step_flops(model: VisionTransformer, image_hw: Tuple[int, int], mode: str) -> int:
    """Model FLOPs per image of one `train` (3x forward) or `infer` (forward) step."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode={mode!r}; use 'train' or 'infer'")
    forward = forward_flops(model, image_hw)
    return 3 * forward if mode == "train" else forward
