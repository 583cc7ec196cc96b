"""Reads the data keys of a trainer config, filling in defaults, and checks them in one place.

The trainer passes an `ml_collections.ConfigDict`; any key it lacks falls back to the default
below, so a config only needs to say what differs. The rest of the package only sees the typed,
validated `DataConfig`.
"""

import dataclasses
from typing import Any, Optional, Tuple

from vit_jax.data.core import DataError


@dataclasses.dataclass(frozen=True)
class AugConfig:
    """`config.aug`: train augmentation and normalisation.

    Attributes:
      crop_area_min: smallest area fraction of the inception random-resized crop; 1.0 disables it.
      crop_area_max: largest area fraction of that crop.
      crop_aspect: (min, max) aspect ratio of that crop.
      flip: random horizontal flip (turn off for digits and text).
      randaug_n: number of RandAugment layers; 0 disables RandAugment.
      randaug_m: RandAugment magnitude on the usual 0..10 scale.
      mixup_alpha: Beta(alpha, alpha) parameter of mixup; 0 disables it.
      cutmix_alpha: Beta(alpha, alpha) parameter of cutmix; 0 disables it.
      mean: per-channel mean subtracted from images in [0, 1].
      std: per-channel std dividing them; the defaults map [0, 1] to [-1, 1] like the original ViT.
      eval_crop_pct: eval resizes the shorter side to image_size / eval_crop_pct and takes the
        central square; 1.0 (the default, right for small images) is a plain resize.
      eval_interpolation: "bilinear" or "bicubic" resize of eval images (antialiased); timm's
        checkpoints say bicubic (`vit_jax.config.from_checkpoint`).
    """

    crop_area_min: float = 0.08
    crop_area_max: float = 1.0
    crop_aspect: Tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    randaug_n: int = 0
    randaug_m: float = 10.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    eval_crop_pct: float = 1.0
    eval_interpolation: str = "bilinear"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data keys of the trainer config (see `AugConfig` for `config.aug`).

    Attributes:
      dataset: dataset string: "digits", "folder:PATH" (directory or .tar.gz) or "tfds:NAME".
      data_dir: tfds data directory (None: tfds' default).
      download: let tfds download and prepare a missing dataset (network); off by default.
      train_split: split string used for training, e.g. "train" or "train[:98%]".
      eval_split: split string used for evaluation.
      image_size: side of the square images fed to the model.
      batch_size: global train batch size, split evenly over processes.
      eval_batch_size: global eval batch size (None: batch_size).
      seed: seeds the epoch order and every augmentation.
      shuffle_buffer: tf.data shuffle buffer, used only by tfds sources (others use permutations).
      prefetch: batches prepared ahead of the trainer.
      skip_corrupt: skip and count undecodable image files instead of failing (folder sources).
      data_threads: tf.data threads (None: all CPU cores).
      image_key: tfds feature holding the image.
      label_key: tfds feature holding the class label.
      clip_frames: frames of a clip window (clips only; `vit_jax.data.clips`); None:
        `config.model.num_frames` (vivit), else every frame of the clip.
      clip_stride: frames between a window's frames (1: consecutive).
      eval_clips: evenly spaced windows per eval clip (`clips.window_starts`; 1: the centre one);
        the classification evaluators average the logits over them (ViViT's multi-clip eval).
      aug: augmentation settings.
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    download: bool = False
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 224
    batch_size: int = 128
    eval_batch_size: Optional[int] = None
    seed: int = 0
    shuffle_buffer: int = 10_000
    prefetch: int = 2
    skip_corrupt: bool = False
    data_threads: Optional[int] = None
    image_key: str = "image"
    label_key: str = "label"
    clip_frames: Optional[int] = None
    clip_stride: int = 1
    eval_clips: int = 1
    aug: AugConfig = AugConfig()


def _get(config: Any, key: str, default: Any) -> Any:
    """`config.key`, or `default` when the key is missing or None (works for dicts and objects)."""
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def _read(cls, config: Any, **overrides: Any):
    values = {f.name: _get(config, f.name, f.default) for f in dataclasses.fields(cls)}
    values.update(overrides)
    return cls(**values)


def read_config(config: Any) -> DataConfig:
    """Returns the validated `DataConfig` for a trainer config (ConfigDict, dict or None).

    Raises:
      DataError: a key has an impossible value; the message names the key.
    """
    aug = _read(AugConfig, _get(config, "aug", None))
    aug = dataclasses.replace(
        aug,
        crop_aspect=tuple(float(a) for a in aug.crop_aspect),
        mean=tuple(float(m) for m in aug.mean),
        std=tuple(float(s) for s in aug.std),
    )
    cfg = _read(DataConfig, config, aug=aug)
    if cfg.eval_batch_size is None:
        cfg = dataclasses.replace(cfg, eval_batch_size=cfg.batch_size)
    if cfg.clip_frames is None:  # a video model's clip length
        cfg = dataclasses.replace(
            cfg, clip_frames=_get(_get(config, "model", None), "num_frames", None)
        )
    _validate(cfg)
    return cfg


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise DataError(f"config.{key} must be {expected}, got {value!r}")


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _validate(cfg: DataConfig) -> None:
    aug = cfg.aug
    _check(cfg.image_size > 0, "image_size", cfg.image_size, "a positive int")
    _check(cfg.batch_size > 0, "batch_size", cfg.batch_size, "a positive int")
    _check(cfg.eval_batch_size > 0, "eval_batch_size", cfg.eval_batch_size, "a positive int")
    _check(cfg.seed >= 0, "seed", cfg.seed, "a non-negative int")
    _check(cfg.prefetch >= 0, "prefetch", cfg.prefetch, ">= 0")
    _check(cfg.shuffle_buffer >= 1, "shuffle_buffer", cfg.shuffle_buffer, ">= 1")
    frames = cfg.clip_frames
    _check(frames is None or _positive(frames), "clip_frames", frames, "None or an int >= 1")
    _check(_positive(cfg.clip_stride), "clip_stride", cfg.clip_stride, "an int >= 1")
    _check(_positive(cfg.eval_clips), "eval_clips", cfg.eval_clips, "an int >= 1")
    windows = cfg.eval_clips == 1 or frames is not None
    _check(
        windows, "eval_clips", cfg.eval_clips, "1 without config.clip_frames (or model.num_frames)"
    )
    threads = cfg.data_threads
    _check(threads is None or threads >= 1, "data_threads", threads, "None (all cores) or >= 1")
    _check(
        0 < aug.crop_area_min <= aug.crop_area_max <= 1,
        "aug.crop_area_min/crop_area_max",
        (aug.crop_area_min, aug.crop_area_max),
        "0 < min <= max <= 1",
    )
    _check(
        0 < aug.crop_aspect[0] <= aug.crop_aspect[1],
        "aug.crop_aspect",
        aug.crop_aspect,
        "(min, max) with 0 < min <= max",
    )
    _check(aug.randaug_n >= 0, "aug.randaug_n", aug.randaug_n, ">= 0")
    _check(aug.randaug_m >= 0, "aug.randaug_m", aug.randaug_m, ">= 0")
    _check(aug.mixup_alpha >= 0, "aug.mixup_alpha", aug.mixup_alpha, ">= 0")
    _check(aug.cutmix_alpha >= 0, "aug.cutmix_alpha", aug.cutmix_alpha, ">= 0")
    _check(
        len(aug.mean) == 3 and len(aug.std) == 3 and min(aug.std) > 0,
        "aug.mean/std",
        (aug.mean, aug.std),
        "three means and three positive stds",
    )
    _check(0 < aug.eval_crop_pct <= 1, "aug.eval_crop_pct", aug.eval_crop_pct, "in (0, 1]")
    interpolation = aug.eval_interpolation
    _check(
        interpolation in ("bilinear", "bicubic"),
        "aug.eval_interpolation",
        interpolation,
        "bilinear or bicubic",
    )
