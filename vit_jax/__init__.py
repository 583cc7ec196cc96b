"""vit_jax: Vision Transformers in JAX/Flax for research."""

from vit_jax import model
from vit_jax.variants import MODEL_OPTIONS, create_model, decode_variant

__version__ = "0.1.0"
__all__ = ["MODEL_OPTIONS", "create_model", "decode_variant", "model"]
