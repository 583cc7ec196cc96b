"""Video quickstart: a small ViViT on offline moving digits (the direction of motion: needs time).

  python -m vit_jax.main --config=configs/video_digits.py --workdir=/tmp/vit_video

Clips of 8 frames, 16×16 px (`moving_digits:direction`, vit_jax/data/moving_digits.py): two digits
moving up, down, left or right; 4 classes, chance 25%. Tubelets 2×4×4 (4 × 16 = 64 tokens), width 32,
depth 2, joint space-time attention, separable learned position tables. `moving_digits:digits`
(which digit: one frame suffices) is the control task. See docs/video.md.
"""

from vit_jax.config import base_config


def get_config():
    c = base_config("vivit")
    c.dataset = "moving_digits:direction"
    c.image_size = 16
    c.aug.crop_area_min = 1.0  # a crop would hide the motion's start; no flip: left/right labels
    c.aug.flip = False
    c.model.variant = None
    c.model.update(dict(patch_size=4, hidden_size=32, depth=2, mlp_dim=64, num_heads=2))
    c.model.update(dict(tubelet_size=2, num_frames=8, encoder="joint", posemb="learn_sep"))
    c.model.pool = "gap"
    c.batch_size = 64
    c.total_steps = 300
    c.warmup_steps = 30
    c.lr = 2e-3
    c.weight_decay = 0.05
    c.eval_every = 100
    c.checkpoint_every = 100
    # --config.init_from.path=IMAGE.npz inflates an image ViT (vit_jax/weights/inflate.py): the
    # 2-D patch kernel repeated over the tubelet's frames / t (init_from.inflate="repeat", the
    # default) or on its middle frame only ("central_frame")
    return c
