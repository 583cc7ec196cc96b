"""Per-clip preprocessing (TF ops): the image steps with one crop and one flip for every frame.

A clip is uint8 `[T, h, w, 3]` (frames, or the slices of a volume), or string `[T]`: a folder's
encoded frames, of which only the sampled window is decoded. A window of `config.clip_frames`
frames `clip_stride` apart is taken first (`train_window`: random, `eval_windows`: evenly spaced,
the TF twins of `clips.random_start` / `clips.window_starts`); the output float32
`[T, size, size, 3]` (eval with `eval_clips` K > 1: `[K, T, size, size, 3]`), normalised.
RandAugment is image-only (not applied to clips).
"""

from vit_jax.data._tf import tf
from vit_jax.data.options import AugConfig, DataConfig
from vit_jax.data.preprocess import crop_window, decode, normalize

_WINDOW_SEED_TAG = 2  # a clip's window seed, apart from its crop and flip seeds


def _frames(clip, idx):
    """The frames `idx` of a clip, decoded uint8 `[len(idx), h, w, 3]`."""
    window = tf.gather(clip, idx)
    if clip.dtype != tf.string:
        return window
    spec = tf.TensorSpec([None, None, 3], tf.uint8)
    return tf.map_fn(decode, window, fn_output_signature=spec)


def _indices(length, starts, cfg: DataConfig):
    """int32 `[len(starts) * clip_frames]`: each window's frames (past the end: the last frame)."""
    steps = cfg.clip_stride * tf.range(cfg.clip_frames)
    return tf.reshape(tf.minimum(starts[:, None] + steps[None], length - 1), [-1])


def train_window(clip, seed, cfg: DataConfig):
    """A random window, uniform over the starts that fit (`clips.random_start`); the whole clip
    when `clip_frames` is None."""
    if cfg.clip_frames is None:
        return _frames(clip, tf.range(tf.shape(clip)[0]))
    length = tf.shape(clip)[0]
    room = tf.maximum(length - (cfg.clip_frames - 1) * cfg.clip_stride, 1)
    key = tf.random.experimental.stateless_fold_in(seed, _WINDOW_SEED_TAG)
    start = tf.random.stateless_uniform([1], key, minval=0, maxval=room, dtype=tf.int32)
    return _frames(clip, _indices(length, start, cfg))


def eval_windows(clip, cfg: DataConfig):
    """`eval_clips` evenly spaced windows, frames concatenated (`clips.window_starts`)."""
    length = tf.shape(clip)[0]
    if cfg.clip_frames is None:
        return _frames(clip, tf.range(length))
    k = cfg.eval_clips
    room = tf.maximum(length - (cfg.clip_frames - 1) * cfg.clip_stride - 1, 0)
    if k == 1:
        starts = room[None] // 2
    else:  # round half to even, as Python's round
        share = tf.cast(room * tf.range(k), tf.float64) / (k - 1)
        starts = tf.cast(tf.round(share), tf.int32)
    return _frames(clip, _indices(length, starts, cfg))


def train_example(clip, seed, cfg: DataConfig):
    """A train clip: a random window, then `train_clip`."""
    return train_clip(train_window(clip, seed, cfg), seed, cfg.image_size, cfg.aug)


def eval_example(clip, cfg: DataConfig):
    """An eval clip: its `eval_clips` windows through `eval_clip` (`[K, T, ...]` when K > 1)."""
    frames = eval_clip(eval_windows(clip, cfg), cfg.image_size, cfg.aug)
    if cfg.eval_clips == 1 or cfg.clip_frames is None:
        return frames
    return tf.reshape(frames, [cfg.eval_clips, cfg.clip_frames, cfg.image_size, cfg.image_size, 3])


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
    """A record's "image" is a clip: decoded pixels of rank 4, or encoded frames of rank 1."""
    return data.shape.rank == (1 if data.dtype == tf.string else 4)
