"""ImageNet-1k ViT-S/16, the "Better plain ViT baselines" recipe (Beyer, Zhai, Kolesnikov 2022).

  python -m vit_jax.main --config=configs/imagenet_s16.py --workdir=gs://.../s16 \
      --config.data_dir=/path/to/tensorflow_datasets

Recipe: batch 1024, 90 epochs, AdamW lr 1e-3 (b2 0.999) with 10k warmup and cosine decay, weight
decay 1e-4 (decoupled, as big_vision's 0.0001), Inception crop (8-100%), flip, RandAugment(2, 10),
mixup 0.2, sincos2d position embedding, global average pooling, no dropout, no head bias init tricks.
Expected: 76.5% top-1 (paper, 90 epochs) on ImageNet val; about 7 h on a TPUv3-8. Needs tfds
`imagenet2012` prepared locally (no download here).
"""

from vit_jax.config import base_config


def get_config():
    c = base_config()  # 224 px, Inception crop + flip, AdamW lr 1e-3, clip 1.0, cosine, wd 1e-4
    c.dataset = "tfds:imagenet2012"
    c.train_split = "train[:99%]"
    c.eval_split = "validation"
    c.batch_size = 1024
    c.aug.update(dict(randaug_n=2, mixup_alpha=0.2))  # RandAugment magnitude 10: the default
    c.aug.eval_crop_pct = 0.875
    c.model.variant = "S/16"
    c.model.posemb = "sincos2d"
    c.model.pool = "gap"
    c.model.cls_token = False
    c.model.dtype = "bfloat16"
    c.total_steps = 90 * 1_281_167 // 1024
    c.warmup_steps = 10_000
    c.log_every = 100
    c.eval_every = 2500
    c.checkpoint_every = 1000
    return c
