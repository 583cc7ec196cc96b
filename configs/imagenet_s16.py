"""ImageNet-1k ViT-S/16, the "Better plain ViT baselines" recipe (Beyer, Zhai, Kolesnikov 2022).

  python -m vit_jax.main --config=configs/imagenet_s16.py --workdir=gs://.../s16 \
      --config.data_dir=/path/to/tensorflow_datasets

big_vision's big_vision/configs/vit_s16_i1k.py, value for value (docs/recipes.md compares every
hyperparameter with its line there): batch 1024, 90 epochs of train[:99%], Adam (b2 0.999) at lr 1e-3
with 10k warmup steps and cosine decay, global-norm clip 1.0, weight decay 1e-4 on kernels in
big_vision's form (multiplied by the schedule only, not by the learning rate: 1000x what optax's
adamw does with the same number), Inception crop (5-100% area) + flip + RandAugment(2, 10) + mixup
0.2, sincos2d position embedding, global average pooling, a tanh pre-logits layer of width 384, no
dropout. Evaluators: minival (train[99%:]), val, ImageNet-v2, ReaL and a train[:2%] subset.
Expected: 76.5% top-1 on ImageNet val (paper, 90 epochs); big_vision takes 6-7 h on a TPUv3-8.
Where it fits (`python -m vit_jax.aot --config=configs/imagenet_s16.py --topology=smallest:v3
--num_classes=1000`, docs/tpu.md): the smallest v3 slice, a v3-8 (8 cores, 128 images each): 5.9 GiB
of a core's 16 GiB for the train step, compiled in 101 s on a 2-core CPU host.
Needs tfds `imagenet2012` (and `imagenet_v2`, `imagenet2012_real` for those evaluators) prepared
locally (no download here).
"""

from vit_jax.config import base_config


def get_config():
    c = base_config()  # 224 px, [-1, 1] inputs, AdamW b1 0.9 b2 0.999 lr 1e-3, clip 1.0, cosine
    c.dataset = "tfds:imagenet2012"
    c.train_split = "train[:99%]"
    c.eval_split = "validation"
    c.batch_size = 1024
    c.shuffle_buffer = 250_000
    # decode_jpeg_and_inception_crop(224) defaults: area 5-100%, aspect 0.75-1.33.
    c.aug.update(dict(crop_area_min=0.05, crop_aspect=(0.75, 1.33), randaug_n=2, mixup_alpha=0.2))
    c.aug.eval_crop_pct = 0.875  # resize_small(256) | central_crop(224)
    c.model.variant = "S/16"
    c.model.posemb = "sincos2d"
    c.model.pool = "gap"
    c.model.cls_token = False
    c.model.representation_size = 384  # rep_size=True: the width
    c.model.dtype = "bfloat16"
    c.weight_decay_form = "schedule"  # big_vision's config.wd = 0.0001 (our default number)
    c.total_steps = 111_477  # round(90 epochs x 1,268,355 images of train[:99%] / 1024)
    c.warmup_steps = 10_000
    # big_vision's evaluators (classification: top-1 of the argmax; ReaL: the argmax is one of the
    # image's real labels, images without any left out), each every 2500 steps.
    c.evals.train = dict(type="classification", split="train[:2%]")
    c.evals.minival = dict(type="classification", split="train[99%:]")
    c.evals.val = dict(type="classification", split="validation")
    c.evals.v2 = dict(type="classification", dataset="tfds:imagenet_v2", split="test")
    c.evals.real = dict(
        type="multilabel",
        dataset="tfds:imagenet2012_real",
        split="validation",
        label_key="real_label",
    )
    c.best_metric = "minival/top1"  # with keep_best: chosen on held-out train images, never val
    c.eval_every = 2500
    c.checkpoint_every = 1000
    return c
