"""Use a trained ViT: top-k classes of image files, a split's accuracy, an attention map, npz export.

  python -m vit_jax.predict --workdir=/tmp/run [--top_k=5] digit.png cat.jpg
  python -m vit_jax.predict --checkpoint=/tmp/run/checkpoints/600 --split=test
  python -m vit_jax.predict --checkpoint=model.npz --config=configs/quickstart.py digit.png
  python -m vit_jax.predict --workdir=/tmp/run --attention_map=map.png digit.png
  python -m vit_jax.predict --workdir=/tmp/run --export_npz=model.npz    # e.g. for timm
  python -m vit_jax.predict --checkpoint=hf://timm/vit_small_patch16_224.augreg_in21k cat.jpg
  python -m vit_jax.predict --workdir=/tmp/run --export=out/model.safetensors --layout=timm
  python -m vit_jax.predict --workdir=/tmp/video_run clip.npy frames_folder/   # a vivit run

A `.safetensors` checkpoint (timm, transformers or ours; a file, a folder holding one, or hf://ORG/NAME
in the local Hugging Face cache, offline) brings its own model, image size and preprocessing.

Images get the eval preprocessing of the run's config, so predictions match evaluation. Errors (a
missing run, checkpoint or image, an unreadable image) print one line (`error: ...`) and exit with 2.
"""

import sys
from typing import List, Sequence

from vit_jax.common import quiet  # noqa: E402

quiet.quiet_process()  # TensorFlow's and libtpu's start-up lines bury the output

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax.common import errors, files, host_memory  # noqa: E402

# Private flags, so this CLI and `vit_jax.main` (which also has --config/--workdir) import side by side.
FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file of the model (required with an .npz checkpoint).",
    flag_values=FLAGS,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run's directory; its latest checkpoint is used.", flag_values=FLAGS
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None,
    "An Orbax step directory (WORKDIR/checkpoints/N), an exported .npz, a .safetensors file or "
    "folder, or hf://ORG/NAME[@REV] (the local Hugging Face cache).",
    flag_values=FLAGS,
)  # fmt: skip
_TOP_K = flags.DEFINE_integer(
    "top_k", 5, "Classes printed per image.", lower_bound=1, flag_values=FLAGS
)
_SPLIT = flags.DEFINE_string(
    "split",
    None,
    "Evaluate a split of the run's dataset, e.g. test or train[:10%].",
    flag_values=FLAGS,
)
_ATTENTION_MAP = flags.DEFINE_string(
    "attention_map", None, "Write the attention-rollout overlay of the (one) image to this PNG.",
    flag_values=FLAGS,
)  # fmt: skip
_EXPORT_NPZ = flags.DEFINE_string(
    "export_npz", None, "Write the run's params to this .npz (vit_jax layout, read by timm).",
    flag_values=FLAGS,
)  # fmt: skip

_EXPORT = flags.DEFINE_string(
    "export", None, "Write the params to this .safetensors file, with config.json beside it.",
    flag_values=FLAGS,
)  # fmt: skip
_LAYOUT = flags.DEFINE_enum(
    "layout", "timm", ["timm", "transformers", "vit_jax"], "Parameter names of --export.",
    flag_values=FLAGS,
)  # fmt: skip


class UsageError(errors.Error, ValueError):
    """Flags that do not make a request."""


def main(argv: Sequence[str]) -> int:
    """Runs the CLI on `argv` (program name first, as `sys.argv`).

    Returns:
      The exit status: 0, or 2 after printing `error: ...` (one line) to stderr.
    """
    host_memory.keep_freed_memory()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\n" + FLAGS.get_help())
        return 0
    return errors.guarded(_parse_and_run, argv)


def _parse_and_run(argv: Sequence[str]) -> None:
    FLAGS.unparse_flags()  # parse afresh on every call (tests call main repeatedly)
    try:
        images = FLAGS(list(argv))[1:]
    except flags.Error as e:
        raise UsageError(errors.first_line(e)) from None
    _run(images)


def _run(images: List[str]) -> None:
    if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
        raise UsageError("give exactly one of --workdir=DIR or --checkpoint=PATH")
    if not (images or _SPLIT.value or _EXPORT_NPZ.value or _EXPORT.value):
        raise UsageError(
            "nothing to do: give image files, --split=NAME or --export_npz=PATH / --export=PATH"
        )
    if _EXPORT.value and not _EXPORT.value.endswith(".safetensors"):
        raise UsageError(f"--export={_EXPORT.value}: name a .safetensors file (--export_npz: .npz)")
    if _ATTENTION_MAP.value and len(images) != 1:
        raise UsageError(f"--attention_map takes exactly one image file, got {len(images)}")
    for path in images:  # before the (slow) model load
        if not files.isfile(path) and not files.isdir(path):  # a folder: a clip (vivit runs)
            raise FileNotFoundError(f"image file {path} does not exist")
    for flag, value in (
        ("--export_npz", _EXPORT_NPZ.value),
        ("--export", _EXPORT.value),
        ("--attention_map", _ATTENTION_MAP.value),
    ):
        if value:
            files.check_output_path(value, flag)

    from vit_jax.tools import inference  # noqa: PLC0415  (JAX and TensorFlow load here, after the flags)

    model, variables, config, class_names = inference.load_run(
        _WORKDIR.value or _CHECKPOINT.value, _CONFIG.value
    )
    if _EXPORT_NPZ.value:
        from vit_jax.weights import npz  # noqa: PLC0415

        gelu = getattr(model, "gelu_approximate", None)  # recorded: fine-tuning warns on a change
        written = npz.export_npz(variables["params"], _EXPORT_NPZ.value, gelu_approximate=gelu)
        print(f"wrote {written}")
        if not hasattr(model, "posemb"):  # a ResNet: no ViT options for timm's ViT reader
            layout = "the released BiT layout" if model.layout == "bit_paper" else "our own names"
            stats = "; its batch_stats are not written" if variables.get("batch_stats") else ""
            print(
                f"note: a ResNet, written in {layout}; timm's ViT reader does not apply{stats}",
                file=sys.stderr,
            )
        problems = npz.timm_incompatibilities(model)
        if problems:  # the file is still ours to read back; timm would load it wrong or not at all
            print(
                f"warning: timm cannot load this model exactly: {'; '.join(problems)}",
                file=sys.stderr,
            )
    if _EXPORT.value:
        _export(model, variables, config, class_names)
    if images:
        _predict(model, variables, config, class_names, images)
    if _SPLIT.value:
        _evaluate(model, variables, config, _SPLIT.value)


def _export(model, variables, config, class_names) -> None:
    """--export: safetensors in --layout, config.json beside it; one line if the target cannot."""
    from vit_jax.weights import safetensors_ckpt  # noqa: PLC0415

    aug = config.aug
    try:
        written, _ = safetensors_ckpt.export(
            variables["params"], model, _EXPORT.value, layout=_LAYOUT.value,
            image_size=config.image_size, labels=class_names, mean=aug.mean, std=aug.std,
            crop_pct=aug.eval_crop_pct, interpolation=aug.get("eval_interpolation", "bilinear"),
        )  # fmt: skip
    except ValueError as e:
        raise UsageError(f"--export --layout={_LAYOUT.value}: {e}") from None
    print(f"wrote {written} ({_LAYOUT.value} layout) and config.json beside it")


def _predict(model, variables, config, class_names, paths: List[str]) -> None:
    """Prints each image's top-k classes; writes the attention map if asked."""
    from vit_jax.tools import inference  # noqa: PLC0415

    inputs, originals = inference.load_images(paths, config)
    probs = inference.predict_probs(model, variables, inputs, config.loss)
    for path, top in zip(paths, inference.top_k(probs, _TOP_K.value, class_names)):
        print(path)
        for name, p in top:
            print(f"  {p:.6f}  {name}")
    if _ATTENTION_MAP.value:
        from vit_jax.tools import rollout  # noqa: PLC0415

        heat = rollout.rollout_heatmap(model, variables, inputs)[0]
        print(f"wrote {rollout.save_overlay(originals[0], heat, _ATTENTION_MAP.value)}")


def _evaluate(model, variables, config, split: str) -> None:
    """Prints top-1/top-5/loss over every example of `split`, with the trainer's evaluator."""
    import copy  # noqa: PLC0415

    from vit_jax import evaluators  # noqa: PLC0415

    config = copy.deepcopy(config)
    config.evals, config.eval_split = {}, split
    (evaluator,) = evaluators.from_config(config)
    m = evaluator.run(
        evaluators.Context(model, put=lambda batch: batch, loss=config.loss), variables
    )
    print(
        f"{split}: top-1 {m['top1']:.6f}  top-5 {m['top5']:.6f}  loss {m['loss']:.6f}  "
        f"on {int(m['count'])} examples"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
