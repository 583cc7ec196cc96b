"""RandAugment ops against PIL's definitions and their defining properties."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from vit_jax.data import randaugment as ra
from vit_jax.data._tf import tf

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (12, 16, 3)).astype(np.uint8)
PIXELS[:, :, 2] //= 2  # Channels with different ranges, so per-channel ops show.


def run(op, level, pixels=PIXELS):
    return op(tf.constant(pixels, tf.float32), tf.constant(level, tf.float32)).numpy()


@pytest.mark.parametrize("op", ra.OPS, ids=lambda op: op.__name__)
@pytest.mark.parametrize("level", [-1.0, 0.3, 1.0])
def test_ops_keep_shape_and_range(op, level):
    out = run(op, level)
    assert out.shape == PIXELS.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize(
    "op, level, pil",
    [
        (ra.invert, 1.0, ImageOps.invert),
        (ra.equalize, 1.0, ImageOps.equalize),
        (ra.auto_contrast, 1.0, ImageOps.autocontrast),
        (ra.posterize, 1.0, lambda im: ImageOps.posterize(im, 4)),
        (ra.posterize, 0.5, lambda im: ImageOps.posterize(im, 6)),
        (ra.solarize, 0.5, lambda im: ImageOps.solarize(im, 128)),
        (ra.color, -0.5, lambda im: ImageEnhance.Color(im).enhance(0.55)),
        (ra.brightness, 0.5, lambda im: ImageEnhance.Brightness(im).enhance(1.45)),
        (ra.contrast, -1.0, lambda im: ImageEnhance.Contrast(im).enhance(0.1)),
        (ra.sharpness, 1.0, lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_pixel_ops_match_pil(op, level, pil):
    expected = np.asarray(pil(Image.fromarray(PIXELS)), np.float32)
    np.testing.assert_allclose(run(op, level), expected, atol=2.5)  # PIL rounds to uint8.


@pytest.mark.parametrize(
    "op",
    [ra.rotate, ra.color, ra.contrast, ra.brightness, ra.sharpness, ra.shear_x, ra.translate_y],
    ids=lambda op: op.__name__,
)
def test_level_zero_is_identity(op):
    np.testing.assert_allclose(run(op, 0.0), PIXELS, atol=1e-3)


def test_rotate_by_90_degrees_turns_a_square():
    square = PIXELS[:12, :12]
    out = run(ra.rotate, 3.0, square)  # 3 * 30 degrees.
    assert any(np.allclose(out, np.rot90(square, k), atol=1e-2) for k in (1, -1))


def test_translate_moves_content_and_fills_gray():
    out = run(ra.translate_x, 2 / (0.45 * 16), PIXELS)  # Two pixels to the right.
    np.testing.assert_allclose(out[:, 2:], PIXELS[:, :-2], atol=1e-2)
    np.testing.assert_allclose(out[:, :2], 128.0)


def test_randaugment_is_a_pure_function_of_the_seed():
    image = tf.constant(PIXELS, tf.float32)
    seeds = [tf.constant([0, s], tf.int64) for s in range(8)]
    outs = [ra.randaugment(image, s, 2, 10).numpy() for s in seeds]
    again = [ra.randaugment(image, s, 2, 10).numpy() for s in seeds]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in outs}) > 4  # Different seeds pick different ops.
    np.testing.assert_array_equal(ra.randaugment(image, seeds[0], 3, 10, prob=0.0), PIXELS)
