"""The frozen representation of a split: the vector the head sees (pooled tokens, after the
pre-logits layer if there is one), computed in batches on device, gathered on the host."""

from typing import Dict, Optional, Tuple

import jax
import numpy as np

from vit_jax.evaluators.base import EvalError, Evaluator, with_options

# Options of evaluators that read a labelled split through the eval preprocessing; None takes the
# run's value. `train_split` / `test_split` name the two splits a few-shot or k-NN evaluator reads.
FEATURE_KEYS = dict(
    dataset=None, train_split=None, test_split=None, image_size=None, batch_size=None,
    crop_pct=None, label_key=None,
)  # fmt: skip


def representation_fn(model, out_sharding=None):
    """jit(variables, batch) → {"z": float32 [B, D] (the model without its head), "label", "mask",
    "index"}, replicated, so every process gets every process' examples."""
    trunk = model.clone(num_classes=0)

    def fn(variables, batch):
        z = trunk.apply(variables, batch["image"], train=False)
        return dict(z=z, label=batch["label"], mask=batch["mask"], index=batch["index"])

    return jax.jit(fn, out_shardings=out_sharding)


class Features:
    """Representations of splits of one dataset, per call of `run` (cached by split)."""

    def __init__(self, config, split_keys: Dict[str, str]):
        self.config = config
        self.split_keys = split_keys  # {split: config key that set it}, for messages
        self._batches: Dict[str, object] = {}
        self._options = config.to_json()  # what the representations depend on besides the model
        self._fns: Dict[int, object] = {}

    def check(self, name: str, num_classes: int, implicit: bool = False):
        """Each split exists, holds examples, has one label per example; returns the classes."""
        from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

        c = self.config
        classes = 0
        for split, key in self.split_keys.items():
            try:
                info = data.get_info(c.dataset, split, c.data_dir, label_key=c.label_key)
            except data.DataError as e:
                raise EvalError(f"evaluator {name!r}: {e}") from None
            if info.num_examples == 0:
                raise EvalError(f"{key}={split!r} of {c.dataset} holds no examples")
            if info.multi_label:
                raise EvalError(f"evaluator {name!r} needs one label per example ({key})")
            classes = max(classes, info.num_classes)
        del num_classes, implicit  # the head's width does not matter to a frozen representation
        return classes

    def get(self, split: str, context, variables, weights: str) -> Tuple[np.ndarray, np.ndarray]:
        """(features float32 [n, D], labels int [n]) of every example of `split`, in split order.

        Shared through `context.features` within an evaluation round with every evaluator that
        reads `split` with the same data options (the same config) and the same `weights`; the
        arrays are read-only.
        """
        key = (self._options, split, weights, id(context.model))
        if key not in context.features:
            context.features[key] = self._compute(split, context, variables)
        return context.features[key]

    def _compute(self, split: str, context, variables) -> Tuple[np.ndarray, np.ndarray]:
        from vit_jax import data  # noqa: PLC0415

        if split not in self._batches:
            self._batches[split] = data.eval_iterator(self.config, split)
        key = id(context.model)
        if key not in self._fns:
            self._fns[key] = representation_fn(context.model, context.out_sharding)
        feats, labels, index = [], [], []
        for batch in self._batches[split]:
            out = jax.device_get(self._fns[key](variables, context.put(batch)))
            mask = np.asarray(out["mask"], bool)
            feats.append(np.asarray(out["z"], np.float32)[mask])
            labels.append(np.asarray(out["label"])[mask])
            index.append(np.asarray(out["index"])[mask])
        if not feats:
            raise EvalError(f"{self.split_keys[split]}={split!r} holds no examples")
        order = np.argsort(np.concatenate(index), kind="stable")
        out = np.concatenate(feats)[order], np.concatenate(labels)[order]
        for array in out:
            array.flags.writeable = False
        return out


def split_or(spec_value: Optional[str], default: str) -> str:
    return spec_value if spec_value is not None else default


class RepresentationEvaluator(Evaluator):
    """Base of the evaluators of the frozen representation (few-shot, k-NN): the representations
    of `train_split` (reference examples) and `test_split` (scored), by `reference_and_test`."""

    KEYS = FEATURE_KEYS

    def __init__(self, *args):
        super().__init__(*args)
        s = self.spec
        self.train_split = split_or(s["train_split"], self.config.train_split)
        self.test_split = split_or(s["test_split"], self.config.eval_split)
        config = with_options(self.config, s)
        if config.get("eval_clips", 1) > 1:
            config.eval_clips = 1  # clips: the centre window (multi-clip is classification's)
        self.features = Features(
            config,
            {self.train_split: self.key("train_split"), self.test_split: self.key("test_split")},
        )
        self.num_classes = None

    def check(self, num_classes: int) -> None:
        self.num_classes = self.features.check(self.name, num_classes)

    def reference_and_test(self, context, variables):
        """(train_x, train_y, test_x, test_y, number of classes)."""
        train_x, train_y = self.features.get(self.train_split, context, variables, self.weights)
        test_x, test_y = self.features.get(self.test_split, context, variables, self.weights)
        classes = self.num_classes or int(max(train_y.max(), test_y.max())) + 1
        return train_x, train_y, test_x, test_y, classes
