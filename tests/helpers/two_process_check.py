"""As 1 process, or as one of 2 (`distributed` arg): train steps on a fixed global batch, then the
full loop on digits. Prints one JSON line: per-step losses, eval count and process count.

In the 2-process run each process feeds only its half of the same global batch.
"""

import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from tests.helpers.tiny import batch, tiny_config  # noqa: E402
from vit_jax import train as train_lib  # noqa: E402
from vit_jax.common.distributed import init_distributed  # noqa: E402
from vit_jax.train import sharding as shd  # noqa: E402
from vit_jax.train import step as ts  # noqa: E402

workdir = sys.argv[1]
c = tiny_config(dataset="digits", image_size=8, batch_size=32, eval_batch_size=64, total_steps=4)
c.eval_every = 0
c.async_checkpointing = False
c.optimizer = "sgd"
c.distributed = len(sys.argv) > 2
init_distributed(c.distributed)  # what the CLI does first (vit_jax/cli.py)

# Fixed global batches, each process contributing its contiguous slice.
mesh = shd.make_mesh()
model, tx, schedule, init, _, shardings = train_lib.build(c, 3, mesh)
state = jax.jit(init, out_shardings=shardings)()
step = jax.jit(
    functools.partial(ts.train_step, model=model, tx=tx, schedule=schedule),
    in_shardings=(shardings, shd.batch_sharding(mesh)),
)
n, p = jax.process_count(), jax.process_index()
losses = []
for i in range(3):
    full = batch(n=32, seed=i)
    local = {k: v[p * 32 // n : (p + 1) * 32 // n] for k, v in full.items()}
    state, m = step(state, shd.to_global(local, mesh))
    losses.append(float(m["loss"]))

# The whole loop: data sharded by process, eval over the full split.
result = train_lib.train_and_evaluate(c, workdir)
if p == 0:
    print(json.dumps(dict(losses=losses, count=result["count"], process_count=n)))
