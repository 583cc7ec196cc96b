"""ViT-G/14 pretraining, "Scaling Vision Transformers" (Zhai et al. 2022): configs/vit_g14.py with
the one change big_vision's train_vit_g.py names for it, `model.variant = "G/14"` (width 1664, depth
48, MLP 8192, 16 heads, 1.8B parameters).

  python -m vit_jax.aot --config=configs/vit_G14.py --topology=v5p:4x4x8

Where it fits (`python -m vit_jax.aot`, docs/tpu.md): on a v5p-256 (128 chips, 128 images each,
mesh data 8 x fsdp 16, scan + full remat) the train step takes 33.6 GiB of a chip's 95 GiB
(temporaries 32.6, state 0.8), the eval step 3.6 GiB; compiles in 563 s (train) and 66 s (eval) on a
2-core CPU host; 1,930M parameters with the 29,593-class head; roofline 0.81 s/step at the chips'
bf16 peak = 20,300 img/s at most.
"""

from vit_jax.config import load_config


def get_config():
    c = load_config("vit_g14.py", relative_to=__file__)
    c.model.variant = "G/14"
    return c
