"""ViT-g/14 pretraining, "Scaling Vision Transformers" (Zhai, Kolesnikov, Houlsby, Beyer 2022).

  python -m vit_jax.aot --config=configs/vit_g14.py --topology=v5p:4x4x8     # fits? (no TPU needed)
  python -m vit_jax.main --config=configs/vit_g14.py --workdir=gs://.../g14 --config.dataset=tfds:NAME

big_vision's big_vision/configs/proj/scaling_laws/train_vit_g.py, value for value: ViT-g/14 (width
1408, depth 40, MLP 6144, 16 heads, 1.0B parameters) with MAP pooling and the head bias at -10,
sigmoid cross-entropy, batch 16,384 at 224 px (Inception crop + flip), big_vision's Adafactor
(factored second moment, momentum 0.9 kept in bfloat16: `bv_adafactor`), lr 8e-4 with the rsqrt
schedule (timescale 10k, 10k warmup, 50k cooldown) over 1M steps, global-norm clip 1.0, weight decay
0.03 x lr on kernels and 100x that on the head (big_vision's wd = 0.03 * 8e-4 in its "schedule"
form), bfloat16 compute. The paper trains on JFT-3B (29,593 classes; not public): `num_classes`
keeps its head, `dataset` is a stand-in with the same pipeline. TPU layout: the blocks run under
`scan` with full rematerialisation, parameters and optimizer state sharded (FSDP) over 16 devices.

Where it fits, measured with `python -m vit_jax.aot --config=configs/vit_g14.py --topology=v5p:4x4x8`
on a 2-core CPU host (libtpu 0.0.42.1; docs/tpu.md): on a v5p-256 (128 chips, 128 images each, mesh
data 8 x fsdp 16) the train step takes 24.7 GiB of a chip's 95 GiB (temporaries 24.1, state 0.5),
the eval step 1.1 GiB; compiles in 376 s (train) and 48 s (eval); 1,078M parameters with the
29,593-class head; roofline 0.45 s/step at the chips' bf16 peak = 36,700 img/s at most.
"""

from vit_jax.config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:imagenet2012"  # stand-in for JFT-3B; point it at your data
    c.eval_split = "validation"
    c.num_classes = 29_593  # JFT-3B's classes, the paper's head
    c.batch_size = 16_384
    c.eval_batch_size = 4096
    c.shuffle_buffer = 250_000
    c.aug.update(dict(crop_area_min=0.05, crop_aspect=(0.75, 1.33)))
    c.aug.eval_crop_pct = 0.875  # resize_small(256) | central_crop(224)
    c.model.variant = "g/14"
    c.model.pool = "map"
    c.model.head_bias_init = -10.0
    c.model.dtype = "bfloat16"
    c.model.scan = True
    c.model.remat = True
    c.loss = "sigmoid_xent"
    c.optimizer = "bv_adafactor"  # b1 = 0.9: its momentum, in bfloat16
    c.lr = 8e-4
    c.weight_decay_form = "schedule"
    c.weight_decay = 0.03 * 8e-4
    c.wd_mults = ((".*head/kernel", 100.0), (".*/kernel", 1.0))
    c.schedule = "rsqrt"  # timescale 10k: the default rsqrt_timescale; global-norm clip 1.0 too
    c.warmup_steps = 10_000
    c.cooldown_steps = 50_000
    c.total_steps = 1_000_000
    c.mesh.fsdp = 16  # data: the remaining devices
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c
