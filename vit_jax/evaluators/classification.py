"""Classification evaluators: single-label (loss, top-1, top-5) and multi-label, ReaL-style top-1.

Both score every example of a split once (the last batch is padded and masked), on any dataset,
split, resolution and eval crop: the model resizes position tables to the input grid at call time.
`patch_size` evaluates the model at another patch size: the patch-embedding kernel is resized with
FlexiViT's pseudo-inverse resize (`vit_jax.weights.flexi`) inside the jitted step. `clips=K`
(vivit) scores K evenly spaced windows of each clip (`config.eval_clips`, `vit_jax.data.clips`)
and averages their logits, ViViT's multi-clip evaluation; top-1 and the loss are of the average.
"""

import functools
from typing import Dict

import jax
import jax.numpy as jnp

from vit_jax import models
from vit_jax.evaluators.base import EVALUATORS, RUN_KEYS, EvalError, Evaluator, with_options
from vit_jax.models.losses import LOSSES
from vit_jax.weights import flexi

# Where a classification evaluator reads its images; None takes the run's value.
DATA_KEYS = dict(
    dataset=None, split=None, image_size=None, batch_size=None, crop_pct=None, label_key=None,
    clips=None,
)  # fmt: skip
# The model's own options an evaluator may change; None keeps the trained model's.
MODEL_KEYS = dict(patch_size=None)


def _at_patch_size(step, patch: int):
    """`step` with the variables' patch embedding resized to `patch` first (FlexiViT)."""

    def fn(variables, batch):
        return step(flexi.with_patch_size(variables, patch), batch)

    return fn


def logits_of(model, variables, images):
    """The model's logits; `[B, K, T, H, W, C]` (K windows per clip): their mean over K."""
    if images.ndim != 6:
        return model.apply(variables, images, train=False)
    b, k = images.shape[:2]
    logits = model.apply(variables, images.reshape(b * k, *images.shape[2:]), train=False)
    return logits.reshape(b, k, -1).mean(axis=1)


def _sum(tree_a, tree_b):
    return tree_b if tree_a is None else jax.tree.map(jnp.add, tree_a, tree_b)


@EVALUATORS.register("classification")
class Classification(Evaluator):
    """Loss, top-1 and top-5 accuracy of single-label classification on one split."""

    KEYS = dict(DATA_KEYS, **MODEL_KEYS)
    MULTI_LABEL = False

    def __init__(self, *args):
        super().__init__(*args)
        self.config = with_options(self.config, self.spec)
        self._batches = None
        self._fns = {}

    @classmethod
    def spec_error(cls, config, spec):
        size, patch = spec["image_size"], spec["patch_size"]
        if patch is not None and (
            not isinstance(patch, int) or isinstance(patch, bool) or patch < 1
        ):
            return f"patch_size={patch!r} must be a positive int (None: the model's)"
        if patch is not None:
            name = config.get("model_name", "vit")
            tokenizer = config.model.get("tokenizer", "patch")
            if name != "vit" or tokenizer != "patch":
                what = f"model_name={name!r}" if name != "vit" else f"tokenizer={tokenizer!r}"
                return (
                    f"patch_size={patch} resizes a ViT's patch-embedding kernel (FlexiViT), which "
                    f"a {what} model does not have: drop patch_size"
                )
        if patch is not None or size is not None:
            patch = patch or models.stride(config.model, config.get("model_name", "vit"))
            size = config.image_size if size is None else size
            if not isinstance(size, int) or size <= 0 or size % patch:
                return f"image_size={size!r} is not a positive multiple of the patch size {patch}"
        if spec["batch_size"] is not None and not spec["batch_size"] > 0:
            return f"batch_size={spec['batch_size']!r} must be positive"
        if spec["crop_pct"] is not None and not 0 < spec["crop_pct"] <= 1:
            return f"crop_pct={spec['crop_pct']!r} must lie in (0, 1]"
        clips = spec["clips"]
        if clips is not None and (
            not isinstance(clips, int) or isinstance(clips, bool) or clips < 1
        ):
            return f"clips={clips!r} must be a positive int (windows per clip; None: the run's)"
        name = config.get("model_name", "vit")
        if clips is not None and clips > 1 and name != "vivit":
            return f"clips={clips} averages windows of video clips; a {name!r} model reads images"
        return None

    @classmethod
    def metric_names(cls, spec):
        return ("top1", "top5", "loss") if not cls.MULTI_LABEL else ("top1",)

    def where(self, option: str) -> str:
        """The config key behind `option`: the run's own for the default evaluator."""
        return f"config.{RUN_KEYS[option]}" if self.implicit else self.key(option)

    def check(self, num_classes: int) -> None:
        """Fails now, with one line, if the split is missing, empty or has too many classes."""
        from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

        c = self.config
        try:
            info = data.get_info(c.dataset, c.eval_split, c.data_dir, label_key=c.label_key)
        except data.DataError as e:
            if self.implicit:
                raise
            raise EvalError(f"evaluator {self.name!r}: {e}") from None
        split = f"{self.where('split')}={c.eval_split!r}"
        if info.num_examples == 0:
            raise EvalError(f"{split} of {c.dataset} holds no examples; widen the split slice")
        if info.num_classes > num_classes:
            raise EvalError(
                f"config.num_classes={num_classes} is smaller than the {info.num_classes} classes "
                f"of {split}; leave num_classes=None to take the dataset's"
            )
        if info.multi_label != self.MULTI_LABEL:
            kind = "a list of labels" if info.multi_label else "one label"
            raise EvalError(
                f"evaluator {self.name!r}: label {c.label_key!r} of {c.dataset} holds {kind} per "
                f"example; use type={'multilabel' if info.multi_label else 'classification'!r}"
            )

    def run(self, context, variables) -> Dict[str, float]:
        """Metrics over every example of the split, with `variables` (params, batch_stats)."""
        from vit_jax import data  # noqa: PLC0415

        if self._batches is None:
            self._batches = data.eval_iterator(self.config)
        key = id(context.model)
        if key not in self._fns:
            model, patch = context.model, self.spec.get("patch_size")
            if patch:
                model = model.clone(patch_size=(patch, patch))
            step = functools.partial(self.step, model=model, loss_name=context.loss)
            if patch:
                step = _at_patch_size(step, patch)
            self._fns[key] = jax.jit(step, out_shardings=context.out_sharding)
        sums = None
        for batch in self._batches:
            sums = _sum(sums, self._fns[key](variables, context.put(batch)))
        if sums is None:
            raise EvalError(f"{self.where('split')} holds no examples; widen its split slice")
        return self.finish(jax.device_get(sums))

    @staticmethod
    def step(variables, batch, *, model, loss_name="softmax_xent"):
        """Sums over the valid (mask=True) examples: loss, top-1, top-5 hits and count."""
        logits = logits_of(model, variables, batch["image"])
        labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
        loss = LOSSES[loss_name](logits, jax.nn.one_hot(labels, logits.shape[-1]))
        top1 = jnp.argmax(logits, -1) == labels
        k = min(5, logits.shape[-1])
        topk = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
        return dict(
            loss=jnp.sum(loss * mask),
            top1=jnp.sum(top1 * mask),
            top5=jnp.sum(topk * mask),
            count=jnp.sum(mask),
        )

    @staticmethod
    def finish(sums) -> Dict[str, float]:
        count = float(sums["count"])
        return dict(
            loss=float(sums["loss"]) / count,
            top1=float(sums["top1"]) / count,
            top5=float(sums["top5"]) / count,
            count=count,
        )


@EVALUATORS.register("multilabel")
class MultiLabel(Classification):
    """ReaL-style top-1 (Beyer et al. 2020): the top prediction counts as correct if it is in the
    image's set of labels; images whose set is empty are skipped (`skipped` counts them)."""

    KEYS = dict(DATA_KEYS, label_key="real_label", **MODEL_KEYS)
    MULTI_LABEL = True

    @staticmethod
    def step(variables, batch, *, model, loss_name=None):
        """Sums over valid examples with a non-empty label set: top-1 hits, count, skipped."""
        del loss_name
        logits = logits_of(model, variables, batch["image"])
        labels = batch["label"]  # [b, C] multi-hot (0/1)
        mask = batch["mask"].astype(jnp.float32)
        has_labels = (labels.sum(-1) > 0).astype(jnp.float32)
        top = jnp.argmax(logits, -1)
        hit = jnp.take_along_axis(labels, top[:, None], axis=-1)[:, 0] > 0
        return dict(
            top1=jnp.sum(hit * mask * has_labels),
            count=jnp.sum(mask * has_labels),
            skipped=jnp.sum(mask * (1.0 - has_labels)),
        )

    @staticmethod
    def finish(sums) -> Dict[str, float]:
        count = float(sums["count"])
        top1 = float(sums["top1"]) / count if count else float("nan")
        return dict(top1=top1, count=count, skipped=float(sums["skipped"]))
