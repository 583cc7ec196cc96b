"""What a dataset holds (size, classes with counts, preprocessed shape) and how fast the train
pipeline delivers it; `python -m vit_jax.data_stats` prints it."""

import os
import time

from vit_jax.data import pipeline
from vit_jax.data.core import DataError
from vit_jax.data.options import read_config


def measure_throughput(config, steps: int = 20, warmup: int = 5) -> dict:
    """Train pipeline speed of one process.

    The first `warmup` batches (graph tracing, tf.data autotuning, file cache) are not timed.

    Returns:
      {"images_per_s": wall-clock rate, "images_per_cpu_s": images per second of this process'
      CPU time (all threads; unlike the wall rate, barely affected by other jobs on the
      machine), "ms_per_batch", "steps", "batch"}.
    """
    batches = pipeline.train_iterator(
        config, process_index=0, process_count=1, local_device_count=1
    )
    for _ in range(warmup):
        next(batches)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = next(batches)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    images = steps * len(batch["label"])
    return {
        "images_per_s": images / seconds,
        "images_per_cpu_s": images / cpu_seconds,
        "ms_per_batch": 1000 * seconds / steps,
        "steps": steps,
        "batch": len(batch["label"]),
    }


def describe(config, steps: int) -> dict:
    """Everything the command prints, as a dict."""
    cfg = read_config(config)
    source = pipeline.open_split(cfg, cfg.train_split)
    if source.info.num_examples == 0:
        raise DataError(f"split {cfg.train_split!r} of {cfg.dataset} holds no examples")
    counts = source.label_counts()
    eval_batch = next(
        iter(
            pipeline.eval_iterator(
                config, batch_size=1, process_index=0, process_count=1, local_device_count=1
            )
        )
    )
    stats = {
        "dataset": cfg.dataset,
        "split": cfg.train_split,
        "num_examples": source.info.num_examples,
        "classes": dict(zip(source.info.class_names, map(int, counts))),
        "skipped_corrupt": len(getattr(source, "skipped", ())),
        "image_shape": list(eval_batch["image"].shape[1:]),
        "cpu_count": os.cpu_count(),
    }
    if steps:
        stats["train_pipeline"] = measure_throughput(config, steps)
    return stats
