"""Model weights in and out of files: Google's released `.npz` checkpoints (three layouts) ↔ our
parameter tree (`npz.py`), timm / transformers / our `.safetensors` checkpoints (`safetensors_ckpt.py`,
names in `timm_layout.py` and `hf_layout.py`, `hf://` in the local hub cache in `hub.py`), fine-tuning
initialisation from them (`finetune.py`) and FlexiViT's resize of the patch embedding to another patch
size (`flexi.py`).

Imports `common` and `models` (position-table resizing); never `train`, `config` or `data`.
"""

from vit_jax.weights.finetune import load_pretrained, resize_posemb
from vit_jax.weights.flexi import resize_patch_embedding
from vit_jax.weights.npz import canonical, export_npz, load_npz, match_params, read_npz, to_layout

__all__ = [
    "canonical", "export_npz", "load_npz", "load_pretrained", "match_params", "read_npz",
    "resize_patch_embedding", "resize_posemb", "to_layout",
]  # fmt: skip
