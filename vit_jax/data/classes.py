"""Class subsets: a dataset string may end in `?classes=SPEC` to keep only some classes, relabelled
0..k-1 in the order given, e.g. five CIFAR-10 classes to train on and the other five to measure
what the representation gives to classes it never saw:

  folder:cifar10-jpg.tar.gz?classes=0-4           labels 0..4 (airplane ... deer)
  folder:cifar10-jpg.tar.gz?classes=5-9           dog ... truck, relabelled 0..4
  digits?classes=3,1,4                            digit 3 → 0, 1 → 1, 4 → 2

SPEC is comma-separated class indices, ranges `a-b` (inclusive) or class names. The subset applies
to every split of the dataset (after the split string's slice); works for sources read by id
(`digits`, `folder:`).
"""

from typing import List, Sequence, Tuple

import numpy as np

from vit_jax.data._tf import tf
from vit_jax.data.core import DataError
from vit_jax.data.indexed import IndexedSource, eager_constant


def parse_dataset(dataset: str) -> Tuple[str, str]:
    """("folder:x.tar.gz", "0-4") of "folder:x.tar.gz?classes=0-4"; ("digits", "") without."""
    base, _, query = dataset.partition("?")
    if not query:
        return base, ""
    key, _, value = query.partition("=")
    if key != "classes" or not value:
        raise DataError(f"{dataset!r}: after '?' only classes=SPEC is known, e.g. ?classes=0-4")
    return base, value


def class_indices(spec: str, class_names: Sequence[str], dataset: str) -> List[int]:
    """The original class indices a SPEC names, in its order (no repeats)."""
    out: List[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if part in class_names:
            out.append(list(class_names).index(part))
        elif lo.isdigit() and (not dash or hi.isdigit()):
            out.extend(range(int(lo), int(hi if dash else lo) + 1))
        else:
            raise DataError(
                f"{dataset}: {part!r} is neither a class index, a range a-b, nor a class name "
                f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''})"
            )
    bad = [i for i in out if not 0 <= i < len(class_names)]
    if bad or len(set(out)) != len(out):
        raise DataError(
            f"{dataset}: classes {spec!r} must be distinct indices in [0, {len(class_names)})"
        )
    return out


class ClassSubset(IndexedSource):
    """The examples of `base` whose class is kept, relabelled by `keep`'s order."""

    def __init__(self, base: IndexedSource, keep: Sequence[int], dataset: str):
        mapping = np.full(base.info.num_classes, -1, np.int32)
        mapping[np.asarray(keep)] = np.arange(len(keep), dtype=np.int32)
        self.base = base
        self.ids = np.flatnonzero(mapping[base.labels] >= 0).astype(np.int64)
        names = [base.info.class_names[k] for k in keep]
        super().__init__(dataset, base.split, names, mapping[base.labels[self.ids]])
        self.ids_tensor = eager_constant(self.ids)
        self.clips = getattr(base, "clips", False)  # what the pipeline asks of clip sources
        self.num_frames = getattr(base, "num_frames", None)

    def read(self, example_id):
        record = self.base.read(tf.gather(self.ids_tensor, example_id))
        return {**record, "label": tf.gather(self.label_tensor, example_id)}

    def find_corrupt(self, ids):
        return self.base.find_corrupt(self.ids[np.asarray(ids, np.int64)])


def select_classes(source, spec: str, dataset: str):
    """`source` restricted to the classes of `spec` (or `source` itself for an empty spec)."""
    if not spec:
        return source
    if not isinstance(source, IndexedSource):
        raise DataError(
            f"{dataset}: ?classes= works for digits and folder: datasets, not {source.dataset}"
        )
    return ClassSubset(source, class_indices(spec, source.info.class_names, dataset), dataset)
