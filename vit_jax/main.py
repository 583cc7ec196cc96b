"""Train a ViT from a config file.

  python -m vit_jax.main --config=configs/quickstart.py --workdir=/tmp/run [--config.model.posemb=rope2d]

Re-running the same command on the same workdir resumes from its latest checkpoint. Errors in the
config, data or checkpoints print one line (`error: ...`) and exit with status 2.
"""

from vit_jax.common import quiet

quiet.quiet_process()  # before TensorFlow and JAX's backend start: only our own lines

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import cli, evaluators  # noqa: E402
from vit_jax.common import errors, files  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and logs (resumed if it exists)."
)


_FINAL = (("top1", "top-1"), ("top5", "top-5"), ("loss", "loss"))
_USAGE = "usage: --config=FILE --workdir=DIR [--config.KEY=VALUE ...]"
fail = errors.fail


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --config=FILE --workdir=DIR")
    if not _WORKDIR.value:
        fail(
            "--workdir is required: the directory for checkpoints and logs, e.g. --workdir=/tmp/run"
        )
    with errors.boundary():
        files.check_output_path(_WORKDIR.value, "--workdir", folder=True)
    config = _CONFIG.value
    if config is None:
        fail("--config is required, e.g. --config=configs/quickstart.py")
    from vit_jax.train import train_and_evaluate  # noqa: PLC0415

    with errors.boundary():
        cli.prepare_process(config)
        result = train_and_evaluate(config, _WORKDIR.value)
    for name in evaluators.names(config):  # e.g. "final: eval top-1 0.97  top-5 1.00  loss 0.12"
        m = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(f"{name}/")}
        shown = [f"{label} {m[k]:.4f}" for k, label in _FINAL if k in m]
        if shown:
            print(f"final: {name} {'  '.join(shown)}  on {int(m['count'])} examples", flush=True)


def run() -> None:
    """Entry point: parses flags (one-line errors), then trains."""
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, _USAGE))


if __name__ == "__main__":
    run()
