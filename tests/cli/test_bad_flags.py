"""Generated bad input: many bad values per flag, for every command line, checked for the property
(one `error:` line, exit status 2, no traceback, a finished run's files byte-identical) rather than
for a list of messages. tests/helpers/bad_input_cases.py keeps the hand-written regression cases.

The training CLI's config values are checked through `vit_jax.config.validate`, the function its
flags reach before anything compiles (its flag parsing and the boundary have their own tests); the
other CLIs run in-process on generated argv.
"""

import hashlib
import os
import shutil

import pytest

from tests.helpers.paths import ROOT
from vit_jax import config as config_lib
from vit_jax.common import errors, trees

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")

# Every numeric config key, by the range it must lie in; bad values are generated from the range.
# A new numeric key must be added here (the test below fails until it is), so its range is decided.
AT_LEAST_1 = (
    "total_steps", "batch_size", "image_size", "grad_accum_steps", "keep_checkpoints",
    "shuffle_buffer", "model.hidden_size", "model.depth", "model.mlp_dim", "model.num_heads",
    "model.patch_size", "num_classes", "eval_batch_size",
    "data_threads", "model.rope_ref_grid", "rsqrt_timescale", "model.conv_layers",
    "distributed_timeout_s",
    "model.conv_kernel",  # odd and >= 3, and only with tokenizer="conv" (models/tokenizers.py)
    "clip_frames", "clip_stride", "eval_clips",  # clip windows (vit_jax/data/options.py)
)  # fmt: skip
AT_LEAST_0 = (
    "seed", "warmup_steps", "log_every", "eval_every", "checkpoint_every", "prefetch",
    "profile_steps", "cooldown_steps",
    "weight_decay", "grad_clip", "momentum", "aug.randaug_n", "aug.randaug_m", "aug.mixup_alpha",
    "aug.cutmix_alpha", "model.num_registers", "model.representation_size",  # 0: no pre-logits layer, as None
)  # fmt: skip
BELOW_1 = (
    "b1", "b2", "label_smoothing", "model.dropout_rate", "model.attention_dropout_rate",
    "model.drop_path_rate", "ema_decay",
)  # fmt: skip
UNIT_INTERVAL = (
    "min_lr_ratio", "aug.crop_area_max", "aug.eval_crop_pct", "aug.crop_area_min", "layer_decay",
    "distill.alpha",
)  # fmt: skip
POSITIVE = ("lr", "distill.tau", "model.norm_eps")
ANY = ("model.head_bias_init", "model.layer_scale", "cpu_devices", "mesh.data", "mesh.fsdp")
# cpu_devices (-1: per core) and mesh sizes (-1: the rest) are checked against the machine's
# devices by their own cases in tests/helpers/bad_input_cases.py and tests/common/.


def _bad_values(key):
    if key in AT_LEAST_1:
        return (0, -1)
    if key in AT_LEAST_0:
        return (-1,)
    if key in BELOW_1:
        return (-0.1, 1.0)
    if key in UNIT_INTERVAL:
        return (-0.1, 1.5)
    if key in POSITIVE:
        return (0.0, -1.0)
    return ()


def _numeric_keys():
    c = config_lib.base_config()
    out = []
    for key, value in trees.flatten(c).items():
        node, last = c, key.split(".")
        for part in last[:-1]:
            node = node[part]
        kind = type(value) if value is not None else node.get_type(last[-1])
        if kind in (int, float) and kind is not bool:
            out.append(key)
    return out


def _tiny_valid():
    c = config_lib.load_config(os.path.join(ROOT, "configs", "test_tiny.py"))
    config_lib.validate(c, num_devices=1)
    return c


def test_every_numeric_key_has_a_decided_range():
    ranged = {*AT_LEAST_1, *AT_LEAST_0, *BELOW_1, *UNIT_INTERVAL, *POSITIVE, *ANY}
    missing = sorted(set(_numeric_keys()) - ranged)
    assert not missing, f"decide the valid range of {missing} (and check it in validate)"
    assert not ranged - set(_numeric_keys()), sorted(ranged - set(_numeric_keys()))


CASES = [(k, v) for k in _numeric_keys() for v in _bad_values(k)]


@pytest.mark.parametrize("key,value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_bad_config_value_is_one_line_before_compiling(key, value):
    c = _tiny_valid()
    node, parts = c, key.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    if key.startswith("model.") and key.split(".")[1] in ("hidden_size", "num_heads"):
        node["variant"] = None  # sizes given without a size string
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c, num_devices=1)
    message = str(e.value)
    assert "\n" not in message and parts[-1] in message, message


def _one_error_line(code, captured):
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    assert len(err) == 1 and err[0].startswith("error: "), err


BENCHMARK_BASE = [
    "--variant=Ti/4", "--option=depth=1", "--image-size=8", "--batch=2", "--num-classes=3",
    "--steps=1", "--warmup=0", "--cpu-devices=0",
]  # fmt: skip
BENCHMARK_BAD = {
    "--batch": ("x", "0", "-2"),
    "--image-size": ("x", "0", "-8", "10"),  # 10: not a multiple of the patch
    "--num-classes": ("x", "0"),
    "--steps": ("x", "0"),
    "--warmup": ("x", "-1"),
    "--grad-clip": ("x", "-1"),
    "--peak-tflops": ("x", "0", "-5"),
    "--cpu-devices": ("x", "-2"),
    "--variant": ("Q/16", "B/x", ""),
    "--option": ("depth", "num_heads=5", "posemb=rope4d"),
    "--dtype": ("float16",),
    "--mode": ("eval",),
}
DATA_STATS_BASE = ["--dataset=digits", "--image_size=8", "--batch_size=8", "--steps=0"]
DATA_STATS_BAD = {
    "--image_size": ("x", "0", "-1"),
    "--batch_size": ("x", "0", "-1"),
    "--steps": ("x", "-1"),
    "--seed": ("x", "-1"),
    "--crop_area_min": ("x", "0", "1.5"),
    "--randaug_n": ("x", "-1"),
    "--randaug_m": ("x", "-1"),
    "--mixup_alpha": ("x", "-1"),
    "--cutmix_alpha": ("x", "-1"),
    "--dataset": ("nope", "folder:/no/such/folder", ""),
    "--split": ("nope", "train[:0]", "train[5:2]"),
}


def _argv(base, flag, value):
    return [a for a in base if not a.startswith(flag + "=")] + [f"{flag}={value}"]


@pytest.mark.parametrize(
    "flag,value", [(f, v) for f, vs in BENCHMARK_BAD.items() for v in vs], ids=str
)
def test_benchmark_bad_flags(flag, value, capsys):
    from vit_jax import benchmark  # noqa: PLC0415

    _one_error_line(benchmark.main(_argv(BENCHMARK_BASE, flag, value)), capsys.readouterr())


@pytest.mark.parametrize(
    "flag,value", [(f, v) for f, vs in DATA_STATS_BAD.items() for v in vs], ids=str
)
def test_data_stats_bad_flags(flag, value, capsys):
    from vit_jax import data_stats  # noqa: PLC0415

    _one_error_line(data_stats.main(_argv(DATA_STATS_BASE, flag, value)), capsys.readouterr())


def _digest(folder):
    h = hashlib.sha256()
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            path = os.path.join(root, name)
            h.update(path.encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_predict_bad_flags_and_paths_leave_the_run_untouched(tmp_path, capsys):
    from vit_jax import predict  # noqa: PLC0415

    run = str(tmp_path / "run")
    shutil.copytree(FIXTURE, run)
    before = _digest(run)
    afile = tmp_path / "a_file"
    afile.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    image = os.path.join(ROOT, "tests", "fixtures", "digit.png")
    cases = [
        [f"--workdir={run}", "--top_k=0", image],
        [f"--workdir={run}", "--top_k=-1", image],
        [f"--workdir={run}", "--top_k=x", image],
        ["--workdir=/no/such/run", image],
        [f"--workdir={afile}", image],
        [f"--checkpoint={afile}", image],
        [f"--workdir={run}", f"--checkpoint={run}", image],
        [f"--workdir={run}"],
        [f"--workdir={run}", str(folder)],
        [f"--workdir={run}", "/no/such/image.png"],
        [f"--workdir={run}", f"--export_npz={afile}/model.npz"],
        [f"--workdir={run}", f"--export_npz={folder}"],
        [f"--workdir={run}", f"--attention_map={afile}/map.png", image],
        [f"--workdir={run}", "--split=nope"],
        [f"--workdir={run}", "--split=test[:0]"],
        [f"--workdir={run}", "--unknown_flag=1"],
    ]
    for argv in cases:
        code = predict.main(["predict", *argv])
        captured = capsys.readouterr()
        try:
            _one_error_line(code, captured)
        except AssertionError as e:
            raise AssertionError(f"{argv}: {e}") from None
    assert _digest(run) == before
    assert sorted(os.listdir(folder)) == []  # nothing half-written where an export was refused
    assert errors.USER_ERRORS  # the boundary every CLI above ran inside


def test_evaluate_bad_flags_leave_the_run_untouched(tmp_path):
    """`python -m vit_jax.evaluate` on a run saved by an older main (tiny_run_v0): each bad request
    is one `error:` line, exit status 2, and the run's files stay byte-identical."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    run = str(tmp_path / "run")
    shutil.copytree(FIXTURE, run)
    before = _digest(run)
    cases = [
        ["--workdir=/no/such/run"],
        [],
        [f"--workdir={run}", "--step=99"],
        [f"--workdir={run}", "--step=-1"],
        [f"--workdir={run}", "--step=x"],
        [f"--workdir={run}", "--best"],
        [f"--workdir={run}", "--best", "--step=4"],
        [f"--workdir={run}", "--evals=nope"],
        [f"--workdir={run}", "--config=/no/such/config.py"],
        [f"--workdir={run}", "extra"],
    ]
    for argv in cases:
        out = subprocess.run(
            [sys.executable, "-m", "vit_jax.evaluate", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        err = [x for x in out.stderr.splitlines() if x.startswith("error")]
        assert out.returncode == 2 and "Traceback" not in out.stderr, (argv, out.stderr[-1500:])
        assert len(err) == 1, (argv, out.stderr[-1500:])
    assert _digest(run) == before
