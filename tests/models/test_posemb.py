"""Positional-embedding schemes against closed forms and their defining properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import posemb


def test_sincos2d_matches_closed_form():
    h, w, d = 3, 5, 16
    table = posemb.sincos_2d(h, w, d)
    assert table.shape == (h * w, d)
    q = d // 4
    for y in range(h):
        for x in range(w):
            row = table[y * w + x]
            for i in range(q):
                om = 1.0 / 10000 ** (i / (q - 1))
                np.testing.assert_allclose(row[i], math.sin(x * om), atol=1e-6)
                np.testing.assert_allclose(row[q + i], math.cos(x * om), atol=1e-6)
                np.testing.assert_allclose(row[2 * q + i], math.sin(y * om), atol=1e-6)
                np.testing.assert_allclose(row[3 * q + i], math.cos(y * om), atol=1e-6)


def test_sincos1d_matches_closed_form():
    table = posemb.sincos_1d(7, 8)
    for p in range(7):
        for i in range(4):
            om = 10000 ** (-i / 4)
            np.testing.assert_allclose(table[p, i], math.sin(p * om), atol=1e-6)
            np.testing.assert_allclose(table[p, 4 + i], math.cos(p * om), atol=1e-6)


def _rope_apply(name, grid, heads=2, head_dim=8, num_prefix=0, seed=0, **options):
    module = posemb.POSEMB.get(name)(num_heads=heads, **options)
    qk = jax.random.normal(
        jax.random.PRNGKey(seed), (1, num_prefix + grid[0] * grid[1], heads, head_dim)
    )
    variables = module.init(jax.random.PRNGKey(1), qk, grid, num_prefix)
    return lambda t: module.apply(variables, t, grid, num_prefix), qk


@pytest.mark.parametrize("name", ["rope2d", "rope_mixed"])
def test_rope_preserves_norms_and_leaves_prefix(name):
    fn, qk = _rope_apply(name, (3, 4), num_prefix=1)
    out = fn(qk)
    np.testing.assert_allclose(
        jnp.linalg.norm(out, axis=-1), jnp.linalg.norm(qk, axis=-1), rtol=1e-5
    )
    np.testing.assert_array_equal(out[:, 0], qk[:, 0])  # CLS is not rotated
    assert not np.allclose(out[:, 2:], qk[:, 2:])  # patches are


COORDS = [
    {},  # index
    dict(coords="reference", ref_grid=4),  # at the reference (training) grid
    dict(coords="reference", ref_grid=(2, 3)),  # at another grid: positions are affine in index
]


@pytest.mark.parametrize("options", COORDS, ids=["index", "reference_at_ref", "reference_2x"])
@pytest.mark.parametrize("name", ["rope2d", "rope_mixed"])
def test_rope_scores_depend_only_on_relative_offset(name, options):
    grid, heads, hd = (4, 4), 2, 8
    q0 = jax.random.normal(jax.random.PRNGKey(3), (heads, hd))
    k0 = jax.random.normal(jax.random.PRNGKey(4), (heads, hd))
    n = grid[0] * grid[1]
    fn, _ = _rope_apply(name, grid, heads, hd, **options)
    q = fn(jnp.broadcast_to(q0, (1, n, heads, hd)))[0]  # same content at every position
    k = fn(jnp.broadcast_to(k0, (1, n, heads, hd)))[0]
    scores = jnp.einsum("qhd,khd->hqk", q, k)

    def idx(y, x):
        return y * grid[1] + x

    # (0,0)->(1,2) and (2,1)->(3,3) have the same offset (+1, +2): equal scores.
    np.testing.assert_allclose(
        scores[:, idx(0, 0), idx(1, 2)], scores[:, idx(2, 1), idx(3, 3)], rtol=1e-5
    )
    np.testing.assert_allclose(
        scores[:, idx(3, 3), idx(0, 1)], scores[:, idx(3, 2), idx(0, 0)], rtol=1e-5
    )
    # A different offset gives a different score.
    assert not np.allclose(scores[:, idx(0, 0), idx(1, 2)], scores[:, idx(0, 0), idx(2, 1)])


def test_rope2d_is_identity_at_origin_and_matches_formula():
    fn, qk = _rope_apply("rope2d", (2, 2), heads=1, head_dim=8)
    out = fn(qk)
    np.testing.assert_allclose(out[:, 0], qk[:, 0], atol=1e-6)  # position (0, 0)
    # Position (x=1, y=0): the first hd/4 pairs rotate by 1 * f_i, f_i = 100^(-4i/hd); y-pairs not at all.
    angles = posemb.axial_angles((2, 2), 8)
    np.testing.assert_allclose(angles[1], [1.0, 100**-0.5, 0.0, 0.0], rtol=1e-6)
    x1, x2 = qk[0, 1, 0, :4], qk[0, 1, 0, 4:]
    expect = np.concatenate(
        [
            x1 * np.cos(angles[1]) - x2 * np.sin(angles[1]),
            x1 * np.sin(angles[1]) + x2 * np.cos(angles[1]),
        ]
    )
    np.testing.assert_allclose(out[0, 1, 0], expect, rtol=1e-5, atol=1e-6)


def test_resize_grid_identity_and_smoothness():
    table = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 3))
    assert posemb.resize_grid(table, (4, 6)) is table
    yy, xx = np.mgrid[:8, :8] / 7.0
    smooth = np.stack([yy + 2 * xx, np.sin(yy)], -1).astype(np.float32)
    big = posemb.resize_grid(jnp.asarray(smooth), (15, 13))
    assert big.shape == (15, 13, 2)
    # A smooth table stays smooth: neighbouring entries differ no more than in the original.
    assert np.abs(np.diff(big, axis=0)).max() <= np.abs(np.diff(smooth, axis=0)).max() + 1e-6
    assert np.abs(np.diff(big, axis=1)).max() <= np.abs(np.diff(smooth, axis=1)).max() + 1e-6
    np.testing.assert_allclose(big[0, 0], smooth[0, 0], atol=0.05)


def test_infer_grid():
    assert posemb.infer_grid(196) == (14, 14)
    assert posemb.infer_grid(12, hint=(3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="not square"):
        posemb.infer_grid(12)


def test_learned_tables_resize_to_a_new_grid_at_call_time():
    for name in ("learn", "learn2d"):
        module = posemb.POSEMB.get(name)()
        x = jnp.zeros((1, 1 + 16, 8))
        v = module.init(jax.random.PRNGKey(0), x, (4, 4), 1)
        same = module.apply(v, x, (4, 4), 1)
        bigger = module.apply(v, jnp.zeros((1, 1 + 36, 8)), (6, 6), 1)
        assert bigger.shape == (1, 37, 8)
        # Corners of the grid keep their embedding under align-corners-free bilinear resizing
        # only approximately; the CLS slot is kept exactly.
        np.testing.assert_allclose(bigger[0, 0], same[0, 0])
        assert np.isfinite(bigger).all()


# ------------------------------------------------------------------ RoPE coordinates
@pytest.mark.parametrize("name", ["rope2d", "rope_mixed"])
def test_reference_coords_equal_index_at_the_reference_grid(name):
    index, qk = _rope_apply(name, (3, 4), num_prefix=1)
    ref, _ = _rope_apply(name, (3, 4), num_prefix=1, coords="reference", ref_grid=(3, 4))
    np.testing.assert_array_equal(ref(qk), index(qk))
    x, y = posemb.grid_positions((3, 4), "reference", (3, 4))
    np.testing.assert_array_equal(x, np.tile(np.arange(4), 3))
    np.testing.assert_array_equal(y, np.repeat(np.arange(3), 4))


def test_reference_coords_span_the_training_range_at_a_larger_grid():
    """t = index * ref / n: at 2x the grid the coordinates are 0, 0.5, ..., 3.5 (inside the [0, 4)
    of the 4x4 training grid) where index coordinates run to 7; the angles follow the formula."""
    hd, ref = 8, 4
    freqs = np.array([1.0, 100**-0.5])  # 100^(-4i/hd), i < hd/4
    for n in (4, 8, 16):
        x, y = posemb.grid_positions((n, n), "reference", ref)
        np.testing.assert_array_equal(np.unique(x), np.arange(n) * ref / n)
        np.testing.assert_array_equal(np.unique(y), np.arange(n) * ref / n)
        angles = posemb.axial_angles((n, n), hd, coords="reference", ref_grid=ref)
        np.testing.assert_allclose(angles[:, :2], np.outer(x, freqs), rtol=1e-6)
        np.testing.assert_allclose(angles[:, 2:], np.outer(y, freqs), rtol=1e-6)
        assert angles.min() == 0.0
        np.testing.assert_allclose(angles.max(), ref * (1 - 1 / n), rtol=1e-6)  # < ref
    index = posemb.axial_angles((8, 8), hd)
    assert index.max() == 7.0  # extrapolates: beyond the 3 of the training grid
    # Interpolation: the even rows/cols of the 8x8 grid sit exactly on the 4x4 training positions,
    # the odd ones halfway between.
    at1 = posemb.axial_angles((4, 4), hd).reshape(4, 4, -1)
    at2 = posemb.axial_angles((8, 8), hd, coords="reference", ref_grid=ref).reshape(8, 8, -1)
    np.testing.assert_allclose(at2[::2, ::2], at1, rtol=1e-6)
    np.testing.assert_allclose(at2[1::2, 1::2][:-1, :-1], (at1[:-1, :-1] + at1[1:, 1:]) / 2)


def test_rope_mixed_reference_coords_match_the_formula():
    fn, qk = _rope_apply("rope_mixed", (4, 6), heads=2, head_dim=8, coords="reference", ref_grid=2)
    module = posemb.POSEMB.get("rope_mixed")(num_heads=2, coords="reference", ref_grid=2)
    freqs = module.init(jax.random.PRNGKey(1), qk, (4, 6), 0)["params"]["freqs"]
    y, x = np.mgrid[:4, :6]
    x, y = x.reshape(-1) * 2 / 6, y.reshape(-1) * 2 / 4
    angles = x[:, None, None] * freqs[0] + y[:, None, None] * freqs[1]
    np.testing.assert_allclose(fn(qk), posemb.rotate_half_pairs(qk, angles[None]), rtol=1e-5)


def test_model_rope_coords_option():
    from vit_jax import models  # noqa: PLC0415

    kw = dict(hidden_size=16, depth=1, mlp_dim=16, num_heads=2, posemb="rope2d", pool="gap")
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    index = models.create_model("Ti/4", 3, **kw)
    ref = models.create_model("Ti/4", 3, rope_coords="reference", rope_ref_grid=4, **kw)
    params = index.init(jax.random.PRNGKey(1), images)["params"]
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 3))
    # At the reference grid (16 px / patch 4): identical; at 32 px: different coordinates.
    np.testing.assert_array_equal(
        ref.apply({"params": params}, images), index.apply({"params": params}, images)
    )
    big = jax.image.resize(images, (2, 32, 32, 3), "bilinear")
    assert not np.allclose(ref.apply({"params": params}, big), index.apply({"params": params}, big))
    # "index" ignores rope_ref_grid (so a sweep over rope_coords can set it for every run).
    index_too = models.create_model("Ti/4", 3, rope_ref_grid=4, **kw)
    np.testing.assert_array_equal(
        index_too.apply({"params": params}, big), index.apply({"params": params}, big)
    )
    for bad, match in [
        (dict(rope_coords="pixel"), "unknown rope_coords 'pixel'"),
        (dict(rope_coords="reference"), "needs rope_ref_grid"),
        (dict(rope_coords="reference", rope_ref_grid=0), "rope_ref_grid=0 must be a positive"),
        (dict(rope_coords="reference", rope_ref_grid=-2), "rope_ref_grid=-2"),
        (dict(rope_coords="reference", rope_ref_grid=4, posemb="learn"), "rotary scheme"),
    ]:
        with pytest.raises(ValueError, match=match) as e:
            models.create_model("Ti/4", 3, **{**kw, **bad})
        assert "\n" not in str(e.value)
