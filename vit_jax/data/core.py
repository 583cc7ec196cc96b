"""Types shared by every part of the input pipeline: the error users see and dataset metadata."""

import dataclasses
import re
from typing import Optional, Tuple

from vit_jax.common.errors import Error, first_line

__all__ = ["DataError", "DatasetInfo", "Shard", "SourceOptions", "first_line"]

Shard = Tuple[int, int]  # (process index, process count): the part of a split a process reads.


class DataError(Error, ValueError):
    """A problem with the data the user pointed at: a missing folder, a corrupt file, a bad name.

    The message is always one line naming the dataset string, file or config key, so the CLI can
    print it without a traceback.
    """

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip())


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and trainer need to know about one split.

    Attributes:
      num_examples: number of examples in the split (after slicing and skipped corrupt files).
      num_classes: number of classes; labels are in [0, num_classes).
      class_names: human-readable name of each label, indexed by label.
      multi_label: each example has a set of labels (e.g. ImageNet ReaL's `real_label`), read as a
        multi-hot int32 [num_classes] vector; only the multi-label evaluator reads such splits.
    """

    num_examples: int
    num_classes: int
    class_names: Tuple[str, ...]
    multi_label: bool = False


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """Settings some sources need; see `config.DataConfig` for their meaning."""

    data_dir: Optional[str] = None
    download: bool = False
    skip_corrupt: bool = False
    image_key: str = "image"
    label_key: str = "label"
