"""Decoding, inception crop, resize/central crop and normalisation."""

import io

import numpy as np
from PIL import Image

from vit_jax.data import preprocess
from vit_jax.data._tf import tf
from vit_jax.data.options import AugConfig


def encoded(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return tf.constant(buffer.getvalue())


SMOOTH = np.stack(np.meshgrid(np.arange(48) * 5, np.arange(64) * 3, indexing="xy"), -1)
SMOOTH = np.concatenate([SMOOTH, SMOOTH[..., :1]], -1).astype(np.uint8)  # [64, 48, 3]


def test_crop_windows_respect_area_and_aspect_ranges():
    for s in range(30):
        y, x, h, w = (
            int(v)
            for v in preprocess.crop_window(
                tf.constant([64, 48, 3]), tf.constant([s, 0], tf.int64), (0.2, 0.6), (0.75, 1.33)
            )
        )
        assert 0 <= y and y + h <= 64 and 0 <= x and x + w <= 48
        assert 0.19 <= h * w / (64 * 48) <= 0.61
        assert 0.7 <= w / h <= 1.4


def test_jpeg_crop_fast_path_matches_decode_then_crop():
    data = encoded(SMOOTH, "JPEG")
    seed = tf.constant([3, 4], tf.int64)
    fast = preprocess.decode_and_random_crop(data, seed, (0.3, 0.6), (0.75, 1.33))
    slow = preprocess.decode_and_random_crop(
        preprocess.decode(data), seed, (0.3, 0.6), (0.75, 1.33)
    )
    assert fast.shape == slow.shape and fast.shape[0] < 64
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=8)  # Chroma upsampling at edges.


def test_png_decodes_exactly_and_normalises_to_minus_one_one():
    image = preprocess.decode(encoded(SMOOTH, "PNG"))
    np.testing.assert_array_equal(image, SMOOTH)
    out = preprocess.normalize(tf.constant([[[0.0, 127.5, 255.0]]]), (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_allclose(out, [[[-1.0, 0.0, 1.0]]])


def test_eval_central_crop_drops_the_border():
    framed = np.full((32, 32, 3), 255, np.uint8)
    framed[8:24, 8:24] = 0
    plain = preprocess.resize_central_crop(tf.constant(framed), 8, 1.0)
    cropped = preprocess.resize_central_crop(tf.constant(framed), 8, 0.25)  # 32 -> crop 8.
    assert plain.shape == cropped.shape == (8, 8, 3)
    assert plain.numpy().max() > 200 and cropped.numpy().max() == 0
    wide = preprocess.resize_central_crop(tf.zeros([40, 80, 3], tf.uint8), 16, 0.875)
    assert wide.shape == (16, 16, 3)


def test_train_image_without_augmentation_equals_eval_image():
    aug = AugConfig(crop_area_min=1.0, flip=False)
    data = encoded(SMOOTH, "PNG")
    train = preprocess.train_image(data, tf.constant([0, 0], tf.int64), 24, aug)
    np.testing.assert_array_equal(train, preprocess.eval_image(data, 24, aug))


def test_train_image_is_a_pure_function_of_the_seed():
    aug = AugConfig(crop_area_min=0.2, flip=True, randaug_n=2)
    data = encoded(SMOOTH, "JPEG")
    a, b, c = (
        preprocess.train_image(data, tf.constant([0, s], tf.int64), 16, aug) for s in (1, 1, 2)
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (16, 16, 3) and -1 <= a.numpy().min() and a.numpy().max() <= 1
