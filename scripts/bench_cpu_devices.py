"""In-process A/B of the benchmark's Flax training step on one CPU device vs split into N devices.

  python scripts/bench_cpu_devices.py --devices=2 --variant=Ti/16 --image-size=224 --batch=32 \\
      --steps=12 --warmup=2

Both steps are compiled in one process (the CPU split into N devices; the first step uses device 0
only) and then alternate step by step, so both see the same background load. Every other flag is
`python -m vit_jax.benchmark`'s. Prints best and median images/s of each.
"""

import argparse
import statistics
import sys

import jax

import vit_jax
from vit_jax import benchmark
from vit_jax.common import cpu_devices, host_memory
from vit_jax.tools import benchmark as bench


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=cpu_devices.cores())
    own, rest = p.parse_known_args(argv)
    args = benchmark.parse_args(rest)
    host_memory.keep_freed_memory()
    if not cpu_devices.split_cpu(own.devices):
        raise SystemExit(f"error: could not split the CPU into {own.devices} devices")
    model = vit_jax.create_model(args.variant, args.num_classes, **benchmark.model_options(args))
    steps, names = [], []
    for devices in (jax.devices()[:1], jax.devices()):
        jitted, state, rest_args = bench.build_flax_step(args, model, devices)
        compiled = jitted.lower(state, *rest_args).compile()
        box = [state]

        def step(compiled=compiled, box=box, rest_args=rest_args):
            out = compiled(box[0], *rest_args)
            box[0] = out[0]
            return jax.block_until_ready(out)

        steps.append(step)
        names.append(f"{len(devices)} device(s)")
    for name, (_, times) in zip(names, bench.time_interleaved(steps, args.warmup, args.steps)):
        best, median = args.batch / min(times), args.batch / statistics.median(times)
        print(f"{name:12s} best {best:7.1f}  median {median:7.1f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
