"""Per-example image preprocessing: decode, inception crop, flip, resize, normalise (TF ops).

Train randomness is stateless: every function takes a `seed` (int [2] tensor) and is a pure
function of its inputs, so a batch depends only on (config.seed, position in the stream).
"""

from typing import Sequence, Tuple

from vit_jax.data import image_limit
from vit_jax.data._tf import tf
from vit_jax.data.options import AugConfig
from vit_jax.data.randaugment import randaugment


def decode(data) -> "tf.Tensor":
    """uint8 [h, w, 3] from encoded bytes (JPEG/PNG/GIF/BMP; gray and RGBA become RGB) or pixels.
    Encoded images whose header claims too many pixels fail before decoding (`image_limit`)."""
    if data.dtype != tf.string:
        return data
    return _decode_image(image_limit.checked(data))


def _decode_image(data):
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def crop_window(shape, seed, area: Tuple[float, float], aspect: Tuple[float, float]):
    """Inception-style random crop of an image of `shape` [h, w, c].

    Returns:
      (offset_y, offset_x, height, width) int32 scalars; the whole image after 10 failed tries.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[0], begin[1], size[0], size[1]


def decode_and_random_crop(data, seed, area, aspect):
    """Decodes and crops; JPEGs decode only the crop window, which is much faster for big images."""
    if data.dtype != tf.string:
        y, x, h, w = crop_window(tf.shape(data), seed, area, aspect)
        return data[y : y + h, x : x + w]
    data = image_limit.checked(data)

    def jpeg():
        y, x, h, w = crop_window(tf.image.extract_jpeg_shape(data), seed, area, aspect)
        return tf.image.decode_and_crop_jpeg(data, tf.stack([y, x, h, w]), channels=3)

    def other():
        image = _decode_image(data)
        y, x, h, w = crop_window(tf.shape(image), seed, area, aspect)
        return image[y : y + h, x : x + w]

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def resize(image, size: int, method: str = "bilinear"):
    """float32 [size, size, 3] in [0, 255]; antialiased (bilinear default), so downscaling doesn't alias."""
    image = tf.image.resize(image, [size, size], method=method, antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def resize_central_crop(image, size: int, crop_pct: float, method: str = "bilinear"):
    """Resizes the shorter side to size / crop_pct, then takes the central size x size square."""
    if crop_pct == 1.0:
        return resize(image, size, method)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / crop_pct / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    image = tf.image.resize(image, new_shape, method=method, antialias=True)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    return tf.clip_by_value(image[top : top + size, left : left + size], 0.0, 255.0)


def normalize(image, mean: Sequence[float], std: Sequence[float]):
    """Maps [0, 255] pixels to (x / 255 - mean) / std per channel."""
    return (image / 255.0 - tf.constant(mean)) / tf.constant(std)


def train_image(data, seed, size: int, aug: AugConfig):
    """One augmented train image: crop, resize, flip, RandAugment, normalise.

    Args:
      data: encoded bytes or uint8 [h, w, 3].
      seed: int [2] stateless seed of this example.
      size: output side.
      aug: augmentation settings.

    Returns:
      float32 [size, size, 3], normalised.
    """
    crop_seed, flip_seed, randaug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if aug.crop_area_min < 1.0:
        area = (aug.crop_area_min, aug.crop_area_max)
        image = decode_and_random_crop(data, crop_seed, area, aug.crop_aspect)
    else:
        image = decode(data)
    image = resize(image, size)
    if aug.flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if aug.randaug_n:
        image = randaugment(image, randaug_seed, aug.randaug_n, aug.randaug_m)
    return normalize(image, aug.mean, aug.std)


def eval_image(data, size: int, aug: AugConfig):
    """One deterministic eval image: resize (and central crop), normalise -> [size, size, 3]."""
    image = resize_central_crop(decode(data), size, aug.eval_crop_pct, aug.eval_interpolation)
    return normalize(image, aug.mean, aug.std)
