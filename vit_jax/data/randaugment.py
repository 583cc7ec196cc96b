"""RandAugment (Cubuk et al., 2019) as stateless TF ops on float32 images [h, w, 3] in [0, 255].

Each of N layers picks one of `OPS` uniformly and applies it with probability 0.5 at magnitude M
(usual scale 0..10; `level` = +-M/10). Magnitudes follow timm's "increasing" variants, so a
larger M always distorts more (the paper's posterize/solarize/enhance scales are not monotonic).
Ops without a natural direction (rotate, shear, translate, enhance) get a random sign.
"""

import functools
import math

from vit_jax.data._tf import tf

_FILL = 128.0  # Gray for pixels that geometric ops bring in from outside the image.


def _clip(image):
    return tf.clip_by_value(image, 0.0, 255.0)


def _blend(degenerate, image, factor):
    """PIL ImageEnhance: factor 0 gives `degenerate`, 1 the image, >1 extrapolates."""
    return _clip(degenerate + factor * (image - degenerate))


def _transform(image, transform):
    """Applies the projective map output (x, y) -> input [a0 x + a1 y + a2, b0 x + b1 y + b2]."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32),
        output_shape=tf.shape(image)[:2],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=_FILL,
    )[0]


def auto_contrast(image, level):
    """Stretches each channel to the full [0, 255] range."""
    del level
    lo = tf.reduce_min(image, axis=[0, 1])
    hi = tf.reduce_max(image, axis=[0, 1])
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-3), 1.0)
    return _clip(tf.where(hi > lo, (image - lo) * scale, image))


def _equalize_channel(channel):
    """PIL's histogram equalisation of one int32 [h, w] channel."""
    hist = tf.math.bincount(channel, minlength=256, maxlength=256)
    step = (tf.reduce_sum(hist) - hist[tf.reduce_max(channel)]) // 255
    lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step == 0, channel, tf.gather(lut, channel))


def equalize(image, level):
    """Equalises each channel's histogram."""
    del level
    channels = tf.unstack(tf.cast(tf.round(image), tf.int32), num=3, axis=-1)
    return tf.cast(tf.stack([_equalize_channel(c) for c in channels], -1), tf.float32)


def invert(image, level):
    del level
    return 255.0 - image


def rotate(image, level):
    """Rotates about the centre by up to 30 degrees at |level| = 1."""
    angle = level * 30.0 * math.pi / 180.0
    h, w = (tf.cast(d, tf.float32) - 1.0 for d in tf.unstack(tf.shape(image)[:2]))
    cos, sin = tf.cos(angle), tf.sin(angle)
    dx = (w - (cos * w - sin * h)) / 2.0
    dy = (h - (sin * w + cos * h)) / 2.0
    return _transform(image, [cos, -sin, dx, sin, cos, dy, 0.0, 0.0])


def posterize(image, level):
    """Keeps 8 - 4|level| bits per channel (4 bits at |level| = 1)."""
    drop = tf.clip_by_value(tf.round(4.0 * tf.abs(level)), 0.0, 7.0)
    step = tf.pow(2.0, drop)
    return tf.floor(tf.round(image) / step) * step


def solarize(image, level):
    """Inverts pixels above 256 (1 - |level|); all of them at |level| = 1."""
    threshold = 256.0 * (1.0 - tf.minimum(tf.abs(level), 1.0))
    return tf.where(image < threshold, image, 255.0 - image)


def solarize_add(image, level):
    """Adds up to 110 to pixels below 128."""
    return tf.where(image < 128.0, _clip(image + 110.0 * tf.abs(level)), image)


def color(image, level):
    """Saturation factor 1 +- 0.9|level|."""
    gray = tf.image.rgb_to_grayscale(image)
    return _blend(gray, image, 1.0 + 0.9 * level)


def contrast(image, level):
    """Contrast factor 1 +- 0.9|level| around the mean gray level."""
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
    return _blend(mean, image, 1.0 + 0.9 * level)


def brightness(image, level):
    """Brightness factor 1 +- 0.9|level|."""
    return _blend(tf.zeros_like(image), image, 1.0 + 0.9 * level)


def sharpness(image, level):
    """Sharpness factor 1 +- 0.9|level| against PIL's smoothing kernel (borders untouched)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    pad = [[1, 1], [1, 1], [0, 0]]
    inside = tf.pad(tf.ones_like(smooth, tf.bool), pad)
    degenerate = tf.where(inside, tf.pad(smooth, pad), image)
    return _blend(degenerate, image, 1.0 + 0.9 * level)


def shear_x(image, level):
    """Horizontal shear of up to 0.3 at |level| = 1."""
    return _transform(image, [1.0, 0.3 * level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
    return _transform(image, [1.0, 0.0, 0.0, 0.3 * level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, level):
    """Horizontal shift of up to 45% of the width at |level| = 1."""
    dx = 0.45 * level * tf.cast(tf.shape(image)[1], tf.float32)
    return _transform(image, [1.0, 0.0, -dx, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, level):
    dy = 0.45 * level * tf.cast(tf.shape(image)[0], tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -dy, 0.0, 0.0])


OPS = (
    auto_contrast,
    equalize,
    invert,
    rotate,
    posterize,
    solarize,
    solarize_add,
    color,
    contrast,
    brightness,
    sharpness,
    shear_x,
    shear_y,
    translate_x,
    translate_y,
)


def _layer(image, seed, magnitude: float, prob: float):
    """With probability `prob`, one uniformly chosen op at level +-magnitude / 10."""
    op_seed, sign_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    op = tf.random.stateless_uniform([], op_seed, 0, len(OPS), tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    branches = [functools.partial(fn, image, sign * magnitude / 10.0) for fn in OPS]
    apply = tf.random.stateless_uniform([], apply_seed) < prob
    out = tf.cond(apply, lambda: tf.switch_case(op, branches), lambda: image)
    out.set_shape(image.shape)
    return out


def randaugment(image, seed, num_layers: int, magnitude: float, prob: float = 0.5):
    """Applies `num_layers` random ops of strength `magnitude` (0..10 scale).

    Args:
      image: float32 [h, w, 3] in [0, 255].
      seed: int [2] stateless seed; the result is a pure function of (image, seed).
      num_layers: N, ops applied in sequence.
      magnitude: M; 10 is the strongest usual setting.
      prob: probability that each layer applies its op.

    Returns:
      float32 [h, w, 3] in [0, 255].
    """
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        image = _layer(image, layer_seed, magnitude, prob)
    return image
