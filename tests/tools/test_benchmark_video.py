"""The benchmark CLI on clips: --model-name=vivit builds [B, T, H, W, 3] inputs and counts FLOPs."""

import json

import pytest

from vit_jax import benchmark
from vit_jax.tools import flops

D, MLP, CLASSES = 16, 32, 3
TINY = ["--model-name=vivit", "--variant=Ti/4", "--image-size=8", f"--num-classes={CLASSES}",
        "--batch=2", "--mode=infer", "--kernels=stock", "--attn-impl=xla",
        f"--option=hidden_size={D}", f"--option=mlp_dim={MLP}", "--option=num_heads=2",
        "--option=depth=1", "--option=pool=gap", "--option=posemb=sincos3d",
        "--option=tubelet_size=2"]  # fmt: skip


def _formula(encoder, frames):
    """Forward FLOPs of one 8×8 clip of `frames` frames, tubelets 2×4×4 (tests/models/test_vivit)."""
    nt, h, w = frames // 2, 2, 2
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


@pytest.mark.parametrize(
    "encoder, frames",
    [("joint", None), ("factorised_encoder", 6), ("factorised_attention", 8)],
)
def test_video_json_has_the_clip_shape_and_each_encoders_flops(capsys, encoder, frames):
    argv = [*TINY, f"--option=encoder={encoder}", "--option=num_frames=4", "--steps=1",
            "--warmup=0"] + ([f"--frames={frames}"] if frames else [])  # fmt: skip
    assert benchmark.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    (rec,) = [json.loads(line) for line in out if line[:1] == "{"]
    t = frames or 4  # default: the model's num_frames
    assert rec["input_shape"] == [2, t, 8, 8, 3]
    assert rec["flops_per_image"] == _formula(encoder, t)
    assert 0.9 <= rec["flops_per_image_xla"] / rec["flops_per_image"] <= 1.5


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames=0"], "error: --frames=0 must be >= 1"),
        (["--frames=5"], "error: --frames=5 is not a multiple of the tubelet depth 2"),
    ],
)
def test_bad_frames_are_one_line(capsys, flags, message):
    assert benchmark.main([*TINY, *flags, "--steps=1"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.strip().startswith(message)


def test_frames_on_an_image_family_is_one_line(capsys):
    assert benchmark.main(["--frames=4", "--image-size=8", "--steps=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --frames=4 is for --model-name=vivit (clips); drop it"
    )
