"""Ablation sweep: train every combination of swept config values × seeds, evaluate at several
resolutions, and write table.md, table.csv and PNG plots to the sweep directory.

  python scripts/ablate.py --config=configs/ablation_cifar10.py \
      --sweep=model.posemb=none,learn,sincos2d,learn2d,rope2d,rope_mixed --seeds=2 \
      --eval_sizes=24,40,48 --workdir=/tmp/ablation [--lock=/tmp/vit_cpu.lock] [--config.total_steps=600]

Several --sweep flags make a grid. Values are parsed to the key's type (int, float, bool, str; "none" for
keys that default to None). Rerunning the same command skips finished runs and resumes an unfinished one;
--report_only rewrites the table and plots from the finished runs without training.
"""

import sys

from vit_jax.common import quiet  # noqa: E402

quiet.quiet_process()  # only our own lines (TensorFlow, libtpu muted)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import cli  # noqa: E402
from vit_jax.common import errors  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config (configs/*.py).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Sweep directory (one run workdir per combination)."
)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,...; repeat the flag for a grid.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per setting: config.seed .. config.seed + N - 1.")
_EVAL_SIZES = flags.DEFINE_list("eval_sizes", [], "Extra eval resolutions, e.g. 24,40,48.")
_LOCK = flags.DEFINE_string(
    "lock", None, "File to flock around each run (shared-machine etiquette)."
)
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite the table and plots.")


_USAGE = "usage: --config=FILE --workdir=DIR --sweep=KEY=V1,V2 [--seeds=N] [--eval_sizes=A,B]"
fail = errors.fail


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --sweep=KEY=V1,V2")
    if not _WORKDIR.value or _CONFIG.value is None:
        fail(
            "--config and --workdir are required, e.g. --config=configs/quickstart.py --workdir=/tmp/ab"
        )
    from vit_jax.tools import ablation  # noqa: PLC0415

    try:
        sizes = [int(s) for s in _EVAL_SIZES.value]
    except ValueError:
        fail(f"--eval_sizes={','.join(_EVAL_SIZES.value)} should be integers, e.g. 24,40,48")
    with errors.boundary():
        cli.prepare_process(_CONFIG.value)  # the base config's batch sizes and kernels
        runs = ablation.expand(_CONFIG.value, _SWEEP.value, _SEEDS.value)
        finished = _REPORT_ONLY.value or ablation.run_sweep(
            _CONFIG.value, runs, _WORKDIR.value, sizes, lock=_LOCK.value
        )
    table = ablation.report(runs, _WORKDIR.value)
    print(table or "no finished runs yet", flush=True)
    if not finished:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, _USAGE))
