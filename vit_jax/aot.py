"""Compile a config's train and eval steps for a TPU topology on this (CPU) host: memory, fit,
compile time, FLOPs and a roofline estimate, without a TPU.

  python -m vit_jax.aot --config=configs/imagenet_s16.py --topology=v3:2x2 --num_classes=1000
  python -m vit_jax.aot --config=configs/vit_g14.py --topology=v4:4x4x8
  python -m vit_jax.aot --config=configs/i21k_b16.py --topology=smallest:v3   # first slice that fits

Needs libtpu (`pip install 'jax[tpu]==<jax version>'`, or `pip install -e '.[tpu]'`); JAX runs on
the CPU (the TPU devices are compile-only). `--json=PATH` writes the report as JSON. See
docs/performance.md for the table of the repository's large configs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # else JAX tries to open a local TPU and waits

import json  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import cli  # noqa: E402
from vit_jax.common import errors, files  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU topology GEN:SHAPE in chips (v3:2x2 is a v3-8), or smallest:GEN"
)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "classes of the head (default: config.num_classes; no data is read)"
)
_JSON = flags.DEFINE_string("json", None, "also write the report as JSON to this file")
_USAGE = "usage: --config=FILE --topology=v3:2x2 [--num_classes=N] [--config.KEY=VALUE ...]"


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)
    fail = errors.fail
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --config=FILE --topology=v3:2x2")
    if _CONFIG.value is None:
        fail("--config is required, e.g. --config=configs/imagenet_s16.py")
    if not _TOPOLOGY.value:
        fail("--topology is required, e.g. --topology=v3:2x2 (a v3-8) or --topology=smallest:v4")
    if _NUM_CLASSES.value is not None and _NUM_CLASSES.value < 1:
        fail(f"--num_classes={_NUM_CLASSES.value} must be 1 or more")
    import jax  # noqa: PLC0415

    jax.config.update("jax_platforms", "cpu")
    from vit_jax.config import validate  # noqa: PLC0415
    from vit_jax.tools import aot  # noqa: PLC0415

    with errors.boundary():
        if _JSON.value:
            files.check_output_path(_JSON.value, "--json")
        config = _CONFIG.value
        validate(config)
        if _TOPOLOGY.value.startswith("smallest:"):
            report = aot.smallest_fitting(
                config, _TOPOLOGY.value.split(":", 1)[1], _NUM_CLASSES.value
            )
        else:
            report = aot.compile_report(config, _TOPOLOGY.value, _NUM_CLASSES.value)
            print(aot.format_report(report), flush=True)
        if _JSON.value:
            with files.atomic_write(_JSON.value) as f:
                json.dump(report, f, indent=1, default=str)


def run() -> None:
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, _USAGE))


if __name__ == "__main__":
    run()
