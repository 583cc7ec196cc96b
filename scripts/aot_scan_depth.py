"""Compile time and memory of the train step against depth, unrolled vs scanned, for a TPU topology
(on this CPU host, through `vit_jax.tools.aot`). Prints a table and writes JSON.

  python scripts/aot_scan_depth.py --topology=v5e:2x2 --depths=6,12,24 --json=/tmp/aot_scan.json
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from vit_jax.common import errors  # noqa: E402
from vit_jax.config import base_config  # noqa: E402
from vit_jax.tools import aot  # noqa: E402


def config(args, depth: int, scan: bool):
    c = base_config()
    c.update(dict(batch_size=args.batch, eval_batch_size=args.batch, num_classes=1000))
    c.image_size = args.image_size
    c.model.update(dict(variant=args.variant, depth=depth, scan=scan, dtype="bfloat16"))
    c.model.remat = args.remat
    return c


def main(argv=None):
    p = errors.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--topology", default="v5e:2x2")
    p.add_argument("--depths", default="6,12,24")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--remat", action="store_true")
    p.add_argument("--variant", default="S/16")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--json")
    args = p.parse_args(argv)
    jax.config.update("jax_platforms", "cpu")
    rows = []
    print("depth  layout    compile train (s)  compile eval (s)  train GiB/device  temporaries GiB")
    for depth in [int(d) for d in args.depths.split(",")]:
        for scan in (False, True):
            r = aot.compile_report(config(args, depth, scan), args.topology)
            t, e = r["train"], r["eval"]
            mem = t.get("memory_gib", {})
            row = dict(
                depth=depth, scan=scan, compile_train_s=t["compile_s"], compile_eval_s=e["compile_s"],
                total_gib=mem.get("total"), temporary_gib=mem.get("temporary"), fits=t["fits"],
            )  # fmt: skip
            rows.append(row)
            print(
                f"{depth:5d}  {'scan' if scan else 'unrolled':8s}  {t['compile_s']:17.1f}  "
                f"{e['compile_s']:16.1f}  {row['total_gib'] or float('nan'):16.2f}  "
                f"{row['temporary_gib'] or float('nan'):15.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(topology=args.topology, batch=args.batch, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    with errors.boundary():
        main()
