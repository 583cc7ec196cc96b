"""Bad-input cases for the CLI (`tests/test_bad_input.py`, listed in docs/troubleshooting.md).

Each case is one `python -m vit_jax.main` run: the flags after the tiny test config, the exit
code and a regular expression the `error: ` line must match. `{...}` in flags and patterns are
filled from the test's paths: {run} a workdir holding a finished run, {copy} a fresh copy of it,
{new} an empty workdir, {tmp} the case's own scratch folder, {data} folder datasets (see
`make_folders`), {config} the test config file.
"""

import io
import os
from typing import NamedTuple, Tuple

import numpy as np
from PIL import Image


class Case(NamedTuple):
    """One CLI run: `python -m vit_jax.main --config={config} [--workdir=...] *flags`."""

    name: str
    flags: Tuple[str, ...]
    message: str  # regex searched in the `error: ` line (or, for exit 0, in stderr)
    code: int = 2
    env: Tuple[Tuple[str, str], ...] = ()
    prepare: str = ""  # name of a function in this module that damages {tmp}/{copy} first


RUN = "--workdir={run}"
NEW = "--workdir={new}"
COPY = "--workdir={copy}"

CASES = [
    # ----------------------------------------------------------- config: keys and types
    Case("unknown key (override)", (RUN, "--config.foo=1"), r"--config\.foo: no config key 'foo'"),
    Case(
        "unknown key, typo",
        (RUN, "--config.lrr=0.1"),
        r"no config key 'lrr' \(did you mean 'lr'\?\)",
    ),
    Case(
        "unknown nested key",
        (RUN, "--config.model.depht=3"),
        r"--config\.model\.depht: no config key",
    ),
    Case(
        "unknown key (config file)",
        ("--config={tmp}/typo.py", RUN),
        r"unknown config key\(s\): learning_rate; see vit_jax/config/defaults\.py",
        prepare="write_typo_config",
    ),
    Case(
        "wrong type (override)", (RUN, "--config.lr=fast"), r"--config\.lr=fast: could not convert"
    ),
    Case(
        "wrong type, int",
        (RUN, "--config.total_steps=2.5"),
        r"--config\.total_steps=2\.5: invalid literal",
    ),
    Case("wrong type, bool", (RUN, "--config.skip_corrupt=maybe"), r"--config\.skip_corrupt=maybe"),
    Case(
        "wrong type (config file)",
        ("--config={tmp}/wrong_type.py", RUN),
        r"in the --config file: TypeError: Could not override field 'batch_size'",
        prepare="write_wrong_type_config",
    ),
    # ----------------------------------------------------------- config: names and values
    Case(
        "unknown posemb",
        (RUN, "--config.model.posemb=rope4d"),
        r"unknown posemb 'rope4d'; choose one of: .*rope2d",
    ),
    Case("unknown norm", (RUN, "--config.model.norm=groupnorm"), r"unknown norm 'groupnorm'"),
    Case("unknown pool", (RUN, "--config.model.pool=max3d"), r"unknown pool 'max3d'"),
    Case(
        "unknown optimizer",
        (RUN, "--config.optimizer=adamx"),
        r"config\.optimizer='adamx' is not one of adamw, sgd",
    ),
    Case("unknown size string", (RUN, "--config.model.variant=Q/16"), r"config\.model: .*'Q/16'"),
    Case(
        "unknown dataset",
        (RUN, "--config.dataset=mnist"),
        r"unknown dataset 'mnist'; use digits, folder:PATH, tfds:NAME or moving_digits:TASK",
    ),
    Case(
        "batch not divisible by devices",
        (RUN, "--config.batch_size=33"),
        r"micro-batch 33 .* not divisible by the 2 devices; use a multiple of 2",
        env=(("XLA_FLAGS", "--xla_force_host_platform_device_count=2"),),
    ),
    Case(
        "image not divisible by patch",
        (RUN, "--config.image_size=10"),
        r"config\.image_size=10 is not divisible by the patch size 4",
    ),
    Case("negative learning rate", (RUN, "--config.lr=-0.1"), r"config\.lr=-0\.1 must be positive"),
    Case("zero learning rate", (RUN, "--config.lr=0"), r"config\.lr=0\.0 must be positive"),
    Case(
        "negative checkpoint interval",
        (RUN, "--config.checkpoint_every=-1"),
        r"config\.checkpoint_every=-1 must not be negative",
    ),
    Case(
        "cpu_devices below -1",
        (RUN, "--config.cpu_devices=-2"),
        r"config\.cpu_devices=-2: use -1 \(one per core\), 0 \(one device\) or N > 0",
    ),
    Case(
        "warmup as long as the run",
        (RUN, "--config.total_steps=2"),
        r"config\.warmup_steps=2 leaves no steps of total_steps=2 for the cosine schedule",
    ),
    Case("zero steps", (RUN, "--config.total_steps=0"), r"config\.total_steps=0 must be positive"),
    Case(
        "negative steps",
        (RUN, "--config.total_steps=-5"),
        r"config\.total_steps=-5 must be positive",
    ),
    # ----------------------------------------------------------- data
    Case(
        "missing data path",
        (RUN, "--config.dataset=folder:/no/such/dir"),
        r"dataset folder not found: /no/such/dir",
    ),
    Case(
        "empty split folder",
        (RUN, "--config.dataset=folder:{data}/empty_split"),
        r"no class folders with images in .*empty_split/test",
    ),
    Case(
        "empty class folder",
        (RUN, "--config.dataset=folder:{data}/empty_class"),
        r"empty class folder .*empty_class/train/c: no \.jpg",
    ),
    Case(
        "missing split folder",
        (RUN, "--config.dataset=folder:{data}/no_test"),
        r"split folder 'test' not found in .*no_test \(found: train\)",
    ),
    Case(
        "corrupt image",
        (NEW, "--config.dataset=folder:{data}/corrupt"),
        r"corrupt image file .*corrupt/train/b/bad\.jpg .*set config\.skip_corrupt=True",
    ),
    Case(
        "truncated image",
        (NEW, "--config.dataset=folder:{data}/truncated"),
        r"corrupt image file .*truncated/train/a/cut\.png",
    ),
    Case(
        "corrupt image, skipped",
        (
            NEW,
            "--config.dataset=folder:{data}/corrupt",
            "--config.skip_corrupt=True",
            "--config.total_steps=3",
        ),
        r"skipped 1 corrupt image files, e\.g\. .*bad\.jpg",
        code=0,
    ),
    Case(
        "gray and RGBA images in an RGB folder",
        (NEW, "--config.dataset=folder:{data}/mixed_modes", "--config.total_steps=3"),
        r"final: eval top-1 .* on 10 examples",  # the gray JPEG and palette GIF included
        code=0,
    ),
    # ----------------------------------------------------------- checkpoints
    Case(
        "different config in workdir",
        (RUN, "--config.lr=0.02", "--config.model.depth=3"),
        r"holds a run with a different config \(lr: 0\.01 -> 0\.02, model\.depth: 2 -> 3\); "
        r".*allow_config_change=True",
    ),
    Case(
        "wrong architecture",
        (RUN, "--config.model.hidden_size=32", "--config.allow_config_change=True"),
        r"checkpoint .*/checkpoints/16 does not fit the model: params\.\S+ is shape \(16,?.*\) "
        r"in the checkpoint, shape \(32,?.*\) in the model",
    ),
    Case(
        "truncated checkpoint data",
        (COPY,),
        r"cannot read checkpoint .*/checkpoints/16: .*delete .*/checkpoints/16 to resume",
        prepare="truncate_checkpoint_data",
    ),
    Case(
        "truncated checkpoint metadata",
        (COPY,),
        r"cannot read checkpoint .*/checkpoints/16: .*truncated",
        prepare="truncate_checkpoint_metadata",
    ),
    Case(
        "corrupt config.json",
        (COPY,),
        r"cannot read .*/config\.json \(.*\); .*delete it",
        prepare="corrupt_config_json",
    ),
    # ----------------------------------------------------------- command line
    Case("missing --workdir", (), r"--workdir is required"),
    Case(
        "missing config file",
        ("--config=/no/such/config.py", RUN),
        r"cannot load the --config file: \[Errno 2\] No such file",
    ),
    Case(
        "config path is a folder",
        ("--config={tmp}", RUN),
        r"cannot load the --config file: \[Errno 21\] Is a directory",
    ),
    Case(
        "config file syntax error",
        ("--config={tmp}/broken.py", RUN),
        r"syntax error on line 1",
        prepare="write_broken_config",
    ),
    Case("workdir is a file", ("--workdir={config}",), r"--workdir=.* is a file"),
    Case("unknown flag", (RUN, "--epochs=3"), r"Unknown command line flag 'epochs'"),
    Case("stray argument", (RUN, "train"), r"unexpected arguments \['train'\]"),
]


# ----------------------------------------------------------------- folder datasets
def _image(seed: int, mode: str = "RGB", size: int = 12, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size, size, 4)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _tree(root: str, files: dict) -> None:
    """files: {"train/a/0.png": bytes or None (an empty folder)}."""
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(path if data is None else os.path.dirname(path), exist_ok=True)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)


def _good(n_train: int = 8, n_test: int = 4) -> dict:
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for c in "ab":
            for i in range(n):
                files[f"{split}/{c}/{i}.png"] = _image(hash((split, c, i)) % 2**31)
    return files


def make_folders(root: str) -> None:
    """Small ImageFolder datasets under `root`, each with one defect (or a harmless oddity)."""
    _tree(f"{root}/empty_split", {k: v for k, v in _good().items() if k.startswith("train/")})
    _tree(f"{root}/empty_split", {"test": None})
    _tree(f"{root}/empty_class", {**_good(), "train/c": None})
    _tree(f"{root}/no_test", {k: v for k, v in _good().items() if k.startswith("train/")})
    _tree(f"{root}/corrupt", {**_good(), "train/b/bad.jpg": b"this is not a jpeg"})
    png = _image(7)
    _tree(f"{root}/truncated", {**_good(), "train/a/cut.png": png[: len(png) // 2]})
    mixed = _good()
    mixed["train/a/gray.png"] = _image(1, "L")
    mixed["train/b/rgba.png"] = _image(2, "RGBA")
    mixed["test/a/gray.jpg"] = _image(3, "L", fmt="JPEG")
    mixed["test/b/palette.gif"] = _image(4, "P", fmt="GIF")
    _tree(f"{root}/mixed_modes", mixed)


# ----------------------------------------------------------------- damage done before a case
def write_typo_config(tmp: str, copy: str) -> None:
    _write_config(tmp, "typo.py", "c.learning_rate = 0.1")


def write_wrong_type_config(tmp: str, copy: str) -> None:
    _write_config(tmp, "wrong_type.py", 'c.batch_size = "32"')


def write_broken_config(tmp: str, copy: str) -> None:
    with open(os.path.join(tmp, "broken.py"), "w") as f:
        f.write("def get_config(:\n")


def _write_config(tmp: str, name: str, line: str) -> None:
    with open(os.path.join(tmp, name), "w") as f:
        f.write(
            "from configs.test_tiny import get_config as tiny\n\n\n"
            f"def get_config():\n    c = tiny()\n    {line}\n    return c\n"
        )


def truncate_checkpoint_data(tmp: str, copy: str) -> None:
    for path in _files(os.path.join(copy, "checkpoints", "16"), "ocdbt.process_0"):
        os.truncate(path, 10)


def truncate_checkpoint_metadata(tmp: str, copy: str) -> None:
    os.truncate(os.path.join(copy, "checkpoints", "16", "default", "_METADATA"), 100)


def corrupt_config_json(tmp: str, copy: str) -> None:
    with open(os.path.join(copy, "config.json"), "w") as f:
        f.write('{"seed": 0,')


def _files(root: str, part: str):
    for d, _, names in os.walk(root):
        if part in d:
            yield from (os.path.join(d, n) for n in names)
