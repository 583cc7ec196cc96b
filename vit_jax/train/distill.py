"""Knowledge distillation from a frozen teacher, as DeiT (Touvron et al. 2021): `config.distill`.

    loss = (1 - alpha) · CE(student, labels) + alpha · distill(student, teacher)

  kind="soft":  distill = tau² · KL(softmax(t / tau) ‖ softmax(s / tau)), summed over classes and
                averaged over the batch (Hinton et al. 2015; DeiT eq. 2)
  kind="hard":  distill = CE(s, one_hot(argmax t)), the teacher's decision as the label (DeiT eq. 3)

CE is the run's own loss (`config.loss`, with label smoothing and mixup/cutmix targets). With
`model.distill_token=True` the student's class head takes the CE term and its distillation head the
distillation term (DeiT's "distillation token"; at evaluation the model outputs the two heads'
mean); without it both terms score the one head.

The teacher is a finished run's workdir (its `config.json` and latest checkpoint in `checkpoints/`,
any model family) or an `.npz` file whose model is `config.distill.teacher_model` (config.model
keys of family `teacher_model_name`). It is frozen: its variables are an argument of the jitted
train step (not constants folded into the program), its logits are computed in the same step in
eval mode (`train=False`: no dropout, stored batch statistics) under `stop_gradient`. The teacher
sees exactly the student's batch: the same images after the student's preprocessing and
augmentation, at the student's resolution (a learned position table of a ViT teacher trained at
another resolution is interpolated to it).
"""

import dataclasses
import functools
import json
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.common import files
from vit_jax.config import ConfigError, from_saved
from vit_jax.models import scan
from vit_jax.models.losses import softmax_xent
from vit_jax.train import checkpoint
from vit_jax.train import sharding as shd
from vit_jax.train import step as ts


def soft_loss(student, teacher, tau: float):
    """Per-example tau² · KL(softmax(teacher / tau) ‖ softmax(student / tau)), `[B]`."""
    log_p = jax.nn.log_softmax(teacher / tau, axis=-1)
    log_q = jax.nn.log_softmax(student / tau, axis=-1)
    return tau**2 * jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def hard_loss(student, teacher):
    """Per-example cross-entropy of `student` against the teacher's argmax, `[B]`."""
    labels = jax.nn.one_hot(jnp.argmax(teacher, axis=-1), teacher.shape[-1], dtype=student.dtype)
    return softmax_xent(student, labels)


@dataclasses.dataclass(frozen=True)
class Objective:
    """The distillation loss of `config.distill` around the teacher's module (static in the step)."""

    teacher: Any  # the teacher's Flax module
    kind: str
    alpha: float
    tau: float

    def teacher_logits(self, variables, images):
        """The frozen teacher's float32 logits on the student's `images` (eval mode, no gradient)."""
        logits = self.teacher.apply(variables, images, train=False)
        return jax.lax.stop_gradient(logits.astype(jnp.float32))

    def distill_loss(self, student, teacher_logits):
        """The batch mean of the distillation term."""
        if self.kind == "soft":
            return soft_loss(student, teacher_logits, self.tau).mean()
        return hard_loss(student, teacher_logits).mean()

    def loss(self, outputs, teacher_logits, ce: Callable):
        """(class-head logits, total loss) of the student's train-mode `outputs`: logits, or the
        pair (class head, distillation head) of a model with a distillation token; `ce(logits)` is
        the run's batch-mean loss against the labels."""
        logits, dist = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        total = (1.0 - self.alpha) * ce(logits) + self.alpha * self.distill_loss(
            dist, teacher_logits
        )
        return logits, total


@dataclasses.dataclass
class Teacher:
    """A loaded teacher: its module, its variables (on the devices) and where they came from."""

    model: Any
    variables: Dict[str, Any]
    source: str


def objective(config, teacher: Teacher) -> Objective:
    d = config.distill
    return Objective(teacher.model, d.kind, float(d.alpha), float(d.tau))


def _head_width(params) -> int:
    head = params.get("head", {}).get("kernel") if hasattr(params, "get") else None
    return None if head is None else int(head.shape[-1])


def _check_classes(width, num_classes: int, source: str) -> None:
    if width is not None and width != num_classes:
        raise ConfigError(
            f"config.distill.teacher {source} has {width} classes, the student {num_classes}; "
            "distil from a teacher of the same classes (or set config.num_classes)"
        )


def _from_workdir(path: str, num_classes: int, image_size: int):
    saved = from_saved(json.loads(files.read_text(files.join(path, "config.json"))))
    name = saved.get("model_name", "vit")
    directory = files.join(path, "checkpoints")
    steps = checkpoint.saved_steps(directory)
    if not steps:
        raise ConfigError(
            f"config.distill.teacher={path!r} has no checkpoint in {directory}; train it first"
        )
    source = f"{directory}/{max(steps)}"
    _check_classes(_head_width(checkpoint.metadata(directory, max(steps)).get("params", {})),
                   num_classes, source)  # fmt: skip
    model_config = dict(saved.model)
    for key in ("kernels", "attn_impl"):  # the teacher runs here: this machine's choice
        if key in model_config:
            model_config[key] = "auto"
    model = models.from_config(model_config, num_classes, name)
    state = checkpoint.restore(directory, max(steps))  # host NumPy arrays
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    images = np.zeros((1, image_size, image_size, 3), np.float32)
    target = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    target = {k: target[k] for k in target if k in ("params", "batch_stats")}
    try:  # the blocks as the model has them (the run may have resumed with another model.scan)
        variables = scan.match_layout(variables, target)
    except (ValueError, KeyError, TypeError):
        pass  # a different architecture: _check_fits names the first difference
    if saved.image_size != image_size and hasattr(model, "num_prefix"):
        from vit_jax.weights import finetune  # noqa: PLC0415

        step = models.stride(saved.model, name)
        old, new = (saved.image_size // step,) * 2, (image_size // step,) * 2
        variables["params"] = finetune.resize_posemb(
            variables["params"], old, new, num_prefix=model.num_prefix
        )
    _check_fits(variables, target, source)
    return model, variables, source


def _check_fits(variables, target, source: str) -> None:
    flat = lambda tree: {
        jax.tree_util.keystr(p): tuple(np.shape(x))
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
    got, want = flat(variables), flat(target)
    diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    if diff:
        raise ConfigError(
            f"config.distill.teacher {source} does not fit its own config's model: {diff[0]} is "
            f"{got.get(diff[0])} saved, {want.get(diff[0])} built ({len(diff)} arrays differ)"
        )


def _npz_head_width(path: str):
    with files.open(path, "rb") as f, np.load(f) as z:
        keys = [k for k in z.files if k == "head/kernel" or k.endswith("/head/kernel")]
        return int(z[keys[0]].shape[-1]) if keys else None


def _from_npz(config, num_classes: int):
    from vit_jax.weights import finetune  # noqa: PLC0415

    d = config.distill
    _check_classes(_npz_head_width(d.teacher), num_classes, d.teacher)
    model = models.from_config(dict(d.teacher_model), num_classes, d.teacher_model_name)
    size = (config.image_size, config.image_size)
    try:
        params = finetune.load_pretrained(d.teacher, model, size, skip_head=False, seed=config.seed)
    except ValueError as e:
        raise ConfigError(f"config.distill.teacher: {e}") from None
    return model, {"params": params}, d.teacher


def load_teacher(config, num_classes: int, mesh) -> Teacher:
    """The teacher of `config.distill`, its variables placed on `mesh` (FSDP rule of the state).

    Raises:
      ConfigError (one line): no checkpoint, another number of classes than the student's
      `num_classes`, weights that do not fit the teacher's model.
    """
    if config.distill.teacher.endswith(".npz"):
        model, variables, source = _from_npz(config, num_classes)
    else:
        model, variables, source = _from_workdir(
            config.distill.teacher.rstrip("/"), num_classes, config.image_size
        )
    variables = jax.device_put(variables, shd.tree_shardings(variables, mesh))
    return Teacher(model, variables, source)


def jit_train_step(config, model, tx, schedule, shardings, mesh, teacher: Teacher):
    """`step.jit_train_step` with the distillation objective: a function `(state, batch)` that
    runs one jitted step whose third argument is the teacher's variables."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step = functools.partial(
        ts.train_step, model=model, tx=tx, schedule=schedule, loss_name=config.loss,
        label_smoothing=config.label_smoothing, accum_steps=config.grad_accum_steps,
        nan_policy=config.nan_policy, distill=objective(config, teacher),
    )  # fmt: skip
    jitted = jax.jit(
        step,
        in_shardings=(
            shardings,
            shd.batch_sharding(mesh),
            shd.tree_shardings(teacher.variables, mesh),
        ),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    return lambda state, batch: jitted(state, batch, teacher.variables)


__all__ = [
    "Objective", "Teacher", "hard_loss", "jit_train_step", "load_teacher", "objective", "soft_loss",
]  # fmt: skip
