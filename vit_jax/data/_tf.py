"""Imports TensorFlow for data loading only: quiet, and blind to accelerators JAX owns."""

import os

# TF's C++ start-up chatter (oneDNN, CUDA probing) says nothing useful to a JAX user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# TF must not allocate GPU/TPU memory that JAX needs; this only works before TF's runtime starts,
# which is why every data module gets `tf` from here.
for _kind in ("GPU", "TPU"):
    try:
        tf.config.set_visible_devices([], _kind)
    except (RuntimeError, ValueError):  # Runtime already started, or no such device type.
        pass

__all__ = ["tf"]
