"""The ahead-of-time compile tool: a tiny config compiled for small TPU topologies on this CPU host
(libtpu, installed by the test extra, describes the devices; no TPU is used)."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers.paths import ENV, ROOT
from vit_jax import models
from vit_jax.config import load_config, with_model
from vit_jax.tools import aot, flops
from vit_jax.train import loop
from vit_jax.train import sharding as shd

pytest.importorskip("libtpu", reason="libtpu not installed: pip install -e '.[test]'")


def tiny_config(**overrides):
    c = load_config(os.path.join(ROOT, "configs", "test_tiny.py"))
    c.num_classes = 10
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def report():
    return aot.compile_report(tiny_config(), "v3:2x2")


def test_v3_8_is_eight_cores_with_half_a_chip_each(report):
    assert (report["devices"], report["chips"], report["cores_per_chip"]) == (8, 4, 2)
    assert report["hbm_gib_per_device"] == pytest.approx(16.0)
    assert report["mesh"] == {"data": 8, "fsdp": 1}


def test_memory_matches_the_state(report):
    """XLA's argument bytes per device = the replicated state (+ the batch share, which the TPU's
    tiling pads: small next to a state of kernels that tile exactly)."""
    c = tiny_config()
    c.model.update(dict(hidden_size=256, mlp_dim=1024))
    r = aot.compile_report(c, "v3:2x2")
    abstract = loop.build(c, 10, shd.make_mesh(-1, 1, aot.topology_devices("v3:2x2")))[4]
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    mem = r["train"]["memory_gib"]
    assert state_bytes > 15e6
    assert mem["argument"] * aot.GIB == pytest.approx(state_bytes, rel=0.03)
    assert mem["argument"] * aot.GIB > state_bytes
    # The donated state comes back in place: outputs alias the arguments' state.
    assert mem["alias"] * aot.GIB == pytest.approx(state_bytes, rel=0.03)
    assert r["train"]["fits"] and r["eval"]["fits"]
    total = mem["argument"] + mem["output"] - mem["alias"] + mem["temporary"] + mem["code"]
    assert r["train"]["headroom_gib"] == pytest.approx(16.0 - total)


def test_flops_and_roofline(report):
    c = tiny_config()
    model = loop.build(c, 10, shd.make_mesh(-1, 1, jax.devices()[:1]))[0]
    analytic = flops.step_flops(model, (8, 8), "train") * c.batch_size
    train = report["train"]
    assert train["analytic_flops"] == analytic == report["analytic_flops_per_step"]
    # XLA counts elementwise work too (norms, softmax, optimizer): above the matmuls, same order.
    assert 1.0 <= train["xla_flops"] / analytic < 2.0
    device = aot.Device(aot.CHIPS["TPU v3"], 2)
    compute = analytic / 8 / device.peak_flops
    memory = train["xla_bytes_per_device"] / device.hbm_bytes_per_s
    assert train["roofline_s"] == pytest.approx(max(compute, memory))
    assert train["roofline_images_per_s"] == pytest.approx(c.batch_size / max(compute, memory))
    assert train["bound"] == ("compute" if compute >= memory else "memory")
    assert train["mfu_at_roofline"] == pytest.approx(compute / max(compute, memory))
    assert (train["compute_s"], train["memory_s"]) == pytest.approx((compute, memory))


def test_fsdp_shards_the_largest_arrays():
    c = tiny_config(batch_size=32, eval_batch_size=32)
    c.model.update(dict(hidden_size=64, mlp_dim=128))  # kernels of 8,192 entries: sharded
    c.mesh.update(dict(data=1, fsdp=4))
    r = aot.compile_report(c, "v5e:2x2")
    assert (r["devices"], r["chips"], r["chip"]) == (4, 4, "v5e")
    assert r["mesh"] == {"data": 1, "fsdp": 4}
    mesh = shd.make_mesh(1, 4, aot.topology_devices("v5e:2x2"))
    _, _, _, _, abstract, shardings = loop.build(c, 10, mesh)
    rows = aot.largest_arrays(abstract, shardings, n=1000)
    assert len(rows) == len(jax.tree.leaves(abstract))
    mlp = [r for r in rows if r["path"].endswith("MlpBlock_0/Dense_0/kernel")]
    assert len(mlp) == 2 * 3  # 2 blocks x (params, Adam mu, Adam nu)
    for row in mlp:  # 8,192 entries: sharded in four along the larger dimension
        assert row["shape"] == (64, 128) and row["spec"] == "P(None, 'fsdp')"
        assert row["bytes_per_device"] == 64 * 128 * 4 // 4
    small = [r for r in rows if math.prod(r["shape"]) < 4096]
    assert small and all(r["spec"] == "P()" for r in small)
    assert r["largest"] == rows[:5]


def test_a_config_too_large_does_not_fit():
    c = tiny_config(batch_size=4096, eval_batch_size=64, image_size=224)
    c.model.update(dict(variant="Ti/16", hidden_size=None, depth=4, mlp_dim=None, num_heads=None))
    r = aot.compile_report(c, "v5e:2x2")  # 1,024 images of Ti/16 activations per 16 GiB device
    assert not r["train"]["fits"]
    if "oom" not in r["train"]:
        assert r["train"]["memory_gib"]["total"] > 16.0 and r["train"]["headroom_gib"] < 0
    assert r["eval"]["fits"]
    text = aot.format_report(r)
    assert "train: DOES NOT FIT" in text and "eval: fits" in text


@pytest.mark.parametrize(
    "topology, message",
    [
        ("v3-8", "is not a TPU topology name; write GENERATION:SHAPE"),
        ("bogus:2x2", "libtpu does not know it (Invalid TPU external name"),
        ("v3:3x3", "libtpu does not know it"),
    ],
)
def test_bad_topology_is_one_line(topology, message):
    with pytest.raises(aot.AotError, match=message.replace("(", r"\(")):
        aot.topology_devices(topology)


def test_missing_libtpu_names_the_install(monkeypatch):
    from jax.experimental import topologies

    def missing(*args, **kwargs):
        raise RuntimeError("JAX TPU support not installed; cannot generate TPU topology.")

    monkeypatch.setattr(topologies, "get_topology_desc", missing)
    with pytest.raises(aot.AotError, match=r"needs libtpu: pip install 'jax\[tpu\]=="):
        aot.topology_devices("v3:2x2")


def test_batch_that_does_not_split_is_one_line():
    with pytest.raises(aot.AotError, match="batch_size=36 does not split over the 8 devices"):
        aot.compile_report(tiny_config(batch_size=36), "v3:2x2")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "vit_jax.aot", *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_writes_report_and_json(tmp_path):
    out = tmp_path / "r.json"
    p = _cli(
        "--config=configs/test_tiny.py", "--topology=v5e:2x2", "--num_classes=10",
        f"--json={out}",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert "on v5e:2x2: 4 v5e chips, 4 devices" in p.stdout
    assert "train: fits" in p.stdout and "eval: fits" in p.stdout
    r = json.loads(out.read_text())
    assert r["devices"] == 4 and r["train"]["fits"] is True
    assert np.isfinite(r["train"]["roofline_images_per_s"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/test_tiny.py"], "error: --topology is required"),
        (
            ["--config=configs/test_tiny.py", "--topology=v9:2x2", "--num_classes=10"],
            "error: --topology='v9:2x2': libtpu does not know it",
        ),
        (["--config=configs/test_tiny.py", "--topology=v3:2x2"], "error: set --config.num_classes"),
        (
            ["--config=configs/test_tiny.py", "--topology=v3:2x2", "--num_classes=0"],
            "error: --num_classes=0 must be 1 or more",
        ),
    ],
)
def test_cli_bad_input_is_one_line(args, message):
    p = _cli(*args)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_scanned_blocks_use_the_analytic_roofline():
    """XLA's cost analysis counts a scan body once (1/8 of the blocks here): the report says so and
    bounds the step by the analytic compute time alone."""
    c = tiny_config()
    c.model.update(dict(depth=8, scan=True))
    train = aot.compile_report(c, "v5e:2x2")["train"]
    assert train["xla_counts_loops_once"] and train["memory_s"] is None
    assert train["xla_flops"] < 0.5 * train["analytic_flops"]
    assert train["roofline_s"] == train["compute_s"] and train["bound"] == "compute"
    c.model.scan = False
    unrolled = aot.compile_report(c, "v5e:2x2")["train"]
    assert not unrolled["xla_counts_loops_once"] and unrolled["memory_s"] > 0
    assert unrolled["analytic_flops"] == train["analytic_flops"]


def test_scan_depth_script(tmp_path):
    """scripts/aot_scan_depth.py: one row per depth and layout, the same model either way."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import aot_scan_depth

    out = tmp_path / "scan.json"
    argv = ["--topology=v5e:2x2", "--depths=2", "--batch=8", "--variant=Ti/16", "--image-size=32"]
    rows = aot_scan_depth.main([*argv, f"--json={out}"])
    assert [(r["depth"], r["scan"]) for r in rows] == [(2, False), (2, True)]
    assert all(r["fits"] and r["compile_train_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"] == rows


@pytest.mark.parametrize(
    "variant, family, name",
    [
        ("S/16", "vit", "ViT-S/16"),
        ("R50x1", "resnet", "ResNet R50x1 (bit)"),
        ("R101x3", "resnet", "ResNet R101x3 (bit)"),
        ("R20", "resnet", "ResNet R20 (cifar)"),
        ("R50+B/16", "hybrid", "R50+ViT-B/16 hybrid"),
        ("R+Ti/16", "hybrid", "R+ViT-Ti/16 hybrid"),
    ],
)
def test_model_name_of_every_family(variant, family, name):
    model = models.create_model(variant, 10, model_name=family)
    assert aot._model_name(model) == name


def _r20_macs(side: int) -> int:
    """He et al.'s ResNet-20 at `side` px (3 stages of 3 basic units, 16/32/64 channels)."""
    macs = side * side * 9 * 3 * 16
    for s, c in ((side, 16), (side // 2, 32), (side // 4, 64)):
        cin = c // 2 if c > 16 else 16
        macs += s * s * 9 * (cin * c + c * c) + 2 * s * s * 9 * 2 * c * c
    return macs + 64 * 10


def test_resnet_config_compiles_with_flops_by_hand():
    c = with_model(tiny_config(), "resnet", "R20")  # 8 px, batch 32, BatchNorm
    r = aot.compile_report(c, "v5e:2x2")
    assert r["model"] == "ResNet R20 (cifar)" and r["params"] == 269_722  # He et al.'s 0.27M
    assert r["analytic_flops_per_step"] == 6 * _r20_macs(8) * c.batch_size
    train, evaluation = r["train"], r["eval"]
    assert train["fits"] and evaluation["fits"]
    assert evaluation["analytic_flops"] == pytest.approx(2 * _r20_macs(8) * c.eval_batch_size)
    # XLA counts only the taps of a SAME-padded conv that read the image (0.69x of the full 3x3
    # windows on the 2x2 maps of an 8 px input, 0.92x at 32 px, measured on v5e); it adds
    # BatchNorm and the optimizer and skips the first conv's input gradient.
    assert 0.65 <= train["xla_flops"] / train["analytic_flops"] < 1.0
    assert 0.65 <= evaluation["xla_flops"] / evaluation["analytic_flops"] < 1.0
    assert aot.format_report(r).startswith("ResNet R20 (cifar) on v5e:2x2: 4 v5e chips")


def test_hybrid_config_compiles_with_the_stem_and_the_vit_counted():
    c = with_model(tiny_config(image_size=32), "hybrid")
    c.model.update(
        dict(variant=None, resnet_layers=(1,), patch_size=2, hidden_size=16, depth=2, mlp_dim=32,
             num_heads=2, kernels="stock")
    )  # fmt: skip
    r = aot.compile_report(c, "v5e:2x2")
    assert r["model"].startswith("ResNet stages (1,) width 1 + ViT width 16 depth 2") and (
        r["model"].endswith("patch 2 on the stem's /4 map, hybrid")
    )
    # Stem at 32 px: 7x7/2 root conv 3→64 (16²), max-pool (8²), one bottleneck unit 64→256
    # (1x1 64→64, 3x3 64→64, 1x1 64→256, 1x1 projection 64→256) at 8²; then a ViT with patch 2
    # on the 256-channel 8x8 map (16 tokens + CLS), by the analytic ViT formula.
    stem = 16 * 16 * 49 * 3 * 64 + 64 * (64 * 64 + 9 * 64 * 64 + 64 * 256 + 64 * 256)
    vit = models.create_model("Ti/2", 10, hidden_size=16, depth=2, mlp_dim=32, num_heads=2)
    forward = 2 * stem + flops.vit_forward_flops(vit, (8, 8), channels=256)
    assert r["analytic_flops_per_step"] == 3 * forward * c.batch_size
    assert r["eval"]["analytic_flops"] == pytest.approx(forward * c.eval_batch_size)
    assert r["train"]["fits"] and r["eval"]["fits"]
    # XLA skips the root conv's input gradient and the padded taps (see the ResNet test).
    assert 0.8 <= r["train"]["xla_flops"] / r["train"]["analytic_flops"] < 1.2
