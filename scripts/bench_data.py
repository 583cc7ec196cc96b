"""Input pipeline throughput (train preprocessing, images/s) for a few augmentation settings.

  python scripts/bench_data.py --dataset=folder:/path/to/cifar10-jpg.tar.gz --image_size=32

Rows: the CIFAR recipe (inception crop of 50-100% area, flip) without and with RandAugment(2, 10),
and with mixup/cutmix on top. Prints a table, then one JSON line. One process, all CPU cores;
the first batches (tracing, autotuning, archive extraction) are not timed. "img/CPU-s" divides by
the CPU time the pipeline used, so it stays comparable when other jobs share the machine (then
compare it with `load`, the 1-minute load average, against the number of cores).
"""

import argparse
import json
import os
import sys

from vit_jax.data.stats import measure_throughput
from vit_jax.data_stats import make_config
from vit_jax.data_stats import parse_args as stats_args

ROWS = {
    "crop+flip": {},
    "crop+flip+randaug2/10": dict(randaug_n=2, randaug_m=10),
    "crop+flip+randaug2/10+mixup/cutmix": dict(
        randaug_n=2, randaug_m=10, mixup_alpha=0.8, cutmix_alpha=1.0
    ),
}


def row_config(args: argparse.Namespace, overrides: dict):
    """The data_stats config for one row: the CIFAR recipe plus `overrides`."""
    flags = [
        f"--dataset={args.dataset}",
        f"--image_size={args.image_size}",
        f"--batch_size={args.batch_size}",
        f"--crop_area_min={args.crop_area_min}",
    ]
    flags += [f"--{key}={value}" for key, value in overrides.items()]
    return make_config(stats_args(flags))


def main(argv=None) -> int:
    cifar = os.environ.get("VIT_JAX_CIFAR10_TAR")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=f"folder:{cifar}" if cifar else "digits")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--crop_area_min", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    args = parser.parse_args(argv)

    results = []
    print(
        f"{args.dataset}  image_size={args.image_size}  batch={args.batch_size}  "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"{'setting':<36s} {'images/s':>9s} {'img/CPU-s':>9s} {'ms/batch':>9s}  load")
    for name in args.rows.split(","):
        speed = measure_throughput(row_config(args, ROWS[name]), args.steps, args.warmup)
        load = os.getloadavg()[0]  # Other jobs on the machine slow the wall-clock rate.
        results.append(dict(setting=name, load_avg_1min=load, **speed))
        print(
            f"{name:<36s} {speed['images_per_s']:>9.0f} {speed['images_per_cpu_s']:>9.0f} "
            f"{speed['ms_per_batch']:>9.1f}  {load:.1f}"
        )
    print(
        json.dumps(
            dict(
                dataset=args.dataset,
                image_size=args.image_size,
                batch_size=args.batch_size,
                cpu_count=os.cpu_count(),
                rows=results,
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
