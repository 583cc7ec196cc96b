"""Relative position schemes (`rel`, `relbias2d`): biases against loops over the formulas, the same
bias for the same offset, every attention path equal, other resolutions, gradients reach the tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vit_jax
from vit_jax.models.relative import RelativeBias2D, RelativeEmbedding1D

TINY = dict(hidden_size=16, depth=2, mlp_dim=32, num_heads=2, kernels="stock")


def test_relbias2d_is_a_function_of_the_2d_offset_only():
    grid, heads, prefix = (2, 3), 2, 1
    module = RelativeBias2D(num_heads=heads)
    q = jnp.zeros((1, prefix + 6, heads, 4))
    v = module.init(jax.random.PRNGKey(0), q, grid, prefix)
    bias = np.asarray(module.apply(v, q, grid, prefix))[0]  # [H, T, T]
    table = np.asarray(v["params"]["bias_table"])  # [2h-1, 2w-1, H]
    pre = np.asarray(v["params"]["prefix_bias"])  # [3, H]: cls→patch, patch→cls, cls→cls
    pos = [(r, c) for r in range(2) for c in range(3)]
    for h in range(heads):
        assert bias[h, 0, 0] == pre[2, h]
        for i, (ri, ci) in enumerate(pos):
            assert bias[h, 0, 1 + i] == pre[0, h] and bias[h, 1 + i, 0] == pre[1, h]
            for j, (rj, cj) in enumerate(pos):
                assert bias[h, 1 + i, 1 + j] == table[ri - rj + 1, ci - cj + 2, h]
    # Same offset, same bias: (0,0)→(1,1) and (0,1)→(1,2) are both (−1, −1).
    assert bias[0, 1 + 0, 1 + 4] == bias[0, 1 + 1, 1 + 5]


def test_rel_is_the_vit_papers_query_times_offset_embedding():
    grid, heads, hd, prefix = (2, 2), 2, 4, 1
    module = RelativeEmbedding1D(num_heads=heads)
    q = jax.random.normal(jax.random.PRNGKey(1), (2, prefix + 4, heads, hd))
    v = module.init(jax.random.PRNGKey(0), q, grid, prefix)
    bias = np.asarray(module.apply(v, q, grid, prefix))  # [B, H, T, T]
    e = np.asarray(v["params"]["offset_embedding"])  # [2N-1, hd]
    p = np.asarray(v["params"]["prefix_embedding"])[0]
    qn = np.asarray(q)
    for b in range(2):
        for h in range(heads):
            for i in range(5):
                for j in range(5):
                    key = p if i < prefix or j < prefix else e[(i - prefix) - (j - prefix) + 3]
                    want = qn[b, i, h] @ key / np.sqrt(hd)
                    np.testing.assert_allclose(bias[b, h, i, j], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("posemb", ["rel", "relbias2d"])
def test_every_attention_path_agrees_and_other_resolutions_run(posemb):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
    outs = []
    for impl in ("naive", "xla", "manual"):
        model = vit_jax.create_model("Ti/4", 5, posemb=posemb, attn_impl=impl, **TINY)
        v = model.init(jax.random.PRNGKey(1), x)
        v["params"]["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 5))
        outs.append(np.asarray(model.apply(v, x)))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    assert model.apply(v, jnp.zeros((1, 16, 20, 3))).shape == (1, 5)  # a 4x5 grid: tables resized


@pytest.mark.parametrize("posemb", ["rel", "relbias2d"])
def test_the_tables_learn(posemb):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    model = vit_jax.create_model("Ti/4", 3, posemb=posemb, **TINY)
    v = model.init(jax.random.PRNGKey(1), x)
    v["params"]["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 3))
    loss = lambda p: jnp.sum(model.apply({"params": p}, x) ** 2)
    grads = jax.grad(loss)(v["params"])
    rel = grads["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]["rel"]
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(rel))
