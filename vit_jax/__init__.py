"""vit_jax: Vision Transformers in JAX/Flax for research.

Packages, each importing only those before it (tests/test_layering.py):
  common → kernels → models → weights → data → config → train → tools
and the command lines on top (`vit_jax/main.py`, `predict.py`, `data_stats.py`, `benchmark.py`,
`scripts/`), the only modules that set process-wide state.
"""

from vit_jax import models
from vit_jax.models import MODEL_OPTIONS, create_model, decode_variant, get_features
from vit_jax.models import vit as model  # `vit_jax.model.get_features`, as before the packages

__version__ = "0.1.0"
__all__ = ["MODEL_OPTIONS", "create_model", "decode_variant", "get_features", "model", "models"]
