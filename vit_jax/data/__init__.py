"""vit_jax's input pipeline: datasets named by one string, host-local NumPy batches.

    from vit_jax import data
    info = data.get_info("digits", "train")            # DatasetInfo(1437, 10, ("0", ..., "9"))
    batches = data.train_iterator(config)              # endless; dicts of NumPy arrays
    for batch in data.eval_iterator(config): ...       # padded, masked, every example once

Dataset strings: "digits" (offline), "folder:PATH" (ImageFolder tree or .tar.gz), "tfds:NAME".
TensorFlow is imported on first use of a pipeline function, not by `import vit_jax.data`.
"""

import importlib

from vit_jax.data.core import DataError, DatasetInfo

_LAZY = {
    "get_info": "pipeline",
    "train_iterator": "pipeline",
    "eval_iterator": "pipeline",
    "read_config": "options",
    "open_source": "sources",
}

__all__ = ["DataError", "DatasetInfo", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
