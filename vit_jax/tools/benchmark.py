"""Timing a ViT step: the Flax/JAX side of `python -m vit_jax.benchmark` (see its docstring).

images/s is the median over timed steps after untimed warm-up ones (compilation is timed apart),
each step synchronised with `block_until_ready`. FLOPs are the analytic model FLOPs of
`vit_jax.tools.flops`, cross-checked with XLA's cost analysis of the compiled step; MFU divides the
achieved rate by the device's peak. The timm side is `timm_bench.py`.
"""

import functools
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp

from vit_jax import config as config_lib
from vit_jax.tools import flops
from vit_jax.train import optim
from vit_jax.train import sharding as shd
from vit_jax.train import step as train_step

# (substring of jax's / torch's device name, dtype) -> dense peak TFLOP/s from the vendor's sheet.
# float32 matmuls on these GPUs run as TF32 under the default precision of both frameworks.
PEAK_TFLOPS = {
    ("H100 PCIe", "bfloat16"): 756.0,
    ("H100 PCIe", "float32"): 378.0,
    ("H100", "bfloat16"): 989.0,
    ("H100", "float32"): 494.5,
    ("H200", "bfloat16"): 989.0,
    ("H200", "float32"): 494.5,
    ("A100", "bfloat16"): 312.0,
    ("A100", "float32"): 156.0,
}


def optimizer_config(args):
    """The config `vit_jax.train.optim.make_optimizer` reads: the defaults (AdamW at lr 1e-3, decay
    on kernels), one warmup step then cosine over 10,000 steps, and `args.grad_clip`."""
    c = config_lib.base_config()
    c.update(dict(warmup_steps=1, total_steps=10_000, weight_decay=0.05, grad_clip=args.grad_clip))
    return c


# ------------------------------------------------------------------ timing helpers
def time_interleaved(steps_fns: List[Callable[[], Any]], warmup: int, steps: int):
    """[(median, all seconds)] per synchronised step function, the functions taking turns.

    Alternating one step of each (A, B, A, B, ...) exposes every function to the same background
    load, so their ratio holds on a shared machine where back-to-back runs drift by 10-20%.
    """
    for fn in steps_fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in steps_fns]
    for _ in range(steps):
        for fn, spent in zip(steps_fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [(statistics.median(t), t) for t in times]


class Runner(NamedTuple):
    """A prepared benchmark: `step()` runs one synchronised step; `record(median, times)`."""

    step: Callable[[], Any]
    record: Callable[[float, List[float]], Dict[str, Any]]


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def input_dims(args) -> tuple:
    """One example's spatial (and time) extent: (H, W), or (T, H, W) with `--frames` (vivit)."""
    size = (args.image_size, args.image_size)
    return (args.frames, *size) if getattr(args, "frames", None) else size


def count_params(model, image_size, frames=None) -> int:
    dims = (image_size, image_size) if frames is None else (frames, image_size, image_size)
    image = jax.ShapeDtypeStruct((1, *dims, 3), "float32")
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    return sum(x.size for x in jax.tree.leaves(shapes))


def lookup_peak(device_name: str, dtype: str) -> Optional[float]:
    for (name, kind), tflops in PEAK_TFLOPS.items():
        if name in device_name and kind == dtype:
            return tflops
    return None


# ------------------------------------------------------------------ Flax / JAX
def _cost_flops(compiled) -> Optional[float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _jax_memory(device) -> Dict[str, Any]:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return dict(peak_memory_bytes=stats["peak_bytes_in_use"], memory_source="device peak")
    return dict(peak_memory_bytes=max_rss_bytes(), memory_source="process max RSS")


def _flax_batch(args):
    key = jax.random.PRNGKey(1)
    shape = (args.batch, *input_dims(args), 3)
    images = jax.random.normal(key, shape, jnp.float32)
    labels = jax.random.randint(key, (args.batch,), 0, args.num_classes)
    return dict(image=images, label=labels, soft_label=jax.nn.one_hot(labels, args.num_classes))


def step_devices() -> list:
    """The Flax step's devices: every CPU device (one per core after --cpu-devices), else one."""
    return jax.devices() if jax.default_backend() == "cpu" else jax.devices()[:1]


def build_flax_step(args, model, devices):
    """(jitted step, its first argument, the other arguments); train steps donate the state.

    The batch is split over `devices` and the state replicated, as `vit_jax.train` does.
    """
    mesh = shd.make_mesh(devices=devices)
    if args.batch % mesh.size:
        raise ValueError(f"--batch={args.batch} is not divisible by the {mesh.size} devices")
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch = jax.device_put(_flax_batch(args), shd.batch_sharding(mesh))
    image_shape = (1, *input_dims(args), 3)
    if args.mode == "infer":
        init = jax.jit(
            lambda: model.init(jax.random.PRNGKey(0), batch["image"][:1]), out_shardings=replicated
        )
        fn = jax.jit(lambda p, x: model.apply(p, x, train=False))
        return fn, init(), (batch["image"],)
    config = optimizer_config(args)
    tx = optim.make_optimizer(config)
    state = jax.jit(
        lambda: train_step.init_state(model, tx, image_shape, seed=0), out_shardings=replicated
    )()
    step = functools.partial(
        train_step.train_step, model=model, tx=tx, schedule=optim.make_schedule(config)
    )
    return jax.jit(step, donate_argnums=0, out_shardings=(replicated, replicated)), state, (batch,)


def prepare_flax(args, model) -> Runner:
    """Compiles `model`'s step as `args` ask; the runner's record is JSON-ready."""
    devices = step_devices()
    jitted, first, rest = build_flax_step(args, model, devices)
    start = time.perf_counter()
    compiled = jitted.lower(first, *rest).compile()
    compile_s = time.perf_counter() - start
    xla_flops = _cost_flops(compiled)

    box = [first]

    def step():
        out = compiled(box[0], *rest)
        if args.mode == "train":
            box[0] = out[0]
        return jax.block_until_ready(out)

    device = devices[0]
    analytic = flops.step_flops(model, input_dims(args), args.mode)
    return Runner(
        step,
        lambda median, times: dict(
            framework="flax",
            device=device.device_kind,
            jax_version=jax.__version__,
            devices=len(devices),
            compile_s=compile_s,
            step_s_median=median,
            step_s_all=times,
            images_per_s=args.batch / median,
            flops_per_image=analytic,
            # cost_analysis counts one device's partition of the SPMD program
            flops_per_image_xla=xla_flops * len(devices) / args.batch if xla_flops else None,
            **_jax_memory(device),
        ),
    )


def measure_peak_jax(dtype: str) -> float:
    """TFLOP/s of a square matmul (8192 on accelerators, 2048 on CPU) in `dtype`."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    median, _ = time_interleaved([lambda: jax.block_until_ready(matmul(a, a))], 2, 10)[0]
    return 2 * n**3 / median / 1e12


# ------------------------------------------------------------------ report
def add_mfu(record: Dict[str, Any], peak: Optional[float], source: str) -> Dict[str, Any]:
    achieved = record["images_per_s"] * record["flops_per_image"] / 1e12
    record.update(tflops=achieved, peak_tflops=peak, peak_source=source)
    record["mfu"] = achieved / peak if peak else None
    return record
