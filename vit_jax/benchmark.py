"""Throughput of a model's training or inference step: images/s, compile time, memory, FLOPs, MFU.

  python -m vit_jax.benchmark --variant=B/16 --batch=256 --dtype=bfloat16 --attn-impl=cudnn
  python -m vit_jax.benchmark --model-name=resnet --variant=R50x1 --batch=64
  python -m vit_jax.benchmark --model-name=resnet --variant=R20 --image-size=32 --num-classes=10
  python -m vit_jax.benchmark --variant=Ti/16 --batch=32 --vs-timm
  python -m vit_jax.benchmark --variant=Ti/4 --option=depth=4 --image-size=32 --num-classes=10 \\
      --batch=128 --vs-timm

images/s is the median over `--steps` timed steps after `--warmup` untimed ones (compilation is
timed apart), each step synchronised with `block_until_ready`. `--model-name` picks the family
(vit, resnet, hybrid: `vit_jax.models.FAMILIES`), whose options `--option` sets and checks. FLOPs
are the model FLOPs of `vit_jax.tools.flops` (3x forward for training; the ViT formula, or the
jaxpr's matmuls and convolutions for other models), cross-checked with XLA's cost analysis of the
compiled step; MFU divides the achieved rate by the device's peak (`--peak-tflops`, the table
`PEAK_TFLOPS`, or else `--measure-peak`: a large matmul). `--vs-timm` (a plain ViT only) times the
same architecture in timm/PyTorch in the same process (`vit_jax/tools/timm_bench.py`: AdamW; bf16
autocast on GPU; fused attention, timm's default; `--timm-compile` adds torch.compile) and prints
the ratio. Prints a table, then one JSON line per run; `--json=PATH` appends the same lines to
PATH. Imports neither TensorFlow nor ml_collections; torch and timm are imported only for `--vs-timm`.

`--profile-steps=N --profile-dir=DIR` then runs N more Flax steps under a `jax.profiler` trace
(each step annotated with its number), written to DIR/plugins/profile/<run>/<host>.xplane.pb for
TensorBoard's profile plugin (`tensorboard --logdir DIR`; see docs/performance.md). DIR may be a URL
(gs://); the timed steps are never traced.
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List

import jax

import vit_jax
from vit_jax import models
from vit_jax.common import cpu_devices, errors, files, host_memory, quiet
from vit_jax.common.profiling import StepProfiler
from vit_jax.tools import benchmark as bench


# ------------------------------------------------------------------ arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = errors.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model-name", default="vit", choices=models.FAMILIES.names(),
        help="model family (config.model_name): vit, resnet or hybrid",
    )  # fmt: skip
    p.add_argument(
        "--variant",
        help="the family's size string: B/16, Ti/4 (vit; default B/16), R50x1, R20 (resnet), "
        "R50+B/16 (hybrid); default: the family's",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument(
        "--frames", type=int,
        help="frames per clip of --model-name=vivit (inputs [B, T, H, W, 3]); default: the "
        "model's num_frames",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--mode", default="train", choices=("train", "infer"))
    p.add_argument("--attn-impl", default="auto", help="auto | xla | cudnn | manual | naive")
    p.add_argument(
        "--kernels", default="auto", help="auto | stock | cpu: kernel set (vit_jax/kernels)"
    )
    p.add_argument("--remat", action="store_true", help="rematerialise each encoder block")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any option of the family, e.g. depth=4 or gelu_approximate=True (repeatable)",
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
    p.add_argument(
        "--profile-steps", type=int, default=0,
        help="after the timed steps, trace N more Flax steps with jax.profiler (0: off)",
    )  # fmt: skip
    p.add_argument(
        "--profile-dir", metavar="DIR",
        help="where --profile-steps writes: DIR/plugins/profile/<run>/*.xplane.pb (tensorboard "
        "--logdir DIR); local or gs://",
    )  # fmt: skip
    args = p.parse_args(argv)
    positive = ("image_size", "batch", "num_classes", "steps")
    at_least_0 = (("warmup", 0), ("grad_clip", 0), ("profile_steps", 0))
    for key, low in [*((k, 1) for k in positive), *at_least_0]:
        if getattr(args, key) < low:
            name = "--" + key.replace("_", "-")
            errors.fail(f"{name}={getattr(args, key)} must be >= {low}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        errors.fail(f"--peak-tflops={args.peak_tflops} must be positive")
    if args.profile_steps and not args.profile_dir:
        errors.fail("--profile-steps needs --profile-dir=DIR (tensorboard --logdir DIR shows it)")
    if args.profile_steps and args.skip_flax:
        errors.fail("--profile-steps traces the Flax step; drop --skip-flax")
    if args.vs_timm and args.model_name != "vit":
        errors.fail(
            f"--vs-timm times timm's VisionTransformer, a --model-name=vit model only; drop it for "
            f"--model-name={args.model_name}"
        )
    if args.frames is not None and args.model_name != "vivit":
        errors.fail(f"--frames={args.frames} is for --model-name=vivit (clips); drop it")
    if args.frames is not None and args.frames < 1:
        errors.fail(f"--frames={args.frames} must be >= 1 (frames per clip)")
    if args.variant is None:
        default = "B/16" if args.model_name == "vit" else None
        args.variant = default or models.FAMILIES.get(args.model_name).default_variant
    return args


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


# Flags that set a model option, with their defaults: passed to the families that have the option.
OPTION_FLAGS = dict(dtype="float32", attn_impl="auto", kernels="auto", remat=False)


def model_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The model options of the flags and `--option`s; the family checks them (`create_model`)."""
    name = getattr(args, "model_name", "vit")
    family = models.FAMILIES.get(name)
    opts = {}
    for key, default in OPTION_FLAGS.items():
        if key in family.options:
            opts[key] = getattr(args, key)
        elif getattr(args, key) != default:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} is not an option of the {name!r} family; its options: "
                f"{', '.join(family.options)}"
            )
    return {**opts, **parse_options(args.option)}


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
    if args.vs_timm:
        from vit_jax.tools import timm_bench  # noqa: PLC0415  (imports torch only on call)

        timm_bench.require()  # one line naming a missing torch / timm, before anything compiles
    # Before the first computation (creating the model asks for the backend): CPU device count.
    cpu_devices.split_cpu(cpu_devices.choose(args.cpu_devices, [args.batch], cpu_devices.cores()))
    options = model_options(args)
    if options.get("distill_token") and args.mode == "train":  # as config validation says
        raise ValueError(
            "--option=distill_token=True trains against a teacher, which the benchmark has not; "
            "time the student with --mode=infer, or without the token (one token fewer) plus the "
            "teacher's --mode=infer"
        )
    model = vit_jax.create_model(args.variant, args.num_classes, args.model_name, **options)
    if args.model_name == "vivit":
        args.frames = args.frames or model.num_frames
        if args.frames % model.tubelet_size:
            raise ValueError(
                f"--frames={args.frames} is not a multiple of the tubelet depth "
                f"{model.tubelet_size}; choose a multiple or set --option=tubelet_size=N"
            )
    if args.vs_timm:
        timm_bench.check_model(model)
    peak, source = args.peak_tflops, "--peak-tflops"
    if peak is None:
        peak, source = (
            bench.lookup_peak(jax.devices()[0].device_kind, args.dtype),
            "known-device table",
        )
    measured = bench.measure_peak_jax(args.dtype) if args.measure_peak else None
    if peak is None and measured:
        peak, source = measured, f"measured {args.dtype} matmul"
    common = dict(
        model_name=args.model_name,
        variant=args.variant,
        image_size=args.image_size,
        input_shape=[args.batch, *bench.input_dims(args), 3],
        batch=args.batch,
        num_classes=args.num_classes,
        dtype=args.dtype,
        mode=args.mode,
        attn_impl=getattr(model, "attn_impl", None),  # None: the family has no attention
        kernels=getattr(model, "kernels", None),
        remat=args.remat,
        options=parse_options(args.option),
        label=args.label,
        params=bench.count_params(model, args.image_size, getattr(args, "frames", None)),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    if measured:
        common["measured_peak_tflops"] = measured
    prepare = ([] if args.skip_flax else [bench.prepare_flax]) + ([_timm] if args.vs_timm else [])
    if args.interleave:  # both prepared, then their steps alternate
        runners = [p(args, model) for p in prepare]
        timings = bench.time_interleaved([r.step for r in runners], args.warmup, args.steps)
        results = [r.record(*t) for r, t in zip(runners, timings)]
        if not args.skip_flax:
            _profile(args, runners[0])
    else:  # one after the other: only one framework's memory is held at a time
        results = []
        for p in prepare:
            runner = p(args, model)
            results.append(
                runner.record(*bench.time_interleaved([runner.step], args.warmup, args.steps)[0])
            )
            if p is bench.prepare_flax:
                _profile(args, runner)
            del runner  # frees this framework's model before the next one is built
    records = [
        bench.add_mfu({**common, **r, "interleaved": args.interleave}, peak, source)
        for r in results
    ]
    if len(records) == 2:
        records[0]["vs_timm"] = records[0]["images_per_s"] / records[1]["images_per_s"]
    return records


def _profile(args: argparse.Namespace, runner) -> None:
    """`--profile-steps` more steps of the (warm) Flax step under a trace in `--profile-dir`."""
    if not args.profile_steps:
        return
    say = lambda message: print(message, file=sys.stderr, flush=True)
    profiler = StepProfiler(args.profile_dir, args.profile_steps, 1, name=args.mode, say=say)
    for i in range(1, args.profile_steps + 1):
        profiler(i, runner.step)
    profiler.close()


def _timm(args, model):
    from vit_jax.tools import timm_bench  # noqa: PLC0415  (imports torch)

    return timm_bench.prepare_timm(args, model)


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2 after one `error:` line for bad flags)."""
    return errors.guarded(_main, argv)


def _main(argv) -> None:
    quiet.quiet_process()  # no libtpu probing without a TPU
    args = parse_args(argv)
    host_memory.keep_freed_memory()
    records = run(args)
    r = records[0]
    impl = f"attn={r['attn_impl']} kernels={r['kernels']} " if r["attn_impl"] else ""
    print(
        f"{args.model_name} {args.variant} {args.image_size}px batch={args.batch} {args.dtype} "
        f"{args.mode} {impl}params={r['params']:,} on {r.get('devices', 1)} x {r['device']}"
    )
    print(format_table(records))
    if "vs_timm" in r:
        print(f"flax / timm: {r['vs_timm']:.2f}x")
    lines = [json.dumps(rec) for rec in records]
    print("\n".join(lines))
    if args.json:
        files.append_text(args.json, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
