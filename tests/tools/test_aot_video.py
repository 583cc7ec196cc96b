"""The AOT compile tool on a tiny vivit config: [B, T, H, W, 3] inputs, each encoder's FLOPs."""

import os

import pytest

from tests.helpers.paths import ROOT
from vit_jax.config import load_config
from vit_jax.tools import aot, flops

pytest.importorskip("libtpu", reason="libtpu not installed: pip install -e '.[test]'")

D, MLP, CLASSES, BATCH = 16, 32, 4, 8


def _config(encoder):
    c = load_config(os.path.join(ROOT, "configs", "video_digits.py"))
    c.num_classes, c.batch_size, c.eval_batch_size = CLASSES, BATCH, BATCH
    c.image_size = 8
    c.model.update(dict(hidden_size=D, mlp_dim=MLP, depth=1, num_frames=4, encoder=encoder))
    c.model.posemb = "sincos3d"
    return c


def _formula(encoder):
    """Forward FLOPs of one 4×8×8 clip, tubelets 2×4×4 (as tests/models/test_vivit)."""
    nt, h, w = 2, 2, 2
    n = nt * h * w
    embed, head = 2 * n * 2 * 4 * 4 * 3 * D, 2 * D * CLASSES
    att, ffn = flops._attention_flops, flops._mlp_flops
    return {
        "joint": embed + att(n, n, D, D) + ffn(n, D, MLP) + head,
        "factorised_attention": embed + nt * att(h * w, h * w, D, D) + h * w * att(nt, nt, D, D)
        + ffn(n, D, MLP) + head,
        "factorised_encoder": embed + nt * (att(h * w, h * w, D, D) + ffn(h * w, D, MLP))
        + att(nt, nt, D, D) + ffn(nt, D, MLP) + head,
    }[encoder]  # fmt: skip


@pytest.mark.parametrize("encoder", ["joint", "factorised_encoder", "factorised_attention"])
def test_report_has_the_clip_shape_and_each_encoders_flops(encoder):
    r = aot.compile_report(_config(encoder), "v3:2x2")
    assert r["input_shape"] == [BATCH, 4, 8, 8, 3]
    forward = _formula(encoder)
    assert r["analytic_flops_per_step"] == 3 * forward * BATCH
    assert r["train"]["analytic_flops"] == 3 * forward * BATCH
    assert r["eval"]["analytic_flops"] == pytest.approx(forward * BATCH)
    assert r["train"]["fits"] and "[8, 4, 8, 8, 3]" in aot.format_report(r)
