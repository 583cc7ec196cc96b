"""Throughput of a ViT training or inference step: images/s, compile time, memory, FLOPs and MFU.

  python -m vit_jax.benchmark --variant=B/16 --batch=256 --dtype=bfloat16 --attn-impl=cudnn
  python -m vit_jax.benchmark --variant=Ti/16 --batch=32 --vs-timm
  python -m vit_jax.benchmark --variant=Ti/4 --option=depth=4 --image-size=32 --num-classes=10 \\
      --batch=128 --vs-timm

images/s is the median over `--steps` timed steps after `--warmup` untimed ones (compilation is
timed apart), each step synchronised with `block_until_ready`. FLOPs are the analytic model FLOPs
of `vit_jax.flops` (3x forward for training), cross-checked with XLA's cost analysis of the compiled
step; MFU divides the achieved rate by the device's peak (`--peak-tflops`, the table `PEAK_TFLOPS`,
or else `--measure-peak`: a large matmul). `--vs-timm` times the same architecture in timm/PyTorch in the
same process (AdamW; bf16 autocast on GPU; fused attention, timm's default; `--timm-compile` adds
torch.compile) and prints the ratio. Prints a table, then one JSON line per run; `--json=PATH`
appends the same lines to PATH. Imports neither TensorFlow nor ml_collections; torch and timm are
imported only for `--vs-timm`.
"""

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp

import vit_jax
from vit_jax import cpu_devices, flops, host_memory, optim, train_step
from vit_jax import sharding as shd

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


# ------------------------------------------------------------------ arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="B/16", help="size/patch, e.g. B/16, Ti/4")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--mode", default="train", choices=("train", "infer"))
    p.add_argument("--attn-impl", default="auto", help="auto | xla | cudnn | naive")
    p.add_argument("--remat", action="store_true", help="rematerialise each encoder block")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any create_model option, e.g. depth=4 or gelu_approximate=True (repeatable)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument(
        "--grad-clip", type=float, default=1.0, help="global-norm clip (both frameworks)"
    )
    p.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU")
    p.add_argument(
        "--measure-peak",
        action="store_true",
        help="also time a large matmul (the MFU peak when neither --peak-tflops nor the table has one)",
    )
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=-1,
        help="CPU: split into N devices, the Flax step data parallel over them; -1: one per core "
        "(as many as divide --batch), 0: XLA's single device (vit_jax/cpu_devices.py)",
    )
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--vs-timm", action="store_true", help="also time timm/PyTorch, print ratio")
    p.add_argument("--timm-compile", action="store_true", help="torch.compile the timm model")
    p.add_argument("--skip-flax", action="store_true", help="time only timm (needs --vs-timm)")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="with --vs-timm: alternate Flax and timm steps, so both see the same background load",
    )
    p.add_argument("--label", default="", help="free text copied into the JSON record")
    p.add_argument("--json", metavar="PATH", help="append the JSON lines to PATH")
    return p.parse_args(argv)


def parse_options(pairs: List[str]) -> Dict[str, Any]:
    """["depth=4", "gelu_approximate=True"] -> {"depth": 4, "gelu_approximate": True}."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--option={pair!r}: write KEY=VALUE, e.g. --option=depth=4")
        try:
            options[key] = json.loads(text.replace("True", "true").replace("False", "false"))
        except json.JSONDecodeError:
            options[key] = text
    return options


def model_options(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(
        dtype=args.dtype,
        attn_impl=args.attn_impl,
        remat=args.remat,
        **parse_options(args.option),
    )


def optimizer_config(args: argparse.Namespace):
    """The fields `vit_jax.optim.make_optimizer` reads: AdamW, constant LR after 1 warmup step."""
    return types.SimpleNamespace(
        lr=1e-3,
        warmup_steps=1,
        total_steps=10_000,
        schedule="cosine",
        min_lr_ratio=0.0,
        optimizer="adamw",
        b1=0.9,
        b2=0.999,
        weight_decay=0.05,
        grad_clip=args.grad_clip,
        momentum=None,
        freeze_encoder=False,
    )


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


def count_params(model, image_size: int) -> int:
    image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), "float32")
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
    shape = (args.batch, args.image_size, args.image_size, 3)
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
    image_shape = (1, args.image_size, args.image_size, 3)
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


def prepare_flax(args) -> Runner:
    """Compiles the Flax step; the runner's record is JSON-ready."""
    model = vit_jax.create_model(args.variant, args.num_classes, **model_options(args))
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
    analytic = flops.step_flops(model, (args.image_size, args.image_size), args.mode)
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


# ------------------------------------------------------------------ timm / PyTorch
def build_timm_model(args, model):
    """The timm VisionTransformer with `model`'s sizes (class token, token pooling, exact GELU)."""
    from timm.models.vision_transformer import VisionTransformer  # noqa: PLC0415

    return VisionTransformer(
        img_size=args.image_size,
        patch_size=model.patch_size[0],
        num_classes=args.num_classes,
        embed_dim=model.hidden_size,
        depth=model.depth,
        num_heads=model.num_heads,
        mlp_ratio=model.mlp_dim / model.hidden_size,
        qkv_bias=True,
        class_token=model.num_prefix > 0,
        global_pool="token" if model.num_prefix else "avg",
    )


def prepare_timm(args, model) -> Runner:
    """The same architecture in timm: AdamW, bf16 autocast when --dtype=bfloat16."""
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = build_timm_model(args, model).to(device)
    net.train(args.mode == "train")
    num_params = sum(p.numel() for p in net.parameters())
    if args.timm_compile:
        net = torch.compile(net)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.dtype == "bfloat16")
    # fused=True is torch's fastest AdamW on GPU (one kernel for all parameters).
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05, fused=cuda or None)

    def train():
        with autocast:
            loss = F.cross_entropy(net(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
        opt.step()
        return loss

    def infer():
        with torch.no_grad(), autocast:
            return net(images)

    run = train if args.mode == "train" else infer
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        out = run()
        sync()
        return out

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start  # first step: allocation, autotuning, torch.compile

    def record(median, times):
        if cuda:
            memory = dict(
                peak_memory_bytes=torch.cuda.max_memory_allocated(), memory_source="device peak"
            )
            name = torch.cuda.get_device_name()
        else:
            memory = dict(peak_memory_bytes=max_rss_bytes(), memory_source="process max RSS")
            name = "cpu"
        return dict(
            framework="timm-compile" if args.timm_compile else "timm",
            device=name,
            torch_version=torch.__version__,
            timm_version=timm.__version__,
            torch_threads=torch.get_num_threads(),
            timm_params=num_params,
            compile_s=compile_s,
            step_s_median=median,
            step_s_all=times,
            images_per_s=args.batch / median,
            flops_per_image=flops.step_flops(model, (args.image_size, args.image_size), args.mode),
            flops_per_image_xla=None,
            **memory,
        )

    return Runner(step, record)


# ------------------------------------------------------------------ report
def add_mfu(record: Dict[str, Any], peak: Optional[float], source: str) -> Dict[str, Any]:
    achieved = record["images_per_s"] * record["flops_per_image"] / 1e12
    record.update(tflops=achieved, peak_tflops=peak, peak_source=source)
    record["mfu"] = achieved / peak if peak else None
    return record


def format_table(records: List[Dict[str, Any]]) -> str:
    head = (
        f"{'framework':<13s} {'images/s':>9s} {'step ms':>8s} {'compile s':>9s} "
        f"{'GFLOP/img':>9s} {'XLA GFLOP':>9s} {'TFLOP/s':>8s} {'MFU':>6s} {'memory GiB':>10s}"
    )
    lines = [head]
    for r in records:
        xla = f"{r['flops_per_image_xla'] / 1e9:9.2f}" if r["flops_per_image_xla"] else f"{'-':>9s}"
        mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else f"{'-':>6s}"
        lines.append(
            f"{r['framework']:<13s} {r['images_per_s']:9.1f} {r['step_s_median'] * 1e3:8.1f} "
            f"{r['compile_s']:9.1f} {r['flops_per_image'] / 1e9:9.2f} {xla} {r['tflops']:8.3f} "
            f"{mfu} {r['peak_memory_bytes'] / 2**30:10.2f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Runs the requested benchmarks; returns the JSON records."""
    if args.xla_flags:  # read when the backend starts: at the first computation below
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    if args.skip_flax and not args.vs_timm:
        raise ValueError("--skip-flax leaves nothing to time; add --vs-timm")
    # Before the first computation (creating the model asks for the backend): CPU device count.
    cpu_devices.split_cpu(cpu_devices.choose(args.cpu_devices, [args.batch], cpu_devices.cores()))
    model = vit_jax.create_model(args.variant, args.num_classes, **model_options(args))
    peak, source = args.peak_tflops, "--peak-tflops"
    if peak is None:
        peak, source = lookup_peak(jax.devices()[0].device_kind, args.dtype), "known-device table"
    measured = measure_peak_jax(args.dtype) if args.measure_peak else None
    if peak is None and measured:
        peak, source = measured, f"measured {args.dtype} matmul"
    common = dict(
        variant=args.variant,
        image_size=args.image_size,
        batch=args.batch,
        num_classes=args.num_classes,
        dtype=args.dtype,
        mode=args.mode,
        attn_impl=args.attn_impl,
        remat=args.remat,
        options=parse_options(args.option),
        label=args.label,
        params=count_params(model, args.image_size),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    if measured:
        common["measured_peak_tflops"] = measured
    prepare = ([] if args.skip_flax else [prepare_flax]) + (
        [lambda a: prepare_timm(a, model)] if args.vs_timm else []
    )
    if args.interleave:  # both prepared, then their steps alternate
        runners = [p(args) for p in prepare]
        timings = time_interleaved([r.step for r in runners], args.warmup, args.steps)
        results = [r.record(*t) for r, t in zip(runners, timings)]
    else:  # one after the other: only one framework's memory is held at a time
        results = []
        for p in prepare:
            runner = p(args)
            results.append(
                runner.record(*time_interleaved([runner.step], args.warmup, args.steps)[0])
            )
            del runner  # frees this framework's model before the next one is built
    records = [
        add_mfu({**common, **r, "interleaved": args.interleave}, peak, source) for r in results
    ]
    if len(records) == 2:
        records[0]["vs_timm"] = records[0]["images_per_s"] / records[1]["images_per_s"]
    return records


def main(argv=None) -> int:
    args = parse_args(argv)
    host_memory.keep_freed_memory()
    try:
        records = run(args)
    except ValueError as e:  # bad flags (--option, --cpu-devices, --batch, model sizes): one line
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    r = records[0]
    print(
        f"{args.variant} {args.image_size}px batch={args.batch} {args.dtype} {args.mode} "
        f"attn={args.attn_impl} params={r['params']:,} on {r.get('devices', 1)} x {r['device']}"
    )
    print(format_table(records))
    if "vs_timm" in r:
        print(f"flax / timm: {r['vs_timm']:.2f}x")
    lines = [json.dumps(rec) for rec in records]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
