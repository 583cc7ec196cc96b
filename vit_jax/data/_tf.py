"""Imports TensorFlow for data loading only: quiet, and blind to accelerators JAX owns."""

import os

from vit_jax.common import quiet

# TF's C++ start-up chatter (oneDNN, CUDA probing) says nothing useful to a JAX user; the oneDNN
# notice and absl's preamble are written before the log level applies (`quiet.filtered_stderr`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with quiet.filtered_stderr():
    import tensorflow as tf

# TF must not allocate GPU/TPU memory that JAX needs; this only works before TF's runtime starts,
# which is why every data module gets `tf` from here.
for _kind in ("GPU", "TPU"):
    try:
        tf.config.set_visible_devices([], _kind)
    except (RuntimeError, ValueError):  # Runtime already started, or no such device type.
        pass

__all__ = ["tf"]
