"""Learning-rate schedules, optimizers and the weight-decay mask, all from `config`."""

from typing import Any, Dict, Sequence

import flax
import jax
import optax

from vit_jax.weights.npz import HEAD_KEYS


def make_schedule(config) -> optax.Schedule:
    """Linear warmup from 0 to `config.lr`, then cosine / linear decay to `lr * min_lr_ratio`."""
    peak, warm, total = config.lr, config.warmup_steps, config.total_steps
    end = peak * config.min_lr_ratio
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warm, total, end)
    decay_steps = max(total - warm, 1)
    if config.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:  # constant
        after = optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warm, 1)), after], [warm])


def decay_mask(params):
    """True for weight matrices (`kernel`); biases, norms, CLS and position tables are not decayed."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


def make_optimizer(config, params=None) -> optax.GradientTransformation:
    """Global-norm clipping, then the optimizer with decoupled, masked weight decay."""
    lr = make_schedule(config)
    wd, mask = config.weight_decay, decay_mask
    name = config.optimizer
    if name == "adamw":
        opt = optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=wd, mask=mask)
    elif name == "lion":
        opt = optax.lion(lr, b1=config.b1, b2=config.b2, weight_decay=wd, mask=mask)
    elif name == "adafactor":
        opt = optax.adafactor(lr, weight_decay_rate=wd or None, weight_decay_mask=mask)
    else:  # sgd with momentum; decay is added to the gradient as in the ViT fine-tuning recipe
        opt = optax.chain(
            optax.add_decayed_weights(wd, mask) if wd else optax.identity(),
            optax.sgd(lr, momentum=config.momentum or None),
        )
    chain = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    tx = optax.chain(*chain, opt)
    if config.freeze_encoder:
        if params is None:
            raise ValueError("make_optimizer needs params to build the freeze_encoder mask")
        labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(params, True))
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx


def trainable_mask(
    params: Dict[str, Any],
    freeze_encoder: bool,
    *,
    trainable: Sequence[str] = HEAD_KEYS,
) -> Dict[str, Any]:
    """Which parameters train: a pytree of bools shaped like `params`.

    With `freeze_encoder` only the top-level modules in `trainable` (`head`, `pre_logits`) are True
    (linear probe); otherwise everything is. Use it with `optax.masked(opt, mask)`, or

        labels = jax.tree.map(lambda t: "train" if t else "freeze", mask)
        tx = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)

    Args:
      params: model parameters (only the structure is used).
      freeze_encoder: freeze everything but `trainable`.
      trainable: top-level parameter names that always train.
    """
    return {
        name: jax.tree.map(lambda _, n=name: not freeze_encoder or n in trainable, sub)
        for name, sub in params.items()
    }
