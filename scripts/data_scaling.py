"""The data-scaling study: model families × class-balanced fractions of train × seeds
(configs/data_scaling.py, vit_jax/tools/data_scaling.py, report in docs/data_efficiency.md).

  python scripts/data_scaling.py --dataset=folder:/path/to/cifar10-jpg.tar.gz \
      --workdir=docs/data_efficiency [--families=vit_learn,resnet] [--fractions=2,5,20,100] \
      [--seeds=3] [--lock=/tmp/vit_cpu.lock] [--report_only] [--set=total_steps=300]

Rerunning the same command skips every run with a result.json (commit them as they finish) and
resumes an unfinished one; the summary (summary.md, summary.json, scaling.png) is rewritten after
each run, always over every family and every planned size (--families and --fractions choose only
what trains). The dataset string is part of every run's config: keep it the same across machines.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))

from absl import app, flags, logging  # noqa: E402

from vit_jax import cli  # noqa: E402
from vit_jax.common import errors  # noqa: E402
from vit_jax.config import resolve_kernels  # noqa: E402

_DATASET = flags.DEFINE_string(
    "dataset", None, "config.dataset, e.g. folder:/path/cifar10-jpg.tar.gz"
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory (one sweep per family).")
_FAMILIES = flags.DEFINE_list(
    "families", None, "Families of configs/data_scaling.py (default: all)."
)
_FRACTIONS = flags.DEFINE_list("fractions", ["2", "5", "20", "100"], "Percent of train.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per (family, fraction).")
_LOCK = flags.DEFINE_string("lock", None, "File to flock around each run.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite the summary.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE applied to every family's config.")
_TRAIN_SIZE = 50_000  # CIFAR-10 train: the x axis of the plot in images
fail = errors.fail


def data_scaling_config():
    import data_scaling  # noqa: PLC0415  (configs/data_scaling.py)

    return data_scaling


def _configs():
    """Every family's config (the summary covers them all; --families limits only the runs)."""
    from vit_jax.tools import ablation  # noqa: PLC0415

    data_scaling = data_scaling_config()
    out = {}
    for name in data_scaling.FAMILIES:
        c = data_scaling.get_config(name)
        c.dataset = _DATASET.value
        for item in _SET.value:
            key, eq, text = item.partition("=")
            if not eq:
                fail(f"--set={item!r} should look like KEY=VALUE, e.g. total_steps=300")
            ablation.set_value(c, key, ablation.parse_value(c, key, text))
        out[name] = c
    return out


def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value or not _DATASET.value:
        fail("--dataset and --workdir are required, e.g. --dataset=folder:cifar10-jpg.tar.gz")
    try:
        fractions = [float(f) for f in _FRACTIONS.value]
    except ValueError:
        fail(f"--fractions={','.join(_FRACTIONS.value)} should be numbers (percent), e.g. 2,10,100")
    if not all(0 < f <= 100 for f in fractions):
        fail(f"--fractions={','.join(_FRACTIONS.value)} must lie in (0, 100]")
    from vit_jax.tools import data_scaling as study  # noqa: PLC0415

    with errors.boundary():
        # The summary always covers every family (a --families subset must not drop the
        # others' committed runs from summary.md); only the runs are limited to --families.
        configs = _configs()
        names = _FAMILIES.value or list(configs)
        bad = [n for n in names if n not in configs]
        if bad:
            fail(f"--families: unknown {bad}; choose from {', '.join(configs)}")
        cli.prepare_process(next(iter(configs.values())))
        for config in configs.values():
            resolve_kernels(
                config
            )  # as prepare_process did for the first: config.json says what ran
        # Likewise every fraction of the study's default plan is reported: runs of one
        # --fractions subset must not drop the other sizes' committed runs from summary.md.
        shown = sorted(set(fractions) | {float(f) for f in _FRACTIONS.default})
        finished = True
        # Seed-major: every family's first seed before any second seed, so a study stopped
        # early still compares all families (the teacher family before its students).
        todo = [] if _REPORT_ONLY.value else [(n, configs[n]) for n in names]
        for seeds in range(1, _SEEDS.value + 1):
            for name, config in todo:
                teacher = data_scaling_config().TEACHERS.get(name)
                finished = study.run_family(
                    config, name, _WORKDIR.value, fractions, seeds, lock=_LOCK.value,
                    teacher=teacher,
                )  # fmt: skip
                study.report(_WORKDIR.value, configs, shown, _SEEDS.value, _TRAIN_SIZE)
                if not finished:
                    break
            if not finished:
                break
        table = study.report(_WORKDIR.value, configs, shown, _SEEDS.value, _TRAIN_SIZE)
    print(table or "no finished runs yet", flush=True)
    if not finished:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
