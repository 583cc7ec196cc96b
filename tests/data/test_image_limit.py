"""The decompression-bomb guard (issue 26): sizes read from headers, bombs refused before decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from vit_jax.data import image_limit, preprocess
from vit_jax.data._tf import tf


def _encoded(fmt, height, width, mode="RGB"):
    rng = np.random.default_rng(height * 100 + width)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt)
    return buf.getvalue()


def bomb_jpeg(height=60000, width=60000) -> bytes:
    """A valid 8x8 JPEG whose SOF0 header claims height x width."""
    data = bytearray(_encoded("JPEG", 8, 8))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def bomb_png(height=50000, width=40000) -> bytes:
    data = bytearray(_encoded("PNG", 8, 8))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "fmt,mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("BMP", "RGB")]
)
def test_header_size_is_the_decoded_size(fmt, mode):
    for height, width in ((7, 5), (3, 300), (257, 2)):
        data = tf.constant(_encoded(fmt, height, width, mode))
        assert list(image_limit.header_size(data).numpy()) == [height, width]
        assert preprocess.decode(data).shape == (height, width, 3)  # the independent reference


def test_top_down_bmp_and_unknown_formats():
    data = bytearray(_encoded("BMP", 6, 4))
    data[22:26] = (2**32 - 6).to_bytes(4, "little")  # height -6: rows stored top-down
    assert list(image_limit.header_size(tf.constant(bytes(data))).numpy()) == [6, 4]
    assert list(image_limit.header_size(tf.constant(b"RIFF....WEBP")).numpy()) == [0, 0]
    assert list(image_limit.header_size(tf.constant(b"")).numpy()) == [0, 0]


def test_bombs_fail_before_decoding_with_their_size(monkeypatch):
    monkeypatch.delenv(image_limit.ENV, raising=False)
    for data, (h, w) in ((bomb_jpeg(), (60000, 60000)), (bomb_png(), (50000, 40000))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=image_limit.TOO_LARGE):
            preprocess.decode(tf.constant(data))
        assert image_limit.describe(tf.constant(data)) == (
            f"its header claims {w}x{h} = {h * w:,} pixels, more than the decompression-bomb "
            f"limit of 89,478,485; a real image that large needs {image_limit.ENV}=N"
        )
    assert image_limit.DEFAULT_MAX_PIXELS == 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
    assert image_limit.DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_the_limit_is_configurable_and_exact(monkeypatch):
    small = tf.constant(_encoded("PNG", 10, 10))
    monkeypatch.setenv(image_limit.ENV, "100")  # 10 x 10 is allowed, one pixel less is not
    assert preprocess.decode(small).shape == (10, 10, 3) and image_limit.describe(small) is None
    monkeypatch.setenv(image_limit.ENV, "99")
    with pytest.raises(tf.errors.InvalidArgumentError, match=image_limit.TOO_LARGE):
        preprocess.decode(small)
    seed = tf.constant([1, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=image_limit.TOO_LARGE):
        preprocess.decode_and_random_crop(
            tf.constant(_encoded("JPEG", 10, 10)), seed, (0.5, 1), (1, 1)
        )
    monkeypatch.setenv(image_limit.ENV, "lots")
    with pytest.raises(ValueError, match="VIT_JAX_MAX_IMAGE_PIXELS='lots' must be a positive"):
        image_limit.max_pixels()


def test_a_cut_jpeg_is_refused_before_libjpeg_reads_it(capfd):
    whole = _encoded("JPEG", 24, 16)
    assert whole.endswith(b"\xff\xd9")
    complete = lambda d: bool(image_limit.jpeg_complete(tf.constant(d)).numpy())  # noqa: E731
    assert complete(whole) and complete(whole + b"camera trailer" * 100)  # marker before a trailer
    png = _encoded("PNG", 24, 16)
    assert complete(png) and complete(png[:-20])  # other formats are not judged here
    for cut in (len(whole) // 3, len(whole) - 2, len(whole) - 1):
        assert not complete(whole[:cut])
        with pytest.raises(tf.errors.InvalidArgumentError, match=image_limit.TRUNCATED):
            preprocess.decode(tf.constant(whole[:cut]))
    assert "JPEG" not in capfd.readouterr().err  # libjpeg never saw the cut files
    np.testing.assert_array_equal(
        preprocess.decode(tf.constant(whole + b"x" * 50)).numpy(),
        preprocess.decode(tf.constant(whole)).numpy(),
    )
