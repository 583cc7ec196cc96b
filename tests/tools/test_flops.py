"""FLOPs counted in the jaxpr (any family) against the analytic ViT count and conv formulas."""

import pytest

import vit_jax
from vit_jax.tools import flops


@pytest.mark.parametrize(
    "variant, opts",
    [
        ("Ti/16", {}),
        ("S/16", dict(scan=True)),
        ("Ti/8", dict(pool="map")),
        ("Ti/16", dict(kernels="stock")),
    ],
)
def test_jaxpr_count_agrees_with_the_analytic_vit_count(variant, opts):
    model = vit_jax.create_model(variant, 10, **opts)
    analytic = flops.vit_forward_flops(model, (64, 64))
    counted = flops.jaxpr_forward_flops(model, (64, 64))
    # the jaxpr also holds the few small dots the analytic count leaves out (< 0.5%)
    assert analytic <= counted <= 1.005 * analytic


def test_resnet_and_hybrid_counts_equal_their_convolutions_by_formula():
    r20 = vit_jax.create_model("R20", 10, model_name="resnet")
    # He et al.'s ResNet-20 at 32 px: 3x3 root 3→16 at 32², 3 stages of 3 basic units (two 3x3
    # convs each) at 32², 16², 8² with 16/32/64 channels (zero-padded shortcuts), the head.
    macs = 32 * 32 * 9 * 3 * 16
    for side, c in ((32, 16), (16, 32), (8, 64)):
        cin = c // 2 if c > 16 else 16
        macs += side * side * 9 * (cin * c + c * c)  # first unit (strided conv reads cin)
        macs += 2 * side * side * 9 * 2 * c * c  # the other two units
    macs += 64 * 10
    assert flops.forward_flops(r20, (32, 32)) == 2 * macs
    assert flops.step_flops(r20, (32, 32), "train") == 6 * macs
