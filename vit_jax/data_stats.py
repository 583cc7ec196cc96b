"""Looks at a dataset: size, classes with counts, preprocessed shape, train pipeline images/s.

  python -m vit_jax.data_stats --dataset=digits --split=train --image_size=16 --no_flip
  python -m vit_jax.data_stats --dataset=folder:/data/cifar10-jpg.tar.gz --split=test \
      --image_size=32
  python -m vit_jax.data_stats --dataset=tfds:cifar10 --data_dir=~/tensorflow_datasets

The throughput is that of `data.train_iterator` on one process (this is also the pipeline
benchmark; scripts/bench_data.py runs it for several settings). Data errors print one line.
"""

import argparse
import json
import os
import sys
import time

import ml_collections


def make_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """A data config from the command line flags."""
    return ml_collections.ConfigDict(
        dict(
            dataset=args.dataset,
            data_dir=args.data_dir,
            train_split=args.split,
            eval_split=args.split,
            image_size=args.image_size,
            batch_size=args.batch_size,
            seed=args.seed,
            skip_corrupt=args.skip_corrupt,
            aug=dict(
                crop_area_min=args.crop_area_min,
                flip=not args.no_flip,
                randaug_n=args.randaug_n,
                randaug_m=args.randaug_m,
                mixup_alpha=args.mixup_alpha,
                cutmix_alpha=args.cutmix_alpha,
            ),
        )
    )


def measure_throughput(config, steps: int = 20, warmup: int = 5) -> dict:
    """Train pipeline speed of one process.

    The first `warmup` batches (graph tracing, tf.data autotuning, file cache) are not timed.

    Returns:
      {"images_per_s": wall-clock rate, "images_per_cpu_s": images per second of this process'
      CPU time (all threads; unlike the wall rate, barely affected by other jobs on the
      machine), "ms_per_batch", "steps", "batch"}.
    """
    from vit_jax import data

    batches = data.train_iterator(config, process_index=0, process_count=1, local_device_count=1)
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
    from vit_jax.data import config as data_config
    from vit_jax.data import pipeline

    cfg = data_config.read_config(config)
    source = pipeline.open_split(cfg, cfg.train_split)
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


def print_stats(stats: dict) -> None:
    print(f"dataset      {stats['dataset']}")
    print(f"split        {stats['split']}")
    print(
        f"examples     {stats['num_examples']}"
        + (
            f" ({stats['skipped_corrupt']} corrupt files skipped)"
            if stats["skipped_corrupt"]
            else ""
        )
    )
    print(f"classes      {len(stats['classes'])}")
    for label, (name, count) in enumerate(stats["classes"].items()):
        print(f"  {label:4d}  {name:<24s} {count:8d}")
    print(f"image shape  {tuple(stats['image_shape'])} float32 after preprocessing")
    speed = stats.get("train_pipeline")
    if speed:
        print(
            f"train pipeline  {speed['images_per_s']:.0f} images/s, "
            f"{speed['images_per_cpu_s']:.0f} per CPU-second "
            f"({speed['ms_per_batch']:.1f} ms per batch of {speed['batch']}, "
            f"{stats['cpu_count']} CPU cores)"
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", help="digits | folder:PATH | tfds:NAME")
    parser.add_argument("--split", default="train", help="split string, e.g. train[:90%%]")
    parser.add_argument("--data_dir", default=None, help="tfds data directory")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed batches; 0 skips timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop_area_min", type=float, default=0.08)
    parser.add_argument("--no_flip", action="store_true")
    parser.add_argument("--randaug_n", type=int, default=0)
    parser.add_argument("--randaug_m", type=float, default=10)
    parser.add_argument("--mixup_alpha", type=float, default=0.0)
    parser.add_argument("--cutmix_alpha", type=float, default=0.0)
    parser.add_argument("--skip_corrupt", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from vit_jax.data import DataError

    try:
        stats = describe(make_config(args), args.steps)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(stats))
    else:
        print_stats(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
