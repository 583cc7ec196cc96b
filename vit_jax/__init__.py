"""vit_jax: Vision Transformers in JAX/Flax for research.

Packages, each importing only those before it (tests/test_layering.py):
  common → kernels → models → weights → data → config → train → tools
and the command lines on top (`vit_jax/main.py`, `predict.py`, `data_stats.py`, `benchmark.py`,
`scripts/`), the only modules that set process-wide state.
"""

import os

# TensorFlow and XLA read their C++ log level once, when first loaded, and `import vit_jax` loads
# JAX: INFO and WARNING lines (e.g. `local_rendezvous.cc ... aborting` at every data error) stay
# off unless VIT_JAX_DEBUG=1 or the user set it. The rest of the quiet set-up:
# vit_jax/common/quiet.py.
if os.environ.get("VIT_JAX_DEBUG", "") in ("", "0"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vit_jax import models  # noqa: E402
from vit_jax.models import MODEL_OPTIONS, create_model, decode_variant, get_features  # noqa: E402
from vit_jax.models import vit as model  # noqa: E402  (`vit_jax.model.get_features`)

__version__ = "0.1.0"
__all__ = ["MODEL_OPTIONS", "create_model", "decode_variant", "get_features", "model", "models"]
