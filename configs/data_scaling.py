"""The data-scaling study (docs/data_efficiency.md): does a ViT need huge data? One config per
model family, all trained with the same recipe; `scripts/data_scaling.py` trains each on
class-balanced fractions of CIFAR-10 train for the same number of steps (same images seen).

  python scripts/data_scaling.py --dataset=folder:/path/to/cifar10-jpg.tar.gz \
      --workdir=docs/data_efficiency --lock=/tmp/vit_cpu.lock

FAMILY (`--config=configs/data_scaling.py:FAMILY` trains one alone through vit_jax.main):
  vit_learn, vit_sincos2d  pure ViT, patch 4 (8×8 tokens), width 128, depth 6, GAP: 0.81 M params,
                           114 MFLOPs per 32 px image
  cct                      conv tokenizer (2 conv-ReLU-max-pool stages, 8×8 tokens) + sequence
                           pooling (Hassani et al. 2021), same encoder: 0.88 M
  spt_lsa                  Shifted Patch Tokenization + Locality Self-Attention (Lee et al. 2021)
  hybrid                   the ViT paper's ResNet root (7×7/2 conv, max-pool) + one bottleneck stage,
                           1×1 patches on the 8×8 map, same encoder: 0.92 M, 132 MFLOPs
  resnet                   ResNet-56 (He et al. 2016, CIFAR layout, BatchNorm): 0.85 M, 251 MFLOPs
  vit_distill              vit_learn + DeiT's hard distillation with the distillation token (alpha
                           0.5); each run's teacher is the resnet run of the same size and seed
                           (TEACHERS; the study script sets config.distill.teacher per run)

The recipe (every family): AdamW lr 2e-3, weight decay 0.05, label smoothing 0.1, batch 128,
Inception crop (area 0.35-1) + flip, `total_steps` steps whatever the training-set size; top-1 on
the whole test split, few-shot (1/5/10/25) and 20-NN on the frozen features against train[:20%].
"""

from vit_jax.config import load_config, with_model

# What each family changes in the base below (a ViT of width 128, depth 6, patch 4, GAP).
FAMILY_OPTIONS = {
    "vit_learn": {},
    "vit_sincos2d": {"posemb": "sincos2d"},
    "cct": {"tokenizer": "conv", "conv_layers": 2, "pool": "seq"},  # 2 stages: /4, 8x8 tokens
    "spt_lsa": {"tokenizer": "spt", "lsa": True},
}
# The hybrid keeps the ViT's encoder options; its stem: the root block + one bottleneck stage
# (32 px / 4 = an 8x8 map of 256 channels), read by 1x1 patches.
HYBRID_OPTIONS = {"patch_size": 1, "resnet_layers": (1,), "resnet_width": 1}
# Distillation families: the student's options and the family whose run (same size, same seed)
# teaches it. After the teacher in FAMILIES, so a seed's teacher is trained first.
DISTILL_OPTIONS = {"vit_distill": {"distill_token": True}}
DISTILL = {"vit_distill": {"kind": "hard"}}  # alpha: the default 0.5, DeiT's
TEACHERS = {"vit_distill": "resnet"}
# The study's order (scripts/data_scaling.py runs seed by seed): the plain ViT and the CNN first.
FAMILIES = ("vit_learn", "resnet", "cct", "hybrid", "vit_sincos2d", "spt_lsa", *DISTILL_OPTIONS)


def get_config(family: str = "vit_learn", teacher: str = ""):
    """teacher: a distillation family's teacher workdir (scripts/data_scaling.py sets it per run;
    `--config=configs/data_scaling.py:vit_distill` alone needs `--config.distill.teacher=DIR`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    c = load_config("ablation_cifar10.py", relative_to=__file__)
    c.eval_split = "test"  # all 10,000 test images
    c.total_steps = 600  # 76,800 images seen, whatever the fraction of train
    c.warmup_steps = 50
    c.checkpoint_every = 200
    c.model.depth = 6
    if family in FAMILY_OPTIONS:
        c.model.update(FAMILY_OPTIONS[family])
    elif family in DISTILL_OPTIONS:  # DeiT: 1/2 CE(class head) + 1/2 CE(distill head, teacher)
        c.model.update(DISTILL_OPTIONS[family])
        c.distill.update(DISTILL[family], teacher=teacher)
    elif family == "hybrid":  # the same encoder on the 8x8 map of the ResNet root + one stage
        c = with_model(c, "hybrid", keep_shared=True)
        c.model.update(HYBRID_OPTIONS)
    else:
        c = with_model(c, "resnet", "R56")
    return c
