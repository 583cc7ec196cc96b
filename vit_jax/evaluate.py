"""Evaluate a run's checkpoint without training: every evaluator of its config, or some of them.

  python -m vit_jax.evaluate --workdir=/tmp/run                       # latest checkpoint
  python -m vit_jax.evaluate --workdir=/tmp/run --step=400 --evals=test_24px
  python -m vit_jax.evaluate --workdir=/tmp/run --best
  python -m vit_jax.evaluate --workdir=/tmp/run --add=fewshot,knn    # frozen-representation metrics
  python -m vit_jax.evaluate --workdir=/tmp/run --config=configs/quickstart.py \
      --config.evals.test_24px.image_size=24         # other evaluators for the same model
  python -m vit_jax.evaluate --checkpoint=hf://timm/vit_small_patch16_224.augreg_in21k \
      --config=configs/finetune.py:cifar10              # weights without a run: the config's data

The run's `config.json` is used unless --config is given (its model must be the run's). Results are
printed and appended to WORKDIR/eval_only.jsonl. Errors print one line (`error: ...`), exit status 2.
"""

import json

from vit_jax.common import quiet  # noqa: E402

quiet.quiet_process()  # only our own lines (TensorFlow, libtpu muted)

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import cli, evaluators  # noqa: E402
from vit_jax.common import errors, files  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with the evaluators (default: the run's config.json)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None,
    "Weights without a run (with --config): .npz, .safetensors, a folder holding one, or hf://ORG/NAME.",
)  # fmt: skip
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
_BEST = flags.DEFINE_bool("best", False, "Evaluate the run's best checkpoint (keep_best).")
_EVALS = flags.DEFINE_list("evals", [], "Evaluator names to run (default: all).")
_ADD = flags.DEFINE_list(
    "add", [], "Evaluator types to add with their defaults, named by type, e.g. fewshot,knn."
)
_USAGE = (
    "usage: --workdir=DIR [--step=N | --best] [--evals=a,b] [--add=fewshot,knn] [--config=FILE]"
    " | --checkpoint=PATH --config=FILE [--evals=a,b]"
)


def _run_config(workdir: str):
    path = files.join(workdir, "config.json")
    if not files.exists(path):
        errors.fail(f"no config.json in {workdir}: is it a training run's --workdir?")
    from vit_jax import config as config_lib  # noqa: PLC0415

    return config_lib.from_saved(json.loads(files.read_text(path)))


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        errors.fail(f"unexpected arguments {argv[1:]} ({_USAGE})")
    if _CHECKPOINT.value:
        return _evaluate_weights(_CHECKPOINT.value)
    if not _WORKDIR.value or not files.isdir(_WORKDIR.value):
        errors.fail(f"--workdir must be a training run's directory, got {_WORKDIR.value!r}")
    if _BEST.value and _STEP.value is not None:
        errors.fail("--best and --step choose a checkpoint each; pass one of them")
    config = _CONFIG.value if _CONFIG.value is not None else _run_config(_WORKDIR.value)
    for kind in _ADD.value:
        if kind not in evaluators.EVALUATORS:
            errors.fail(
                f"--add={kind}: no evaluator type {kind!r}; types: {', '.join(evaluators.EVALUATORS.names())}"
            )
        if kind in (config.evals or {}):
            errors.fail(f"--add={kind}: the run already has an evaluator named {kind!r}")
        if not config.evals:  # keep the run's implicit evaluator under its name
            config.evals = ml_collections.ConfigDict({"eval": dict(type="classification")})
        config.evals[kind] = dict(type=kind)
    # The kernels are numerically the same: choose this machine's, not the training machine's.
    config.model.kernels, config.model.attn_impl = "auto", "auto"
    from vit_jax.train.eval_only import evaluate_checkpoint  # noqa: PLC0415

    with errors.boundary():
        cli.prepare_process(config)
        step, results = evaluate_checkpoint(
            config, _WORKDIR.value, _STEP.value, _BEST.value, _EVALS.value
        )
    for name, metrics in results.items():
        print(evaluators.describe(step, name, metrics), flush=True)


def _evaluate_weights(path: str) -> None:
    """--checkpoint: the config's evaluators on weights that are not a run's (a timm / transformers
    checkpoint brings its model and preprocessing, `vit_jax.config.from_checkpoint`)."""
    if _WORKDIR.value or _STEP.value is not None or _BEST.value:
        errors.fail("--checkpoint evaluates weights without a run: drop --workdir/--step/--best")
    if _CONFIG.value is None:
        errors.fail(f"--checkpoint={path} needs --config=FILE for the dataset and evaluators")
    config = _CONFIG.value
    config.model.kernels, config.model.attn_impl = "auto", "auto"
    from vit_jax.tools import inference  # noqa: PLC0415

    with errors.boundary():
        cli.prepare_process(config)
        model, variables, config, _ = inference.load_run(path, config)
        context = evaluators.Context(model, put=lambda batch: batch, loss=config.loss)
        results = {
            ev.name: ev.run(context, variables)
            for ev in evaluators.from_config(config, _EVALS.value)
        }
    for name, metrics in results.items():
        print(evaluators.describe(0, name, metrics), flush=True)


def run() -> None:
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, _USAGE))


if __name__ == "__main__":
    run()
