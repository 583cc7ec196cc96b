"""The quickstart with three evaluators: its test split, the test split at twice the resolution,
and a slice of the train split (to watch the generalisation gap), each logged under its name.

  python -m vit_jax.main --config=configs/quickstart_evals.py --workdir=/tmp/vit_evals
  python -m vit_jax.evaluate --workdir=/tmp/vit_evals --evals=test_32px     # eval-only, later

The best checkpoint (workdir/best) is chosen by the test split's top-1. Training is the quickstart's.
"""

from vit_jax.config import load_config


def get_config():
    c = load_config("quickstart.py", relative_to=__file__)
    c.evals.test = dict(type="classification", split="test")
    c.evals.test_32px = dict(type="classification", split="test", image_size=32, every=0)
    c.evals.train_slice = dict(type="classification", split="train[:25%]")
    c.best_metric = "test/top1"
    c.keep_best = True
    return c
