"""ImageNet-21k-style ViT-B/16 pretraining, the recipe of the ViT paper (Dosovitskiy et al. 2021).

  python -m vit_jax.main --config=configs/i21k_b16.py --workdir=DIR --config.dataset=tfds:NAME

Recipe (paper, Table 3/B.1): Adam b1 0.9 b2 0.999, batch 4096, lr 1e-3, weight decay 0.1 (the
paper's "high weight decay" for pretraining), 10k warmup then linear decay, 90 epochs, resolution
224, dropout 0.1, a tanh pre-logits layer of width 768, token pooling, learned 1-D position table,
sigmoid cross-entropy (multi-label 21k). Expected: ~84% ImageNet top-1 after fine-tuning at 384.
ImageNet-21k is not in tfds by default: point `dataset` at your copy (`folder:` or a tfds builder).
"""

from vit_jax.config import base_config


def get_config():
    c = base_config()  # 224 px, Inception crop + flip, AdamW lr 1e-3, learned 1-D posemb, CLS token
    c.dataset = "tfds:imagenet2012"  # stand-in with the same pipeline; swap for your 21k copy
    c.eval_split = "validation"
    c.batch_size = 4096
    c.eval_batch_size = 1024
    c.aug.eval_crop_pct = 0.875
    c.model.variant = "B/16"
    c.model.representation_size = 768
    c.model.dropout_rate = 0.1
    c.model.head_bias_init = -10.0  # sigmoid loss: start from small probabilities
    c.model.dtype = "bfloat16"
    c.loss = "sigmoid_xent"
    c.weight_decay = 0.1
    c.schedule = "linear"
    c.total_steps = 90 * 14_197_122 // 4096
    c.warmup_steps = 10_000
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 2000
    return c
