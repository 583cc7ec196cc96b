"""The inference CLI on a real (tiny) digits run: top-k against the model's softmax, split accuracy
against the trainer's, attention maps, npz export and reload, one-line errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.tiny import tiny_config
from vit_jax import models, predict
from vit_jax import train as train_lib
from vit_jax.train.checkpoint import Checkpointer
from vit_jax.weights import npz as npz_lib

TEST_IDS = (0, 1, 2)  # digits test examples written as PNGs; their labels are 3, 5, 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 40-step digits run at 16 x 16 (the 8 x 8 digits are upsampled by the eval preprocessing)."""
    from vit_jax.data.digits import open_digits

    root = tmp_path_factory.mktemp("predict")
    config = tiny_config(dataset="digits", image_size=16, batch_size=32, eval_batch_size=120)
    config.update(dict(total_steps=40, eval_every=0, checkpoint_every=1000, log_every=1000))
    result = train_lib.train_and_evaluate(config, str(root / "run"))
    test = open_digits("", "test", None)
    assert tuple(test.labels[list(TEST_IDS)]) == (3, 5, 0)
    pngs = []
    for i in TEST_IDS:
        pngs.append(str(root / f"digit{i}.png"))
        Image.fromarray(test.images[i]).save(pngs[-1])
    return dict(workdir=str(root / "run"), config=config, result=result, pngs=pngs, root=root)


def _params(workdir):
    ckpt = Checkpointer(workdir, 3)
    state = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    return jax.device_get(state["params"])


def _eval_softmax(run, ids):
    """The trained model's softmax on the eval pipeline's images of test examples `ids`."""
    from vit_jax import data

    batch = next(iter(data.eval_iterator(run["config"])))
    assert list(batch["index"][: len(ids)]) == list(ids)
    model = models.from_config(run["config"].model, 10)
    logits = model.apply({"params": _params(run["workdir"])}, batch["image"][: len(ids)])
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def _cli(capsys, *args):
    code = predict.main(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _top_k(out: str):
    """{image path: [(class name, probability), ...]} from the CLI's output."""
    result, current = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            p, name = line.split()
            result[current].append((name, float(p)))
        elif not line.startswith("wrote "):
            current = line
            result[current] = []
    return result


def test_top_k_classes_are_the_models_softmax_on_the_eval_preprocessing(run, capsys):
    code, out, err = _cli(capsys, f"--workdir={run['workdir']}", "--top_k=3", *run["pngs"])
    assert code == 0, err
    printed = _top_k(out)
    assert list(printed) == run["pngs"]
    want = _eval_softmax(run, TEST_IDS)
    for probs, path in zip(want, run["pngs"]):
        top = printed[path]
        order = np.argsort(-probs)[:3]
        assert [name for name, _ in top] == [str(i) for i in order]  # digits' class names
        np.testing.assert_allclose([p for _, p in top], probs[order], atol=1e-6)
        assert sum(p for _, p in top) <= 1.0


def test_split_accuracy_equals_the_trainers_final_eval(run, capsys):
    code, out, err = _cli(capsys, f"--workdir={run['workdir']}", "--split=test")
    assert code == 0, err
    words = out.split()
    assert words[:2] == ["test:", "top-1"] and words[-3:] == ["on", "360", "examples"]
    assert abs(float(words[2]) - run["result"]["top1"]) <= 1e-6
    assert abs(float(words[4]) - run["result"]["top5"]) <= 1e-6


def test_attention_map_is_a_png_of_the_images_size(run, capsys):
    big = run["root"] / "digit_20x12.png"
    Image.open(run["pngs"][0]).resize((12, 20), Image.NEAREST).save(big)
    out_png = run["root"] / "maps" / "attention.png"
    code, out, err = _cli(
        capsys, f"--workdir={run['workdir']}", f"--attention_map={out_png}", str(big)
    )
    assert code == 0, err
    assert f"wrote {out_png}" in out
    overlay = np.asarray(Image.open(out_png).convert("RGB"))
    assert overlay.shape == (20, 12, 3)
    assert np.abs(overlay[..., 0].astype(int) - overlay[..., 2]).max() > 20  # coloured, not grey


def test_exported_npz_holds_the_params_and_predicts_the_same(run, capsys):
    npz = run["root"] / "export" / "vit.npz"
    code, out, err = _cli(capsys, f"--workdir={run['workdir']}", f"--export_npz={npz}")
    assert (code, out) == (0, f"wrote {npz}\n"), err
    params = _params(run["workdir"])
    flat = npz_lib.read_npz(str(npz))
    # vit_jax layout (pre-Linen block names), what timm reads.
    np.testing.assert_array_equal(
        flat["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"],
        params["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]["kernel"],
    )
    jax.tree.map(np.testing.assert_array_equal, npz_lib.load_npz(str(npz), params), params)
    # Reloaded through --checkpoint=.npz with --config=FILE (a config file rebuilding the run's).
    cfg = run["root"] / "run_config.py"
    cfg.write_text(
        "import json\nimport ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(json.load(open({run['workdir'] + '/config.json'!r})))\n"
    )
    code, out, err = _cli(
        capsys, f"--checkpoint={npz}", f"--config={cfg}", "--top_k=10", run["pngs"][1]
    )
    assert code == 0, err
    probs = dict(_top_k(out)[run["pngs"][1]])
    want = _eval_softmax(run, TEST_IDS[:2])[1]
    np.testing.assert_allclose([probs[str(c)] for c in range(10)], want, atol=1e-6)
    np.testing.assert_allclose(sum(probs.values()), 1.0, atol=1e-5)


def test_errors_are_one_line(run, capsys):
    missing = run["root"] / "nope.png"
    bad = run["root"] / "bad.png"
    bad.write_text("not an image")
    npz = run["root"] / "w.npz"
    np.savez(npz, x=np.zeros(2))
    cases = [
        ((f"--workdir={run['workdir']}", str(missing)), f"image file {missing} does not exist"),
        ((f"--workdir={run['root'] / 'gone'}", run["pngs"][0]), f"{run['root'] / 'gone'} does not exist"),
        ((f"--workdir={run['root']}", run["pngs"][0]), f"no checkpoint in {run['root']}"),
        ((f"--workdir={run['workdir']}", str(bad)), f"cannot read image {bad}: "),
        ((f"--checkpoint={npz}", run["pngs"][0]), f"{npz} holds only weights; pass --config=FILE"),
        ((f"--workdir={run['workdir']}",), "nothing to do: give image files, --split=NAME or"),
        ((run["pngs"][0],), "give exactly one of --workdir=DIR or --checkpoint=PATH"),
        ((f"--workdir={run['workdir']}", "--top_k=0", run["pngs"][0]), "flag --top_k=0: "),
    ]  # fmt: skip
    for args, message in cases:
        code, out, err = _cli(capsys, *args)
        assert code == 2 and out == "", (args, err)
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, (args, err)


def test_the_command_line_runs_as_a_module(run):
    env = dict(os.environ, PYTHONPATH=ROOT)
    step_dir = os.path.join(run["workdir"], "checkpoints", "40")
    ok = subprocess.run(
        [sys.executable, "-m", "vit_jax.predict", f"--checkpoint={step_dir}", "--top_k=2",
         run["pngs"][2]],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = ok.stdout.splitlines()
    assert lines[0] == run["pngs"][2] and len(lines) == 3
    want = _eval_softmax(run, TEST_IDS)[2]
    assert float(lines[1].split()[0]) == pytest.approx(want.max(), abs=1e-6)
    gone = subprocess.run(
        [sys.executable, "-m", "vit_jax.predict", "--workdir=/nonexistent/run", run["pngs"][2]],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gone.returncode == 2 and gone.stdout == ""
    assert gone.stderr.splitlines()[-1] == (
        "error: /nonexistent/run does not exist (expected a workdir, checkpoint or .npz)"
    )
