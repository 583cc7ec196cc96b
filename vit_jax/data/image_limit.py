"""The decompression-bomb guard: an image's size is read from its header before it is decoded.

A JPEG or PNG of a few hundred bytes can claim 60000 x 60000 pixels; decoding it would allocate
10.8 GB (TensorFlow refuses, printing dozens of `jpeg_mem.cc ... Image too large` lines). As
Pillow's MAX_IMAGE_PIXELS, images whose header claims more than `max_pixels()` pixels are refused
before any decoding: `checked(data)` adds the check in front of the decoder, and
`describe(data)` names the size for the one error line (`vit_jax.data.folder`).

A JPEG cut short (no end-of-image marker) is refused the same way, before libjpeg prints
`Premature end of JPEG data` lines. Headers read: JPEG (`tf.image.extract_jpeg_shape`), PNG
(IHDR), GIF (logical screen), BMP. WebP and other formats are not checked (TensorFlow's own
decoder limits apply).
"""

import os
from typing import Optional, Tuple

from vit_jax.data._tf import tf

ENV = "VIT_JAX_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # 89,478,485: Pillow's MAX_IMAGE_PIXELS
TOO_LARGE = "image header claims more pixels than the decompression-bomb limit"
TRUNCATED = "a truncated JPEG: the file ends before its end-of-image marker; copy it again"


def max_pixels() -> int:
    """The limit: $VIT_JAX_MAX_IMAGE_PIXELS (a positive integer), else Pillow's 89,478,485."""
    text = os.environ.get(ENV, "")
    try:
        value = int(text) if text else DEFAULT_MAX_PIXELS
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{ENV}={text!r} must be a positive number of pixels, e.g. 200000000")
    return value


def _int(raw, start: int, size: int, big_endian: bool):
    digits = [raw[start + i] for i in range(size)]
    digits = digits if big_endian else digits[::-1]
    value = tf.constant(0, tf.int64)
    for d in digits:
        value = value * 256 + d
    return value


def header_size(data) -> "tf.Tensor":
    """int64 [2] (height, width) that the header of encoded `data` claims; (0, 0) when unknown."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), "\0" * 32]), 0, 32)
    raw = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    magic = tf.strings.substr(data, 0, 4)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def other():
        png = tf.stack([_int(raw, 20, 4, True), _int(raw, 16, 4, True)])
        gif = tf.stack([_int(raw, 8, 2, False), _int(raw, 6, 2, False)])
        height = _int(raw, 22, 4, False)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: a top-down BMP
        bmp = tf.stack([height, _int(raw, 18, 4, False)])
        size = tf.zeros([2], tf.int64)
        size = tf.where(tf.equal(magic, b"\x89PNG"), png, size)
        size = tf.where(tf.equal(magic, b"GIF8"), gif, size)
        return tf.where(tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp, size)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def jpeg_complete(data) -> "tf.Tensor":
    """False for a JPEG without an end-of-image marker (FF D9) anywhere: cut short, which
    TensorFlow's decoder refuses too, after libjpeg printed its own lines. Usually the last two
    bytes; trailers after the marker (some cameras') are searched for. Other formats: True."""
    tail = tf.strings.substr(data, tf.maximum(tf.strings.length(data) - 2, 0), 2)

    def search():
        raw = tf.io.decode_raw(data, tf.uint8)
        return tf.reduce_any(tf.logical_and(tf.equal(raw[:-1], 255), tf.equal(raw[1:], 217)))

    ends = tf.equal(tail, b"\xff\xd9")
    return tf.logical_or(
        tf.logical_not(tf.io.is_jpeg(data)),
        tf.cond(ends, lambda: tf.constant(True), search),
    )


def checked(data):
    """`data` again, after checking that its header claims at most `max_pixels()` pixels (an
    InvalidArgumentError starting with TOO_LARGE otherwise) and that a JPEG is not cut short
    (TRUNCATED); decode the result, not `data`."""
    with tf.control_dependencies([tf.debugging.Assert(jpeg_complete(data), [TRUNCATED])]):
        data = tf.identity(data)  # first: even reading a cut JPEG's header makes libjpeg print
    size = header_size(data)
    check = tf.debugging.assert_less_equal(
        size[0] * size[1], tf.constant(max_pixels(), tf.int64), message=TOO_LARGE
    )
    with tf.control_dependencies([check]):
        return tf.identity(data)


def describe(data) -> Optional[str]:
    """The one-line reason when eager `data` is over the limit, else None."""
    size: Tuple[int, int] = tuple(int(x) for x in header_size(data).numpy())
    limit = max_pixels()
    if size[0] * size[1] <= limit:
        return None
    return (
        f"its header claims {size[1]}x{size[0]} = {size[0] * size[1]:,} pixels, more than the "
        f"decompression-bomb limit of {limit:,}; a real image that large needs {ENV}=N"
    )
