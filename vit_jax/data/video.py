"""Per-clip preprocessing (TF ops): the image steps with one crop and one flip for every frame.

A clip is uint8 `[T, h, w, 3]` (frames, or the slices of a volume); the output float32
`[T, size, size, 3]`, normalised. RandAugment is image-only (not applied to clips).
"""

from vit_jax.data._tf import tf
from vit_jax.data.options import AugConfig
from vit_jax.data.preprocess import crop_window, normalize


def train_clip(clip, seed, size: int, aug: AugConfig):
    """One augmented train clip: the same inception crop and flip on every frame, resize, normalise."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if aug.crop_area_min < 1.0:
        area = (aug.crop_area_min, aug.crop_area_max)
        y, x, h, w = crop_window(tf.shape(clip)[1:], crop_seed, area, aug.crop_aspect)
        clip = clip[:, y : y + h, x : x + w]
    clip = tf.clip_by_value(tf.image.resize(clip, [size, size], antialias=True), 0.0, 255.0)
    if aug.flip:
        coin = tf.random.stateless_uniform([], flip_seed) < 0.5
        clip = tf.where(coin, tf.reverse(clip, axis=[2]), clip)
    return normalize(clip, aug.mean, aug.std)


def eval_clip(clip, size: int, aug: AugConfig):
    """One deterministic eval clip: shorter side to size / eval_crop_pct, central crop, normalise."""
    shape = tf.cast(tf.shape(clip)[1:3], tf.float32)
    scale = size / aug.eval_crop_pct / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    clip = tf.image.resize(clip, new, method=aug.eval_interpolation, antialias=True)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return normalize(tf.clip_by_value(clip[:, top : top + size, left : left + size], 0.0, 255.0),
                     aug.mean, aug.std)  # fmt: skip


def is_clip(data) -> bool:
    """A record's "image" is a clip: decoded pixels of rank 4."""
    return data.dtype != tf.string and data.shape.rank == 4
