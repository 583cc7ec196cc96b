"""Types shared by every part of the input pipeline: the error users see and dataset metadata."""

import dataclasses
from typing import Tuple


class DataError(ValueError):
    """A problem with the data the user pointed at: a missing folder, a corrupt file, a bad name.

    The message is always one line naming the dataset string, file or config key, so the CLI can
    print it without a traceback.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and trainer need to know about one split.

    Attributes:
      num_examples: number of examples in the split (after slicing and skipped corrupt files).
      num_classes: number of classes; labels are in [0, num_classes).
      class_names: human-readable name of each label, indexed by label.
    """

    num_examples: int
    num_classes: int
    class_names: Tuple[str, ...]


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception message (tf/tfds messages span many lines)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
