"""Few-shot linear evaluation, the ViT paper's metric (§4.1; big_vision `evaluators/fewshot_lsr.py`).

The frozen representation of k training examples per class is whitened (mean and std of those
examples), a constant feature of 100 is appended for an almost unregularised bias, and the linear
map onto targets in {−1, 1}^C is the closed-form L2-regularised least-squares solution

    W = (XᵀX + λI)⁻¹ XᵀY   (N ≥ D)      or      W = Xᵀ(XXᵀ + λI)⁻¹Y   (D > N),

computed once per sample from an eigendecomposition, so every λ costs one matrix product. The
regulariser λ is chosen on held-out examples of the train split (never the test split), then the
test accuracy of argmax(XW) is reported, averaged over `seeds` draws of the k examples.
"""

import functools
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.evaluators.base import EVALUATORS
from vit_jax.evaluators.features import FEATURE_KEYS, RepresentationEvaluator

BIAS_CONSTANT = 100.0


@functools.partial(jax.jit, static_argnums=2)
def lsr_cache(x, y, num_classes: int):
    """Whitening statistics and the eigendecomposition that solves the ridge for any λ."""
    mean = jnp.mean(x, axis=0, keepdims=True)
    std = jnp.std(x, axis=0, keepdims=True) + 1e-5
    x = jnp.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    y = 2.0 * jax.nn.one_hot(y, num_classes) - 1.0
    n, d = x.shape
    if n >= d:
        eigs, q = jnp.linalg.eigh(x.T @ x)
        lhs, rhs = q, q.T @ (x.T @ y)
    else:
        eigs, q = jnp.linalg.eigh(x @ x.T)
        lhs, rhs = x.T @ q, q.T @ y
    return dict(eigs=eigs, lhs=lhs, rhs=rhs, mean=mean, std=std)


@jax.jit
def lsr_predict(cache, x, l2):
    """argmax of the ridge solution with regulariser `l2` on features `x`."""
    x = jnp.pad((x - cache["mean"]) / cache["std"], ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    w = (cache["lhs"] / (cache["eigs"] + l2)[None, :]) @ cache["rhs"]
    return jnp.argmax(x @ w, axis=1)


def fewshot_accuracy(train_x, train_y, test_x, test_y, num_classes, shots, l2_regs, seeds,
                     holdout: int) -> Dict[str, float]:  # fmt: skip
    """{"{k}shot": mean test accuracy, "{k}shot_std", "{k}shot_l2": median chosen λ} per k.

    Per seed, each class' train examples are shuffled: the first k fit the map, the next `holdout`
    choose λ (the largest of the best on them), the test split scores it.
    """
    out = {}
    for k in shots:
        accs, chosen = [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            per_class = [rng.permutation(np.flatnonzero(train_y == c)) for c in range(num_classes)]
            fit = np.concatenate([ids[:k] for ids in per_class])
            val = np.concatenate([ids[k : k + holdout] for ids in per_class])
            cache = lsr_cache(train_x[fit], train_y[fit], num_classes)
            if len(val) and len(l2_regs) > 1:
                val_x, val_y = train_x[val], train_y[val]
                scores = [
                    np.mean(np.asarray(lsr_predict(cache, val_x, r)) == val_y) for r in l2_regs
                ]
                l2 = max(r for r, s in zip(l2_regs, scores) if s == max(scores))
            else:
                l2 = l2_regs[-1]
            accs.append(np.mean(np.asarray(lsr_predict(cache, test_x, l2)) == test_y))
            chosen.append(l2)
        out[f"{k}shot"] = float(np.mean(accs))
        out[f"{k}shot_std"] = float(np.std(accs))
        out[f"{k}shot_l2"] = float(np.median(chosen))
    return out


@EVALUATORS.register("fewshot")
class FewShot(RepresentationEvaluator):
    """Few-shot linear accuracy of the frozen representation (`1shot`, `5shot`, ...)."""

    KEYS = dict(
        FEATURE_KEYS, shots=(1, 5, 10, 25), l2_regs=tuple(2.0**e for e in range(-6, 11, 2)),
        seeds=3, holdout=10,
    )  # fmt: skip

    @classmethod
    def spec_error(cls, config, spec):
        if not spec["shots"] or any(not isinstance(k, int) or k < 1 for k in spec["shots"]):
            return f"shots={spec['shots']!r} must be positive ints, e.g. (1, 5, 10, 25)"
        if not spec["l2_regs"] or any(not r > 0 for r in spec["l2_regs"]):
            return f"l2_regs={spec['l2_regs']!r} must be positive numbers"
        if not isinstance(spec["seeds"], int) or spec["seeds"] < 1:
            return f"seeds={spec['seeds']!r} must be a positive int"
        if not isinstance(spec["holdout"], int) or spec["holdout"] < 0:
            return f"holdout={spec['holdout']!r} must be an int >= 0 (held-out examples per class)"
        return None

    @classmethod
    def metric_names(cls, spec):
        return tuple(f"{k}shot{x}" for k in spec["shots"] for x in ("", "_std", "_l2"))

    def run(self, context, variables) -> Dict[str, float]:
        train_x, train_y, test_x, test_y, classes = self.reference_and_test(context, variables)
        s = self.spec
        out = fewshot_accuracy(
            train_x, train_y, test_x, test_y, classes, tuple(s["shots"]),
            tuple(sorted(s["l2_regs"])), s["seeds"], s["holdout"],
        )  # fmt: skip
        out["count"] = float(len(test_y))
        return out
