"""Losses of model outputs against targets, by name (`config.loss`): training and evaluation."""

from typing import Callable, Dict

import jax.numpy as jnp
import optax


def softmax_xent(logits, targets):
    return optax.softmax_cross_entropy(logits, targets)


def sigmoid_xent(logits, targets):
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)


def mse(outputs, targets):
    return jnp.mean((outputs - targets) ** 2, axis=-1)


LOSSES: Dict[str, Callable] = dict(softmax_xent=softmax_xent, sigmoid_xent=sigmoid_xent, mse=mse)


def smooth(targets, amount: float):
    """Label smoothing: `(1 - a) * y + a / C`."""
    return targets * (1.0 - amount) + amount / targets.shape[-1] if amount else targets
