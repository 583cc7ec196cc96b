"""The train and eval input pipelines: host-local batches of NumPy arrays for the trainer.

Every process reads only its own shard of a split (`splits.shard_range`, like
`tfds.even_splits`). Train batches are a pure function of (config, step, process): example
seeds are (seed, global position), where the example at slot j of process p's batch at step s
has global position s * batch_size + p * local_batch + j, so `start_step` resumes exactly.
"""

import dataclasses
import itertools
import math
import os
from typing import Iterator, Optional

import numpy as np

from vit_jax.data import splits, video
from vit_jax.data._tf import tf
from vit_jax.data.core import DataError, DatasetInfo, SourceOptions, first_line
from vit_jax.data.mix import mix_batch
from vit_jax.data.options import DataConfig, read_config
from vit_jax.data.preprocess import eval_image, train_image
from vit_jax.data.sources import Source, open_source

_MIX_SEED_TAG = 1  # Separates a batch's mixing seed from its first example's seed.
# Errors that mean "this input is bad"; anything else (OOM, cancellation) passes through as is.
_DATA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process sits: its index, the process count and its share of the batch."""

    process_index: int
    process_count: int
    local_batch: int
    global_batch: int

    @property
    def shard(self):
        return self.process_index, self.process_count


def place(
    global_batch: int, key: str, process_index=None, process_count=None, local_device_count=None
) -> Placement:
    """Splits a global batch over processes (default: JAX's) and checks it divides evenly.

    Raises:
      DataError: the batch does not divide over the processes or over this process' devices.
    """
    if process_index is None or process_count is None or local_device_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        local_device_count = local_device_count or jax.local_device_count()
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is not in [0, {process_count})")
    if global_batch % process_count:
        raise DataError(
            f"config.{key}={global_batch} is not divisible by the {process_count} processes"
        )
    local = global_batch // process_count
    if local % local_device_count:
        raise DataError(
            f"config.{key}={global_batch} gives {local} examples per process, not "
            f"divisible by its {local_device_count} devices"
        )
    return Placement(process_index, process_count, local, global_batch)


def get_info(dataset: str, split: str, data_dir: Optional[str] = None, **options) -> DatasetInfo:
    """Size and classes of a split, e.g. get_info("tfds:cifar10", "train[:98%]").

    Args:
      dataset: dataset string ("digits", "folder:PATH", "tfds:NAME").
      split: split string.
      data_dir: tfds data directory.
      **options: other `core.SourceOptions` fields (download, skip_corrupt, ...).
    """
    return open_source(dataset, split, SourceOptions(data_dir=data_dir, **options)).info


def open_split(cfg: DataConfig, split: str) -> Source:
    """Opens `split` of the configured dataset."""
    options = SourceOptions(
        cfg.data_dir, cfg.download, cfg.skip_corrupt, cfg.image_key, cfg.label_key
    )
    return open_source(cfg.dataset, split, options)


def _with_options(ds, cfg: DataConfig):
    options = tf.data.Options()
    options.deterministic = True  # Reproducible order; also required to name corrupt files.
    options.threading.private_threadpool_size = cfg.data_threads or os.cpu_count()
    options.threading.max_intra_op_parallelism = 1  # Parallelism comes from examples.
    return ds.prefetch(cfg.prefetch).with_options(options)


def train_dataset(cfg: DataConfig, source: Source, placement: Placement, start_step: int = 0):
    """tf.data.Dataset of augmented, mixed train batches from `start_step` on (endless)."""
    b, i = placement.local_batch, placement.process_index
    seed = tf.constant(cfg.seed, tf.int64)
    records = source.train_records(placement.shard, cfg.seed, start_step * b, cfg.shuffle_buffer)

    def example(record):
        k = record["k"]
        position = k // b * placement.global_batch + i * b + k % b
        data, example_seed = record["image"], tf.stack([seed, position])
        if video.is_clip(data):
            image = video.train_example(data, example_seed, cfg)
        else:
            image = train_image(data, example_seed, cfg.image_size, cfg.aug)
        return {"image": image, "label": record["label"], "position": position}

    def mix(batch):
        key = tf.stack([seed, batch["position"][0]])
        mix_seed = tf.random.experimental.stateless_fold_in(key, _MIX_SEED_TAG)
        images, soft = mix_batch(
            batch["image"],
            batch["label"],
            mix_seed,
            source.info.num_classes,
            cfg.aug.mixup_alpha,
            cfg.aug.cutmix_alpha,
        )
        return {"image": images, "label": batch["label"], "soft_label": soft}

    ds = records.map(example, tf.data.AUTOTUNE).batch(b, drop_remainder=True)
    return _with_options(ds.map(mix, tf.data.AUTOTUNE), cfg)


def _pad_batch(batch, size: int):
    """Pads a partial eval batch to `size` with masked-out entries (index -1)."""
    n = tf.shape(batch["label"])[0]

    def pad(x, value):
        paddings = [[0, size - n]] + [[0, 0]] * (len(x.shape) - 1)
        return tf.ensure_shape(tf.pad(x, paddings, constant_values=value), [size] + x.shape[1:])

    return {
        "image": pad(batch["image"], 0.0),
        "label": pad(batch["label"], 0),
        "mask": tf.range(size) < n,
        "index": pad(batch["index"], -1),
    }


def eval_dataset(cfg: DataConfig, source: Source, placement: Placement):
    """(tf.data.Dataset of padded eval batches, number of batches, same on every process)."""
    b, count = placement.local_batch, placement.process_count
    n, n_classes = source.info.num_examples, source.info.num_classes
    lo, hi = splits.shard_range(n, *placement.shard)
    num_batches = math.ceil(math.ceil(n / count) / b)
    own = math.ceil((hi - lo) / b)
    frames = _clip_dims(cfg, source)
    blank = {
        "image": tf.zeros([0, *frames, cfg.image_size, cfg.image_size, 3]),
        "label": tf.zeros([0, n_classes] if source.info.multi_label else [0], tf.int32),
        "index": tf.zeros([0], tf.int64),
    }
    ds = tf.data.Dataset.from_tensors(blank).repeat(num_batches - own)  # Whole padding batches.
    if hi > lo:

        def example(record):
            data = record["image"]
            if video.is_clip(data):
                image = video.eval_example(data, cfg)
            else:
                image = eval_image(data, cfg.image_size, cfg.aug)
            return {"image": image, "label": record["label"], "index": record["id"]}

        records = source.eval_records(placement.shard).map(example, tf.data.AUTOTUNE)
        ds = records.batch(b).concatenate(ds)
    ds = ds.map(lambda batch: _pad_batch(batch, b))
    return _with_options(ds, cfg), num_batches


def _clip_dims(cfg: DataConfig, source: Source) -> list:
    """The dims between batch and pixels of an eval image: [K, T] or [T] (clips), [] (images)."""
    if not (getattr(source, "clips", False) or getattr(source, "num_frames", None)):
        if cfg.eval_clips > 1:
            raise DataError(
                f"config.eval_clips={cfg.eval_clips} averages windows of clips, but "
                f"{source.dataset} holds images; use eval_clips=1"
            )
        return []
    frames = cfg.clip_frames or source.num_frames
    if not frames:
        raise DataError(
            f"{source.dataset} holds clips of varying length: set config.clip_frames (a vivit "
            "model sets it from model.num_frames)"
        )
    return [cfg.eval_clips, frames] if cfg.eval_clips > 1 else [frames]


def _data_error(source: Source, error, candidate_ids, where: str) -> DataError:
    """Names the undecodable file among `candidate_ids` (decoding them one by one)."""
    found = source.find_corrupt(candidate_ids) if candidate_ids is not None else None
    if found:
        return DataError(
            f"corrupt image file {found[0]} ({found[1]}) in {source.dataset}; "
            "set config.skip_corrupt=True to skip such files"
        )
    return DataError(
        f"cannot read {source.dataset} split {source.split!r} {where}: {first_line(error)}"
    )


def _checked(ds, explain) -> Iterator[dict]:
    """Iterates `ds` as NumPy; a data error in batch j is raised as `explain(j, error)`.

    Batches arrive in order (options.deterministic), so the culprit is in batch j.
    """
    batches = ds.as_numpy_iterator()
    for j in itertools.count():
        try:
            batch = next(batches)
        except StopIteration:
            return
        except _DATA_ERRORS as e:
            raise explain(j, e) from None
        yield batch


def train_iterator(
    config,
    start_step: int = 0,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    local_device_count: Optional[int] = None,
) -> Iterator[dict]:
    """Endless iterator of this process' train batches, starting at `start_step`.

    The batch at step s is the same whether the iterator started at 0 or at s.

    Args:
      config: trainer config (ConfigDict); see `config.DataConfig` for the keys read.
      start_step: first step to produce.
      process_index: this process (default jax.process_index()).
      process_count: number of processes (default jax.process_count()).
      local_device_count: devices of this process (default jax.local_device_count()).

    Returns:
      Iterator of dicts of NumPy arrays, b = config.batch_size // process_count:
      "image" float32 [b, H, W, 3] normalised, "label" int32 [b], "soft_label" float32
      [b, num_classes] (one-hot, or mixed when mixup/cutmix is on).

    Raises:
      DataError: bad config or data; when iterating, an undecodable image (naming the file).
    """
    cfg = read_config(config)
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}")
    placement = place(
        cfg.batch_size, "batch_size", process_index, process_count, local_device_count
    )
    source = open_split(cfg, cfg.train_split)
    _clip_dims(cfg, source)  # clips of varying length need a window
    ds = train_dataset(cfg, source, placement, start_step)
    b = placement.local_batch

    def explain(j, error):
        step = start_step + j
        ids = source.train_ids(placement.shard, cfg.seed, step * b, (step + 1) * b)
        return _data_error(source, error, ids, f"at step {step}")

    return _checked(ds, explain)


class EvalBatches:
    """The eval batches of one process: iterable any number of times; len() = batches per pass.

    Every process yields the same number of equally shaped batches; padding entries have
    mask False and index -1, so each example of the split is counted exactly once overall.
    """

    def __init__(self, ds, num_batches: int, source: Source, placement: Placement):
        self.dataset = ds
        self.num_batches = num_batches
        self.source = source
        self.placement = placement

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        lo, hi = splits.shard_range(self.source.info.num_examples, *self.placement.shard)
        b = self.placement.local_batch

        def explain(j, error):
            ids = np.arange(lo + j * b, min(hi, lo + (j + 1) * b))
            return _data_error(self.source, error, ids, f"in eval batch {j}")

        return _checked(self.dataset, explain)


def eval_iterator(
    config,
    split: Optional[str] = None,
    batch_size: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    local_device_count: Optional[int] = None,
) -> EvalBatches:
    """This process' padded eval batches of a split (default config.eval_split).

    Args:
      config: trainer config (ConfigDict).
      split: split string; default config.eval_split.
      batch_size: global eval batch size; default config.eval_batch_size.
      process_index: this process (default jax.process_index()).
      process_count: number of processes (default jax.process_count()).
      local_device_count: devices of this process (default jax.local_device_count()).

    Returns:
      Re-iterable `EvalBatches` of dicts, b = batch_size // process_count: "image" float32
      [b, H, W, 3], "label" int32 [b], "mask" bool [b] (False on padding), "index" int64 [b]
      (example id within the split, -1 on padding).
    """
    cfg = read_config(config)
    key = "eval_batch_size" if batch_size is None else "batch_size argument"
    placement = place(
        batch_size or cfg.eval_batch_size, key, process_index, process_count, local_device_count
    )
    source = open_split(cfg, split or cfg.eval_split)
    ds, num_batches = eval_dataset(cfg, source, placement)
    return EvalBatches(ds, num_batches, source, placement)
