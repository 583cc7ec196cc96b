"""The benchmark CLI and the analytic FLOP count (checked against XLA's cost analysis)."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import vit_jax
from vit_jax import benchmark
from vit_jax.tools import benchmark as bench
from vit_jax.tools import flops
from vit_jax.train import optim
from vit_jax.train import step as train_step

TINY = ["--variant=Ti/4", "--image-size=16", "--num-classes=10", "--batch=4"]
TINY_OPTS = dict(hidden_size=64, depth=2, mlp_dim=256, num_heads=2)


def _tiny_model(**kw):
    return vit_jax.create_model("Ti/4", 10, **{**TINY_OPTS, **kw})


# Wide enough for the matmuls to dominate, as in real models.
NARROW = dict(hidden_size=128, mlp_dim=512, depth=1)


def _xla_flops(fn, *args) -> float:
    return bench._cost_flops(jax.jit(fn).lower(*args).compile())


def test_known_model_flops():
    # ViT-B/16 at 224: 17.6 GMACs forward (the usual "17.6 GFLOPs"), ~105 GFLOP per training image.
    b16 = vit_jax.create_model("B/16", 1000)
    assert flops.forward_flops(b16, (224, 224)) == pytest.approx(35.13e9, rel=2e-3)
    assert flops.step_flops(b16, (224, 224), "train") == pytest.approx(105.4e9, rel=2e-3)
    ti16 = vit_jax.create_model("Ti/16", 1000)
    assert flops.forward_flops(ti16, (224, 224)) == pytest.approx(2 * 1.26e9, rel=0.01)


@pytest.mark.parametrize("pool", ["token", "map"])
def test_analytic_forward_flops_match_xla_cost_analysis(pool):
    model = _tiny_model(pool=pool, representation_size=32, **NARROW)
    x = jnp.zeros((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    xla = _xla_flops(lambda v, x: model.apply(v, x), variables, x) / 2
    analytic = flops.forward_flops(model, (16, 16))
    # XLA also counts elementwise work (norms, GELU, softmax, attention scaling): 17-18% on top of
    # the matmuls for this narrow model (measured with jax 0.10.2 CPU).

    assert analytic <= xla <= 1.22 * analytic


def test_analytic_train_flops_match_xla_cost_analysis():
    model = _tiny_model(**NARROW)
    config = bench.optimizer_config(benchmark.parse_args([]))
    tx = optim.make_optimizer(config)
    state = train_step.init_state(model, tx, (1, 16, 16, 3), seed=0)
    batch = dict(
        image=jnp.zeros((4, 16, 16, 3)),
        label=jnp.zeros((4,), jnp.int32),
        soft_label=jax.nn.one_hot(jnp.zeros((4,), jnp.int32), 10),
    )
    step = functools.partial(
        train_step.train_step, model=model, tx=tx, schedule=optim.make_schedule(config)
    )
    xla = _xla_flops(step, state, batch) / 4
    analytic = flops.step_flops(model, (16, 16), "train")
    # The backward pass skips the patch embedding's input gradient; the optimizer and the
    # elementwise work add a little (~9% here).
    assert 0.95 * analytic <= xla <= 1.15 * analytic


def test_parse_options_reads_json_scalars():
    opts = benchmark.parse_options(["depth=4", "gelu_approximate=True", "posemb=sincos2d"])
    assert opts == dict(depth=4, gelu_approximate=True, posemb="sincos2d")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        benchmark.parse_options(["depth"])


def test_known_device_peaks():
    assert bench.lookup_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert bench.lookup_peak("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert bench.lookup_peak("NVIDIA H200", "bfloat16") == 989.0
    assert bench.lookup_peak("cpu", "float32") is None


def _run_cli(capsys, tmp_path, *extra):
    path = tmp_path / "out.jsonl"
    opts = [f"--option={k}={v}" for k, v in TINY_OPTS.items()]
    argv = TINY + opts + ["--steps=2", "--warmup=1", f"--json={path}", *extra]
    assert benchmark.main(argv) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert printed == written
    return printed


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_cli_prints_a_table_and_valid_json(capsys, tmp_path, mode):
    (rec,) = _run_cli(capsys, tmp_path, f"--mode={mode}", "--peak-tflops=1.0")
    fields = (
        "images_per_s", "step_s_median", "compile_s", "peak_memory_bytes", "memory_source",
        "flops_per_image", "flops_per_image_xla", "tflops", "peak_tflops", "mfu", "device",
    )  # fmt: skip
    assert all(k in rec for k in fields)
    assert rec["framework"] == "flax" and rec["mode"] == mode and rec["batch"] == 4
    assert rec["devices"] == jax.device_count()  # JAX had started: --cpu-devices changed nothing
    assert rec["images_per_s"] > 0 and rec["compile_s"] > 0 and len(rec["step_s_all"]) == 2
    assert rec["memory_source"] in ("device peak", "process max RSS")
    assert rec["mfu"] == pytest.approx(rec["tflops"] / 1.0)
    assert rec["flops_per_image"] == flops.step_flops(_tiny_model(), (16, 16), mode)
    assert 0.95 <= rec["flops_per_image_xla"] / rec["flops_per_image"] <= 1.25


def test_cli_profiles_steps_after_the_timed_ones(capsys, tmp_path):
    """--profile-steps=2: a jax.profiler trace of two more steps, each annotated with its number,
    where TensorBoard's profile plugin looks (DIR/plugins/profile/<run>/<host>.xplane.pb)."""
    (rec,) = _run_cli(capsys, tmp_path, "--profile-steps=2", f"--profile-dir={tmp_path / 'tb'}")
    assert len(rec["step_s_all"]) == 2  # the timed steps are not the traced ones
    (xplane,) = (tmp_path / "tb" / "plugins" / "profile").glob("*/*.xplane.pb")
    profile = jax.profiler.ProfileData.from_file(str(xplane))
    steps = [
        dict(e.stats)["step_num"]
        for plane in profile.planes
        for line in plane.lines
        for e in line.events
        if e.name == "train"
    ]
    assert sorted(steps) == [1, 2]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--profile-steps=2"], "error: --profile-steps needs --profile-dir=DIR"),
        (["--profile-steps=-1"], "error: --profile-steps=-1 must be >= 0"),
        (
            ["--profile-steps=1", "--profile-dir=x", "--vs-timm", "--skip-flax"],
            "error: --profile-steps traces the Flax step; drop --skip-flax",
        ),
    ],
)
def test_cli_bad_profile_flags(capsys, flags, message):
    assert benchmark.main([*TINY, *flags]) == 2
    assert capsys.readouterr().err.strip().startswith(message)


def test_cli_vs_timm_reports_the_ratio(capsys, tmp_path):
    pytest.importorskip("timm")
    flax_rec, timm_rec = _run_cli(capsys, tmp_path, "--vs-timm", "--mode=infer")
    assert timm_rec["framework"] == "timm" and timm_rec["images_per_s"] > 0
    assert flax_rec["vs_timm"] == pytest.approx(flax_rec["images_per_s"] / timm_rec["images_per_s"])
    assert timm_rec["flops_per_image"] == flax_rec["flops_per_image"]
    assert timm_rec["timm_params"] == flax_rec["params"]  # the same architecture


def test_interleaved_timing_alternates_and_times_each_step(monkeypatch):
    clock, calls = [0.0], []

    def fake_step(name, seconds):
        def step():
            calls.append(name)
            clock[0] += seconds

        return step

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    (med_a, times_a), (med_b, times_b) = bench.time_interleaved(
        [fake_step("a", 1.0), fake_step("b", 3.0)], warmup=1, steps=3
    )
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up each, then one step of each in turn
    assert times_a == [1.0, 1.0, 1.0] and times_b == [3.0, 3.0, 3.0]
    assert (med_a, med_b) == (1.0, 3.0)


def test_cli_splits_the_cpu_and_counts_flops_over_all_devices(tmp_path):
    """--cpu-devices=2 in a fresh process: the step runs on 2 devices; XLA's per-device FLOP count
    is scaled back to the whole batch."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    opts = [f"--option={k}={v}" for k, v in TINY_OPTS.items()]
    cmd = [sys.executable, "-m", "vit_jax.benchmark", *TINY, *opts, "--steps=2", "--warmup=1"]
    out = subprocess.run(
        [*cmd, "--cpu-devices=2", f"--json={tmp_path / 'out.jsonl'}"], cwd=root,
        env=dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=root), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (rec,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rec["devices"] == 2 and "on 2 x cpu" in out.stdout
    assert rec["flops_per_image"] == flops.step_flops(_tiny_model(), (16, 16), "train")
    assert 0.95 <= rec["flops_per_image_xla"] / rec["flops_per_image"] <= 1.25


@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--cpu-devices=-2",
            "error: cpu_devices=-2: use -1 (one per core), 0 (one device) or N > 0",
        ),
        ("--skip-flax", "error: --skip-flax leaves nothing to time; add --vs-timm"),
        ("--option=depth", "error: --option='depth': write KEY=VALUE, e.g. --option=depth=4"),
    ],
)
def test_cli_bad_flags_print_one_line(capsys, flag, message):
    assert benchmark.main([*TINY, flag]) == 2
    assert capsys.readouterr().err.strip() == message


# ------------------------------------------------------------------ families (--model-name)
def _r20_macs(side: int) -> int:
    """He et al.'s ResNet-20 (3 stages of 3 basic units, 16/32/64 channels, zero-padded
    shortcuts) at `side` px: multiply-adds of its convolutions and head, by hand."""
    macs = side * side * 9 * 3 * 16
    for s, c in ((side, 16), (side // 2, 32), (side // 4, 64)):
        cin = c // 2 if c > 16 else 16
        macs += s * s * 9 * (cin * c + c * c) + 2 * s * s * 9 * 2 * c * c
    return macs + 64 * 10


def _r20_params() -> int:
    """Weights of the convolutions (no bias), BatchNorm scale + bias, the head: 269,722 (the count
    of the widely used PyTorch ResNet-20, e.g. akamaster/pytorch_resnet_cifar10)."""
    n = 3 * 3 * 3 * 16 + 2 * 16
    for cin, c in ((16, 16), (16, 32), (32, 64)):
        n += 9 * cin * c + 9 * c * c + 4 * c + 2 * (2 * 9 * c * c + 4 * c)
    return n + 64 * 10 + 10


def _run_argv(capsys, argv):
    assert benchmark.main([*argv, "--steps=2", "--warmup=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    return out[0], [json.loads(line) for line in out if line[:1] == "{"]


def test_cli_resnet_family_counts_flops_and_params_by_hand(capsys):
    argv = ["--model-name=resnet", "--variant=R20", "--image-size=32", "--num-classes=10"]
    head, (rec,) = _run_argv(capsys, [*argv, "--batch=4"])
    assert _r20_params() == 269_722
    assert rec["model_name"] == "resnet" and rec["params"] == _r20_params()
    assert rec["flops_per_image"] == 3 * 2 * _r20_macs(32)  # train: 3x the forward pass
    # XLA: the first conv's input gradient is skipped, BatchNorm and the optimizer added.
    assert 0.9 <= rec["flops_per_image_xla"] / rec["flops_per_image"] <= 1.25
    assert rec["attn_impl"] is None and rec["kernels"] is None  # a ResNet has neither
    assert head.startswith("resnet R20 32px batch=4 float32 train params=269,722 on")


def test_cli_hybrid_family_counts_stem_plus_vit(capsys):
    argv = ["--model-name=hybrid", "--variant=R+Ti/16", "--option=depth=1", "--image-size=32"]
    # Stock kernels: the CPU set's LayerNorm takes its means as matrix-vector products, which the
    # jaxpr count would add (6 x 768 FLOPs here).
    argv += ["--num-classes=10", "--batch=2", "--mode=infer", "--kernels=stock"]
    head, (rec,) = _run_argv(capsys, argv)
    # R+Ti/16: 7x7 stride-2 root conv 3→64 (16² outputs), max-pool to 8², then a ViT-Ti with
    # patch 8 on the 64-channel map: one patch token plus CLS.
    vit = vit_jax.create_model("Ti/8", 10, depth=1)
    want = 2 * 16 * 16 * 7 * 7 * 3 * 64 + flops.vit_forward_flops(vit, (8, 8), channels=64)
    assert rec["model_name"] == "hybrid" and rec["flops_per_image"] == want
    assert 0.95 <= rec["flops_per_image_xla"] / want <= 1.3
    assert head.startswith("hybrid R+Ti/16 32px batch=2 float32 infer attn=")


RESNET = ["--model-name=resnet", "--variant=R20", "--image-size=32"]
RESNET_OPTIONS = ", ".join(vit_jax.models.FAMILIES.get("resnet").options)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            [*RESNET, "--option=patch_size=4"],
            f"error: unknown model option(s) ['patch_size'] of family 'resnet'; valid options: "
            f"{RESNET_OPTIONS}",
        ),
        (
            [*RESNET, "--remat"],
            f"error: --remat is not an option of the 'resnet' family; its options: {RESNET_OPTIONS}",
        ),
        (
            [*RESNET, "--vs-timm"],
            "error: --vs-timm times timm's VisionTransformer, a --model-name=vit model only; "
            "drop it for --model-name=resnet",
        ),
        (["--model-name=resnet", "--variant=B/16"], "error: unknown resnet variant 'B/16'"),
        (
            ["--variant=Ti/16", "--option=distill_token=True"],
            "error: --option=distill_token=True trains against a teacher",
        ),
        (["--model-name=convnext"], "error: argument --model-name: invalid choice: 'convnext'"),
    ],
)
def test_cli_family_errors_are_one_line(capsys, flags, message):
    assert benchmark.main([*flags, "--batch=2", "--steps=1"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and not captured.out
    assert captured.err.strip().startswith(message)


@pytest.mark.parametrize("missing", ["torch", "timm"])
def test_vs_timm_without_torch_or_timm_names_the_install(capsys, monkeypatch, missing):
    from vit_jax.tools import timm_bench

    real = timm_bench.importlib.import_module

    def fake(name, *args):
        if name == missing:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real("json") if name in ("torch", "timm") else real(name, *args)

    monkeypatch.setattr(timm_bench.importlib, "import_module", fake)
    assert benchmark.main([*TINY, "--vs-timm", "--steps=1"]) == 2
    captured = capsys.readouterr()
    assert not captured.out  # nothing compiled or timed
    assert captured.err.strip() == (
        f"error: --vs-timm needs torch and timm; {missing} cannot be imported "
        f"(No module named '{missing}'): pip install torch timm"
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: vit_jax.create_model("R+Ti/16", 10, model_name="hybrid"),
            "a HybridViT has no twin there: use --model-name=vit",
        ),
        (
            lambda: _tiny_model(tokenizer="spt"),
            "tokenizer='spt' has no equivalent there",
        ),
        (
            lambda: _tiny_model(tokenizer="conv", conv_layers=2, patch_size=4),
            "tokenizer='conv' has no equivalent there",
        ),
    ],
)
def test_timm_twin_refuses_models_it_cannot_build(make, message):
    from vit_jax.tools import timm_bench

    with pytest.raises(timm_bench.TimmError, match=message):
        timm_bench.check_model(make())
    with pytest.raises(timm_bench.TimmError, match=message):  # before torch is imported
        timm_bench.build_timm_model(benchmark.parse_args(TINY), make())
    timm_bench.check_model(_tiny_model())  # the plain ViT passes
