"""Compile time, memory and step time of the real train step vs depth: unrolled vs scan over layers.

  nice -n 5 python scripts/bench_scan.py --depths=2,4,8,16,32 --json=docs/bench_scan.json

For each depth and mode (`unrolled`, `scan`, `remat`, `scan+remat`: model.scan / model.remat with
the "full" policy) the train step the loop runs (`vit_jax.train.step.jit_train_step`, AdamW) is
traced and lowered, then compiled (`jax.jit(...).lower(...).compile()`, timed apart, wall and
process CPU seconds), its buffers read from `compiled.memory_analysis()` (temporaries and
arguments), and steps timed (median, wall and CPU milliseconds). CPU seconds stay comparable when
other jobs share the machine (`load` is the 1-minute load average). Prints a table, then writes
the rows as JSON.
"""

import json
import os
import resource
import statistics
import time

import jax
import numpy as np

from vit_jax.common import errors
from vit_jax.config import base_config
from vit_jax.train import loop
from vit_jax.train import sharding as shd
from vit_jax.train import step as ts

MODES = {
    "unrolled": {}, "scan": dict(scan=True), "remat": dict(remat=True),
    "scan+remat": dict(scan=True, remat=True),
}  # fmt: skip
CLASSES = 10


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_config(args, depth: int, mode: str):
    c = base_config()
    c.model.variant = None
    c.model.update(
        dict(patch_size=args.patch, hidden_size=args.width, depth=depth, mlp_dim=4 * args.width,
             num_heads=args.heads, **MODES[mode])
    )  # fmt: skip
    c.image_size, c.batch_size, c.total_steps, c.warmup_steps = args.image, args.batch, 1000, 10
    return c


def measure(args, depth: int, mode: str) -> dict:
    config = make_config(args, depth, mode)
    mesh = shd.make_mesh(1, 1, jax.devices()[:1])
    model, tx, schedule, init, abstract, shardings = loop.build(config, CLASSES, mesh)
    step = ts.jit_train_step(config, model, tx, schedule, shardings, mesh)
    state_spec = shd.with_shardings(abstract, shardings)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, args.batch).astype(np.int32)
    batch = dict(
        image=rng.standard_normal((args.batch, args.image, args.image, 3)).astype(np.float32),
        label=labels,
        soft_label=np.eye(CLASSES, dtype=np.float32)[labels],
    )
    wall, cpu = time.perf_counter(), _cpu()
    lowered = step.lower(state_spec, shd.to_global(batch, mesh))
    lower_s, lower_cpu = time.perf_counter() - wall, _cpu() - cpu
    wall, cpu = time.perf_counter(), _cpu()
    compiled = lowered.compile()
    compile_s, compile_cpu = time.perf_counter() - wall, _cpu() - cpu
    mem = compiled.memory_analysis()
    state = jax.jit(init, out_shardings=shardings)()
    times, cpu_times = [], []
    for _ in range(args.steps + 1):  # the first is not timed
        t, cpu = time.perf_counter(), _cpu()
        state, metrics = compiled(state, shd.to_global(batch, mesh))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
        cpu_times.append(_cpu() - cpu)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
    return dict(
        depth=depth, mode=mode, params=params, lower_s=round(lower_s, 2),
        lower_cpu_s=round(lower_cpu, 2), compile_s=round(compile_s, 2),
        compile_cpu_s=round(compile_cpu, 2), temp_mb=round(mem.temp_size_in_bytes / 2**20, 2),
        argument_mb=round(mem.argument_size_in_bytes / 2**20, 2),
        step_ms=round(1000 * statistics.median(times[1:]), 1),
        step_cpu_ms=round(1000 * statistics.median(cpu_times[1:]), 1), loss=float(metrics["loss"]),
        load=round(os.getloadavg()[0], 1),
    )  # fmt: skip


COLUMNS = (
    "depth", "mode", "params", "lower_s", "compile_s", "compile_cpu_s", "temp_mb", "argument_mb",
    "step_ms", "step_cpu_ms", "load",
)  # fmt: skip


def main(argv=None):
    p = errors.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="2,4,8,16,32")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    rows = []
    print(" | ".join(COLUMNS), flush=True)
    for depth in map(int, args.depths.split(",")):
        for mode in args.modes.split(","):
            rows.append(measure(args, depth, mode))
            print(" | ".join(str(rows[-1][c]) for c in COLUMNS), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), backend=jax.default_backend(), rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    with errors.boundary():
        main()
