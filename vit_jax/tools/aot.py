"""Ahead-of-time compilation for a TPU topology on a CPU host: does a config fit, and how fast could
it run?

`compile_report(config, "v5p:4x4x4")` builds the run's real train step and eval step
(`vit_jax.train.step.jit_train_step`, the classification evaluator's step) over the config's mesh
laid onto the compile-only devices of the topology (libtpu describes them; no TPU is touched), lowers
and compiles them, and reports per device: XLA's argument / output / temporary memory against the
device's HBM, whether it fits, compile seconds, XLA's FLOPs and bytes against the analytic FLOPs, a
roofline step time (the slower of compute at peak and HBM traffic at full bandwidth) with the img/s
it implies, and the shardings of the largest arrays. The command line is `python -m vit_jax.aot`.
Any family compiles (`config.model_name`: vit, resnet, hybrid); the "analytic" FLOPs are
`flops.step_flops` (the ViT formula, or the matmuls and convolutions of the jaxpr for the others).

A device is what JAX sees: a TPU v3 or v4 chip appears as two devices (one per TensorCore, each with
half the chip's HBM and peak), v5e, v5p and v6e chips as one.
"""

import dataclasses
import functools
import math
import os
import re
import time
from typing import Any, Dict, List, NamedTuple, Optional

import jax
import numpy as np

from vit_jax import config as config_lib
from vit_jax import models
from vit_jax.common.errors import Error
from vit_jax.evaluators.classification import Classification
from vit_jax.models import hybrid, resnet
from vit_jax.tools import flops as flops_lib
from vit_jax.train import loop
from vit_jax.train import sharding as shd
from vit_jax.train import step as ts

GIB = 2**30


class Chip(NamedTuple):
    """One TPU chip, from Google Cloud's system-architecture pages (dense bf16 peak)."""

    name: str
    hbm_gib: float  # per chip
    peak_tflops: float  # per chip, bf16
    hbm_gbps: float  # per chip, GB/s


# jax's `device_kind` → chip. Cores per chip are read from the devices (`core_on_chip`).
CHIPS = {
    "TPU v3": Chip("v3", 32.0, 123.0, 900.0),
    "TPU v4": Chip("v4", 32.0, 275.0, 1228.0),
    "TPU v5 lite": Chip("v5e", 16.0, 197.0, 819.0),
    "TPU v5": Chip("v5p", 95.0, 459.0, 2765.0),
    "TPU v6 lite": Chip("v6e", 32.0, 918.0, 1640.0),
}

# Standard slices (chips), smallest first: what `--topology=smallest:v4` tries in order.
STANDARD = {
    "v3": ["2x2", "4x4", "4x8", "8x8", "8x16", "16x16", "16x32"],
    "v4": ["2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8", "8x8x16"],
    "v5p": ["2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8", "8x8x16"],
    "v5e": ["1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"],
    "v6e": ["1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"],
}
# libtpu allows one process per machine unless told otherwise (a compile-only use needs no lock),
# and logs its search for TPU hosts at error level: quiet it.
LIBTPU_ENV = dict(
    ALLOW_MULTIPLE_LIBTPU_LOAD="1",
    TPU_STDERR_LOG_LEVEL="3",
    TPU_MIN_LOG_LEVEL="3",
    TPU_WORKER_HOSTNAMES="localhost",
)
INSTALL = "pip install 'jax[tpu]=={}' (libtpu; no TPU needed to compile)"


class AotError(Error, ValueError):
    """The topology cannot be described (no libtpu, unknown name) or the config cannot be laid out."""


def topology_devices(name: str) -> List[Any]:
    """The compile-only devices of TPU topology `name` (e.g. "v3:2x2", "v5p:4x4x4")."""
    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+){1,2}", name or ""):
        raise AotError(
            f"--topology={name!r} is not a TPU topology name; write GENERATION:SHAPE in chips, "
            f"e.g. v3:2x2 (a v3-8), v4:2x2x2, v5p:4x4x4, v5e:4x4 (generations: {', '.join(STANDARD)})"
        )
    for key, value in LIBTPU_ENV.items():  # read when libtpu loads (on the first call)
        os.environ.setdefault(key, value)
    from jax.experimental import topologies  # noqa: PLC0415

    try:
        return list(topologies.get_topology_desc(name, platform="tpu").devices)
    except RuntimeError as e:  # JaxRuntimeError derives from RuntimeError
        if "not installed" in str(e) or "libtpu" in str(e).lower() and "found" in str(e):
            install = INSTALL.format(jax.__version__)
            raise AotError(f"compiling for a TPU needs libtpu: {install}") from None
        raise AotError(f"--topology={name!r}: libtpu does not know it ({_short(e)})") from None


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^[A-Z_]+: ", "", text)[:200]


@dataclasses.dataclass
class Device:
    """One device of the topology: its chip and its share of the chip."""

    chip: Chip
    cores_per_chip: int

    @property
    def hbm_bytes(self) -> float:
        return self.chip.hbm_gib * GIB / self.cores_per_chip

    @property
    def peak_flops(self) -> float:
        return self.chip.peak_tflops * 1e12 / self.cores_per_chip

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.chip.hbm_gbps * 1e9 / self.cores_per_chip


def describe_devices(devices) -> Device:
    kind = devices[0].device_kind
    if kind not in CHIPS:
        raise AotError(f"no chip data for device kind {kind!r}; add it to vit_jax.tools.aot.CHIPS")
    cores = 1 + max(getattr(d, "core_on_chip", 0) for d in devices)
    return Device(CHIPS[kind], cores)


def _batch(batch_size: int, dims, num_classes: int, sharding, train: bool):
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # noqa: E731
    b = dict(
        image=spec((batch_size, *dims, 3), np.float32),  # dims: (H, W), or (T, H, W) for clips
        label=spec((batch_size,), np.int32),
    )
    if train:
        b["soft_label"] = spec((batch_size, num_classes), np.float32)
    else:
        b["mask"] = spec((batch_size,), np.bool_)
    return b


def _memory(compiled) -> Dict[str, float]:
    m = compiled.memory_analysis()
    out = dict(
        argument=m.argument_size_in_bytes,
        output=m.output_size_in_bytes,
        temporary=m.temp_size_in_bytes,
        alias=m.alias_size_in_bytes,
        code=m.generated_code_size_in_bytes,
    )
    # Donated state: outputs reuse the arguments' buffers (alias), counted once.
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temporary"] + out["code"]
    return out


def _cost(compiled) -> Dict[str, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost or {}
    return dict(flops=float(cost.get("flops", 0.0)), bytes=float(cost.get("bytes accessed", 0.0)))


def compile_step(lowerable, *args) -> Dict[str, Any]:
    """Lowers and compiles; returns compile seconds, memory, cost, or the compiler's refusal."""
    start = time.perf_counter()
    try:
        compiled = lowerable.lower(*args).compile()
    except Exception as e:  # noqa: BLE001  (XLA's out-of-memory refusal is a JaxRuntimeError)
        if "RESOURCE_EXHAUSTED" in str(e) or "Ran out of memory" in str(e):
            return dict(seconds=time.perf_counter() - start, oom=_short(e))
        raise
    return dict(seconds=time.perf_counter() - start, memory=_memory(compiled), cost=_cost(compiled))


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def largest_arrays(abstract, shardings, n: int = 5) -> List[Dict[str, Any]]:
    """The `n` largest leaves of the state: path, global shape, PartitionSpec, bytes per device."""
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    rows = []
    for (path, leaf), sharding in zip(flat, specs):
        local = sharding.shard_shape(leaf.shape)
        rows.append(
            dict(
                path="/".join(_key_name(k) for k in path),
                shape=tuple(leaf.shape),
                spec=str(sharding.spec),
                bytes_per_device=math.prod(local) * np.dtype(leaf.dtype).itemsize,
            )
        )
    return sorted(rows, key=lambda r: -r["bytes_per_device"])[:n]


def compile_report(config, topology: str, num_classes: Optional[int] = None) -> Dict[str, Any]:
    """Compiles `config`'s train and eval steps for `topology`; the report `format_report` prints."""
    devices = topology_devices(topology)
    device = describe_devices(devices)
    config = config.copy_and_resolve_references()
    config_lib.resolve_kernels(config, "tpu")  # "auto" → the TPU's kernels, not this host's
    num_classes = num_classes or config.num_classes
    if not num_classes:
        raise AotError("set --config.num_classes: the tool reads no data to count the classes")
    try:
        mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    except ValueError as e:
        raise AotError(f"{e} of {topology}") from None
    n = len(devices)
    eval_batch = config.eval_batch_size or config.batch_size
    for key, size in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch)):
        if size % n:
            raise AotError(f"config.{key}={size} does not split over the {n} devices of {topology}")
    model, tx, schedule, _, abstract, shardings = loop.build(config, num_classes, mesh)
    state = shd.with_shardings(abstract, shardings)
    batch_sharding = shd.batch_sharding(mesh)
    train_fn = ts.jit_train_step(config, model, tx, schedule, shardings, mesh)
    size = config.image_size
    frames = (model.num_frames,) if config.model_name == "vivit" else ()  # clips, as loop.build
    dims = (*frames, size, size)
    train = compile_step(
        train_fn, state, _batch(config.batch_size, dims, num_classes, batch_sharding, True)
    )
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    variables = {"params": state["params"]}
    if abstract["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    eval_fn = jax.jit(
        functools.partial(Classification.step, model=model, loss_name=config.loss),
        out_shardings=replicated,
    )
    evaluation = compile_step(
        eval_fn, variables, _batch(eval_batch, dims, num_classes, batch_sharding, False)
    )
    per_image = flops_lib.step_flops(model, dims, "train")
    report = dict(
        model=_model_name(model),
        topology=topology,
        devices=n,
        chips=n // device.cores_per_chip,
        chip=device.chip.name,
        cores_per_chip=device.cores_per_chip,
        hbm_gib_per_device=device.hbm_bytes / GIB,
        mesh=dict(mesh.shape),
        batch_size=config.batch_size,
        input_shape=[config.batch_size, *dims, 3],
        params=int(sum(x.size for x in jax.tree.leaves(abstract["params"]))),
        analytic_flops_per_step=per_image * config.batch_size,
        largest=largest_arrays(abstract, shardings),
        train=_summarise(train, device, per_image * config.batch_size, config.batch_size, n),
        eval=_summarise(evaluation, device, per_image / 3 * eval_batch, eval_batch, n),
    )
    return report


def _model_name(model) -> str:
    """E.g. "ViT-S/16", "ResNet R50x1 (bit)", "R50+ViT-B/16 hybrid"; the sizes where no size
    string matches."""
    if isinstance(model, resnet.ResNet):
        if isinstance(model.depth, int):
            plain = model.layout == "cifar" and model.width == 1
            size = f"R{model.depth}" if plain else f"R{model.depth}x{model.width}"
        else:
            size = f"stages {tuple(model.depth)} width {model.width}"
        return f"ResNet {size} ({model.layout})"
    if not isinstance(model, models.VisionTransformer):
        return type(model).__name__
    ph = model.patch_size[0]
    sizes = (model.hidden_size, model.depth, model.mlp_dim, model.num_heads)
    size = next((n for n, known in models.SIZES.items() if tuple(known) == sizes), None)
    if isinstance(model, hybrid.HybridViT):
        stem = (tuple(model.resnet_layers), size, ph)
        for name, known in hybrid.HYBRIDS.items():
            if known == stem and model.resnet_width == 1:
                depth, vit = name.split("+")
                return f"{depth}+ViT-{vit} hybrid"
        encoder = f"ViT-{size}/{ph}" if size else _vit_sizes(sizes, ph)
        return (
            f"ResNet stages {tuple(model.resnet_layers)} width {model.resnet_width} + {encoder} "
            f"on the stem's /{model.stem_stride} map, hybrid"
        )
    return f"ViT-{size}/{ph}" if size else _vit_sizes(sizes, ph)


def _vit_sizes(sizes, patch: int) -> str:
    width, depth, mlp, heads = sizes
    return f"ViT width {width} depth {depth} mlp {mlp} heads {heads} patch {patch}"


def _summarise(result, device: Device, analytic: float, batch: int, n: int) -> Dict[str, Any]:
    """Fit and roofline of one compiled step: XLA's cost counts one device's program."""
    out = dict(compile_s=result["seconds"])
    if "oom" in result:
        return dict(out, fits=False, oom=result["oom"])
    mem, cost = result["memory"], result["cost"]
    total = mem["total"]
    compute_s = analytic / n / device.peak_flops
    # XLA counts a while loop's body once: a scanned encoder's FLOPs and bytes come out ~depth
    # times too small. Then the HBM term is unknown and the roofline is the compute term alone.
    counted = cost["flops"] * n >= 0.5 * analytic
    memory_s = cost["bytes"] / device.hbm_bytes_per_s if counted else None
    step_s = max(compute_s, memory_s or 0.0)
    return dict(
        out,
        memory_gib={k: v / GIB for k, v in mem.items()},
        fits=total <= device.hbm_bytes,
        headroom_gib=(device.hbm_bytes - total) / GIB,
        xla_flops=cost["flops"] * n,
        xla_bytes_per_device=cost["bytes"],
        xla_counts_loops_once=not counted,
        analytic_flops=analytic,
        compute_s=compute_s,
        memory_s=memory_s,
        roofline_s=step_s,
        bound="compute" if memory_s is None or compute_s >= memory_s else "memory",
        mfu_at_roofline=compute_s / step_s if step_s else 0.0,
        roofline_images_per_s=batch / step_s if step_s else float("inf"),
    )


def format_report(r: Dict[str, Any]) -> str:
    """A human-readable table of `compile_report`'s result."""
    lines = [
        f"{r['model']} on {r['topology']}: {r['chips']} {r['chip']} chips, {r['devices']} "
        f"devices ({r['cores_per_chip']} per chip, {r['hbm_gib_per_device']:.1f} GiB HBM each), "
        f"mesh {r['mesh']}, batch {r['batch_size']} (inputs {r['input_shape']}), "
        f"{r['params'] / 1e6:.1f}M params",
    ]
    for name in ("train", "eval"):
        s = r[name]
        if "oom" in s:
            lines.append(f"  {name}: DOES NOT FIT (compile {s['compile_s']:.0f} s): {s['oom']}")
            continue
        m = s["memory_gib"]
        fit = "fits" if s["fits"] else "DOES NOT FIT"
        lines.append(
            f"  {name}: {fit}: {m['total']:.2f} GiB per device of {r['hbm_gib_per_device']:.1f} "
            f"(arguments {m['argument']:.2f}, outputs {m['output']:.2f}, aliased {m['alias']:.2f}, "
            f"temporaries {m['temporary']:.2f}; headroom {s['headroom_gib']:.2f}); "
            f"compile {s['compile_s']:.1f} s"
        )
        hbm = "not counted" if s["memory_s"] is None else f"{s['memory_s'] * 1e3:.1f}"
        loops = " (XLA counts the scanned blocks once)" if s["xla_counts_loops_once"] else ""
        lines.append(
            f"    FLOPs/step: XLA {s['xla_flops']:.3e}{loops}, analytic {s['analytic_flops']:.3e} "
            f"({s['xla_flops'] / max(s['analytic_flops'], 1):.2f}x); roofline "
            f"{s['roofline_s'] * 1e3:.1f} ms/step = max(compute {s['compute_s'] * 1e3:.1f}, HBM "
            f"{hbm}), {s['bound']}-bound: {s['roofline_images_per_s']:,.0f} img/s, "
            f"MFU {s['mfu_at_roofline']:.0%} at best"
        )
    lines.append("  largest arrays (per device):")
    for a in r["largest"]:
        lines.append(
            f"    {a['path']} {a['shape']} {a['spec']}: {a['bytes_per_device'] / 2**20:.1f} MiB"
        )
    return "\n".join(lines)


def smallest_fitting(config, generation: str, num_classes=None, log=print) -> Dict[str, Any]:
    """Tries the standard slices of `generation` smallest first; the first report that fits."""
    if generation not in STANDARD:
        raise AotError(f"unknown generation {generation!r}; choose one of: {', '.join(STANDARD)}")
    for shape in STANDARD[generation]:
        name = f"{generation}:{shape}"
        devices = math.prod(int(x) for x in shape.split("x"))
        if config.batch_size % devices:  # cores: v3/v4 twice that; checked by compile_report
            continue
        try:
            r = compile_report(config, name, num_classes)
        except AotError as e:
            log(f"  {name}: skipped ({e})")
            continue
        log(format_report(r))
        if r["train"]["fits"] and r["eval"]["fits"]:
            return r
    raise AotError(f"no standard {generation} slice up to {STANDARD[generation][-1]} fits")


__all__ = ["CHIPS", "STANDARD", "compile_report", "format_report", "smallest_fitting"]
