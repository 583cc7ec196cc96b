"""k-nearest-neighbour accuracy of the frozen representation (DINO, Caron et al. 2021, §4.1 and
its `eval_knn.py`): cosine similarity to every train example, the k most similar vote with weight
exp(similarity / T), T = 0.07; the class with the largest vote is the prediction."""

import functools
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.evaluators.base import EVALUATORS
from vit_jax.evaluators.features import FEATURE_KEYS, RepresentationEvaluator


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_votes(train_x, train_y, test_x, *, k: int, num_classes: int, temperature: float):
    """[n_test, num_classes] weighted votes of the k nearest (cosine) train examples."""
    normed = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    sims = normed(test_x) @ normed(train_x).T
    top, idx = jax.lax.top_k(sims, k)
    weights = jnp.exp(top / temperature)
    onehot = jax.nn.one_hot(train_y[idx], num_classes)  # [n, k, C]
    return jnp.einsum("nk,nkc->nc", weights, onehot)


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes, k, temperature, chunk=1024):
    """Top-1 accuracy of the weighted k-NN vote, the test examples in chunks of `chunk`."""
    k = min(k, len(train_x))
    hits = 0
    for lo in range(0, len(test_x), chunk):
        votes = knn_votes(
            train_x, train_y, test_x[lo : lo + chunk], k=k, num_classes=num_classes,
            temperature=temperature,
        )  # fmt: skip
        hits += int(np.sum(np.asarray(jnp.argmax(votes, -1)) == test_y[lo : lo + chunk]))
    return hits / len(test_x)


@EVALUATORS.register("knn")
class KNN(RepresentationEvaluator):
    """Weighted k-NN top-1 of the frozen representation on `test_split` against `train_split`."""

    KEYS = dict(FEATURE_KEYS, k=20, temperature=0.07)

    @classmethod
    def spec_error(cls, config, spec):
        if not isinstance(spec["k"], int) or spec["k"] < 1:
            return f"k={spec['k']!r} must be a positive int"
        if not spec["temperature"] > 0:
            return f"temperature={spec['temperature']!r} must be positive"
        return None

    def run(self, context, variables) -> Dict[str, float]:
        train_x, train_y, test_x, test_y, classes = self.reference_and_test(context, variables)
        top1 = knn_accuracy(
            train_x, train_y, test_x, test_y, classes, self.spec["k"], self.spec["temperature"]
        )
        return dict(top1=top1, count=float(len(test_y)))
