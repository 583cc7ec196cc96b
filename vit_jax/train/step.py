"""The jitted pieces of training: state creation, the train step, the eval step, losses.

State is a plain dict pytree (`step`, `params`, `batch_stats`, `opt_state`, `rng`) so Orbax saves
and restores it as is.
"""

import functools
from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax

from vit_jax.models.losses import LOSSES, mse, sigmoid_xent, smooth, softmax_xent
from vit_jax.train import sharding as shd

State = Dict[str, Any]


# Losses live with the model outputs they score (the evaluators use them too).


# ------------------------------------------------------------------ state
def init_state(model, tx, image_shape, seed: int) -> State:
    """Fresh state; call under `jax.jit(..., out_shardings=...)` to create it sharded."""
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_rng, jnp.zeros(image_shape, jnp.float32), train=False)
    params = variables["params"]
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=dropout_rng,
    )


# ------------------------------------------------------------------ train step
def _grads(model, loss_name, smoothing, params, batch_stats, images, targets, labels, rng,
           distill=None, teacher=None):  # fmt: skip
    """Loss, gradients, new batch statistics and accuracy for one micro-batch.

    With `distill` (a `vit_jax.train.distill.Objective`), the teacher's logits on the same images
    (its variables `teacher`; no gradient) enter DeiT's loss (1 - alpha)·CE + alpha·distillation.
    """
    teacher_logits = None if distill is None else distill.teacher_logits(teacher, images)

    def loss_fn(p):
        variables = {"params": p, "batch_stats": batch_stats} if batch_stats else {"params": p}
        mutable = ["batch_stats"] if batch_stats else []
        logits, new = model.apply(
            variables, images, train=True, rngs={"dropout": rng}, mutable=mutable
        )
        if distill is None:
            loss = LOSSES[loss_name](logits, smooth(targets, smoothing)).mean()
        else:  # `logits` becomes the class head's (a distillation token's model gives two)
            ce = lambda z: LOSSES[loss_name](z, smooth(targets, smoothing)).mean()
            logits, loss = distill.loss(logits, teacher_logits, ce)
        return loss, (logits, new.get("batch_stats", batch_stats))

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, grads, new_stats, acc


def train_step(state: State, batch, teacher=None, *, model, tx, schedule, loss_name="softmax_xent",
               label_smoothing=0.0, accum_steps=1, nan_policy="stop", distill=None):  # fmt: skip
    """One optimizer update on `batch`, averaging gradients over `accum_steps` micro-batches.

    `distill` / `teacher`: a distillation objective and the frozen teacher's variables, an argument
    of the jitted step (`vit_jax.train.distill.jit_train_step`); None trains on the labels alone.

    Micro-batch i holds examples i, i + k, i + 2k, ... so each stays spread over all devices.
    The dropout RNG is `fold_in(rng, step)`: a resumed run draws the same masks.
    """
    rng = jax.random.fold_in(state["rng"], state["step"])
    grad_fn = functools.partial(
        _grads, model, loss_name, label_smoothing, distill=distill, teacher=teacher
    )
    images, targets, labels = batch["image"], batch["soft_label"], batch["label"]
    if accum_steps == 1:
        loss, grads, stats, acc = grad_fn(
            state["params"], state["batch_stats"], images, targets, labels, rng
        )
    else:
        split = lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(
            0, 1
        )

        def body(carry, micro):
            g_sum, l_sum, a_sum, stats, i = carry
            loss_i, g, stats, a = grad_fn(
                state["params"], stats, *micro, jax.random.fold_in(rng, i)
            )
            g_sum = jax.tree.map(jnp.add, g_sum, g)
            return (g_sum, l_sum + loss_i, a_sum + a, stats, i + 1), None

        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        init = (zeros, 0.0, 0.0, state["batch_stats"], 0)
        (grads, loss, acc, stats, _), _ = jax.lax.scan(
            body, init, (split(images), split(targets), split(labels))
        )
        grads = jax.tree.map(lambda g: g / accum_steps, grads)
        loss, acc = loss / accum_steps, acc / accum_steps

    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.global_norm(grads)
    # The updated weights too: a finite loss and gradient can still overflow them (a huge lr), and
    # weights saved as the last good checkpoint must be finite. One reduction over the parameters.
    weights_finite = _all_finite((params, stats))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & weights_finite
    new = dict(
        step=state["step"] + 1,
        params=params,
        batch_stats=stats,
        opt_state=opt_state,
        rng=state["rng"],
    )
    if nan_policy == "skip":  # keep the old weights; the step counter still advances
        keep = lambda n, o: jnp.where(finite, n, o)
        for k in ("params", "batch_stats", "opt_state"):
            new[k] = jax.tree.map(keep, new[k], state[k])
    metrics = dict(
        loss=loss, accuracy=acc, grad_norm=grad_norm, lr=schedule(state["step"]), finite=finite,
        weights_finite=weights_finite,
    )  # fmt: skip
    return new, metrics


def _all_finite(tree) -> jax.Array:
    """True when every array in `tree` is finite (a norm would overflow on large finite weights)."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)] or [True]))


def jit_train_step(config, model, tx, schedule, shardings, mesh):
    """`train_step` for `config`, jitted with the state's and the batch's shardings (state donated):
    what the training loop runs and what `vit_jax.tools.aot` compiles for other topologies."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule, loss_name=config.loss,
        label_smoothing=config.label_smoothing, accum_steps=config.grad_accum_steps,
        nan_policy=config.nan_policy,
    )  # fmt: skip
    return jax.jit(
        step,
        in_shardings=(shardings, shd.batch_sharding(mesh)),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


__all__ = [
    "LOSSES", "init_state", "jit_train_step", "mse", "sigmoid_xent", "smooth", "softmax_xent",
    "train_step",
]  # fmt: skip
