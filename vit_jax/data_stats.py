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
import sys

import ml_collections

from vit_jax.common import errors, quiet
from vit_jax.data.options import AugConfig, DataConfig


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
    """The flags; defaults are those of `vit_jax.data.options` (DataConfig, AugConfig)."""
    data, aug = DataConfig(), AugConfig()
    parser = errors.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=data.dataset, help="digits | folder:PATH | tfds:NAME")
    parser.add_argument("--split", default=data.train_split, help="split string, e.g. train[:90%%]")
    parser.add_argument("--data_dir", default=data.data_dir, help="tfds data directory")
    parser.add_argument("--image_size", type=int, default=data.image_size)
    parser.add_argument("--batch_size", type=int, default=data.batch_size)
    parser.add_argument("--steps", type=int, default=20, help="timed batches; 0 skips timing")
    parser.add_argument("--seed", type=int, default=data.seed)
    parser.add_argument("--crop_area_min", type=float, default=aug.crop_area_min)
    parser.add_argument("--no_flip", action="store_true", help="no random flip")
    parser.add_argument("--randaug_n", type=int, default=aug.randaug_n)
    parser.add_argument("--randaug_m", type=float, default=aug.randaug_m)
    parser.add_argument("--mixup_alpha", type=float, default=aug.mixup_alpha)
    parser.add_argument("--cutmix_alpha", type=float, default=aug.cutmix_alpha)
    parser.add_argument("--skip_corrupt", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if args.steps < 0:
        errors.fail(f"--steps={args.steps} must be >= 0 (0 skips timing)")
    return args


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2 after one `error:` line)."""
    return errors.guarded(_main, argv)


def _main(argv) -> None:
    quiet.quiet_process()  # before TensorFlow starts: only our own lines
    args = parse_args(argv)
    from vit_jax.data import stats as stats_lib  # noqa: PLC0415  (TensorFlow loads here)

    stats = stats_lib.describe(make_config(args), args.steps)
    if args.json:
        print(json.dumps(stats))
    else:
        print_stats(stats)


if __name__ == "__main__":
    sys.exit(main())
