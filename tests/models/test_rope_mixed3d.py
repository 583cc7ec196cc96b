"""rope_mixed3d: learnable mixed-frequency RoPE over (x, y, τ) (Heo et al. 2024 with a time axis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models import posemb, posemb3d, vivit

HEADS, HD = 2, 8


def _qk(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(1, n, HEADS, HD)), jnp.float32)


def _rotate(qk, angles):
    """Reference rotation (numpy): pair i = (qk[i], qk[i + hd/2]) turned by angles[..., i]."""
    half = qk.shape[-1] // 2
    a, b = qk[..., :half], qk[..., half:]
    c, s = np.cos(angles), np.sin(angles)
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def test_angles_are_the_formula_with_hand_set_frequencies():
    grid = (3, 2, 4)
    freqs = np.random.default_rng(1).normal(size=(3, HEADS, HD // 2)).astype(np.float32)
    qk = _qk(24)
    got = posemb3d.RopeMixed3D(num_heads=HEADS).apply({"params": {"freqs": freqs}}, qk, grid, 0)
    angles = np.zeros((24, HEADS, HD // 2))
    for i, (tau, y, x) in enumerate(np.ndindex(*grid)):
        angles[i] = x * freqs[0] + y * freqs[1] + tau * freqs[2]
    np.testing.assert_allclose(got, _rotate(np.asarray(qk, np.float64), angles), atol=1e-5)
    # and the norm of each head vector is kept (a rotation)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(qk, axis=-1), rtol=1e-5)


def test_scores_depend_only_on_position_differences():
    grid = (3, 3, 4)
    n = 36
    rope = posemb3d.RopeMixed3D(num_heads=HEADS)
    v = rope.init(jax.random.PRNGKey(0), _qk(n), grid, 0)
    q = jnp.tile(_qk(1, 2), (1, n, 1, 1))  # one query vector and one key vector at every position
    k = jnp.tile(_qk(1, 3), (1, n, 1, 1))
    rq, rk = rope.apply(v, q, grid, 0), rope.apply(v, k, grid, 0)
    idx = lambda tau, y, x: (tau * 3 + y) * 4 + x  # noqa: E731
    dot = lambda a, b: np.asarray(jnp.sum(rq[0, a] * rk[0, b], -1))  # noqa: E731, per head
    base = dot(idx(0, 0, 0), idx(1, 1, 2))  # offset (1, 1, 2)
    for dt, dy, dx in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1), (0, 1, 1)]:  # shift both tokens
        shifted = dot(idx(dt, dy, dx), idx(1 + dt, 1 + dy, 2 + dx))
        np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-5)
    # time matters: one frame apart is not the same score as no offset
    assert not np.allclose(dot(idx(0, 0, 0), idx(1, 0, 0)), dot(idx(0, 0, 0), idx(0, 0, 0)), 1e-3)


def test_one_frame_with_zero_time_frequencies_is_the_image_rope_mixed():
    h, w = 3, 4
    qk = _qk(1 + h * w, 4)  # one prefix token, untouched by both
    image = posemb.RopeMixed(num_heads=HEADS)
    vi = image.init(jax.random.PRNGKey(7), qk, (h, w), 1)
    video = posemb3d.RopeMixed3D(num_heads=HEADS)
    v3 = video.init(jax.random.PRNGKey(7), qk, (1, h, w), 1)
    # the same key gives rope_mixed's (f_x, f_y) init; f_t starts at the axial magnitudes
    np.testing.assert_allclose(v3["params"]["freqs"][:2], vi["params"]["freqs"], atol=1e-7)
    mag = 1.0 / 10.0 ** (np.arange(0, HD, 4) / HD)
    np.testing.assert_allclose(v3["params"]["freqs"][2], np.tile(np.r_[mag, mag], (HEADS, 1)),
                               rtol=1e-6)  # fmt: skip
    freqs = v3["params"]["freqs"].at[2].set(0.0)
    want = image.apply(vi, qk, (h, w), 1)
    np.testing.assert_allclose(video.apply({"params": {"freqs": freqs}}, qk, (1, h, w), 1), want,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(video.apply(v3, qk, (h, w), 1), want, atol=1e-6)  # 2-D grid too


def test_frequencies_are_learnable_for_every_axis():
    grid = (2, 2, 3)
    rope = posemb3d.RopeMixed3D(num_heads=HEADS)
    q, k = _qk(12, 5), _qk(12, 6)
    v = rope.init(jax.random.PRNGKey(0), q, grid, 0)

    def loss(freqs):
        p = {"params": {"freqs": freqs}}
        return jnp.sum(jnp.einsum("bnhd,bmhd->bhnm", rope.apply(p, q, grid, 0),
                                  rope.apply(p, k, grid, 0)) ** 2)  # fmt: skip

    g = np.asarray(jax.grad(loss)(v["params"]["freqs"]))
    for axis in range(3):
        assert np.abs(g[axis]).min(axis=-1).max() > 0 and np.abs(g[axis]).sum() > 1e-3


@pytest.mark.parametrize("encoder", vivit.ENCODERS)
def test_every_encoder_has_its_own_mixed_frequencies_and_resizes_in_time(encoder):
    opts = dict(patch_size=4, hidden_size=16, depth=1, mlp_dim=32, num_heads=2, tubelet_size=1,
                num_frames=2, pool="gap", posemb="rope_mixed3d", encoder=encoder)  # fmt: skip
    model = vit_jax.create_model(None, 0, model_name="vivit", attn_impl="xla", **opts)
    clips = jnp.asarray(np.random.default_rng(8).normal(size=(1, 2, 8, 8, 3)), jnp.float32)
    v = model.init(jax.random.PRNGKey(0), clips)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(v)]
    ropes = [p for p in paths if "rope" in p and "freqs" in p]
    want = {"joint": 1, "factorised_encoder": 2, "factorised_attention": 2}[encoder]
    assert len(ropes) == want, ropes  # temporal layers (or blocks) learn their own frequencies
    out = model.apply(v, clips)
    reversed_ = model.apply(v, clips[:, ::-1])  # one-frame tubelets: time order is seen
    assert not np.allclose(out, reversed_, atol=1e-5)
    longer = model.apply(v, jnp.concatenate([clips, clips], axis=1))  # 4 frames, same params
    assert longer.shape == out.shape and np.isfinite(longer).all()
