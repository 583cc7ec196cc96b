"""Has each run's learned position table learned the 2-D grid? (ViT paper, Fig. 7)

  python scripts/posemb_structure.py docs/ablation/v2/runs/model.posemb=learn*_seed=* [--json=F]

For the learned tables in each run's latest checkpoint (`learn`: the patch rows of pos_embedding;
`learn2d`: row + col), prints the mean cosine similarity of neighbouring patches, of far patches,
and Spearman's correlation between similarity and patch distance, beside the same numbers for the
fixed sin-cos tables and for a table as initialised (N(0, 0.02) noise). See
vit_jax/tools/posemb_structure.py.
"""

import json
import os
import sys

from vit_jax.common import quiet  # noqa: E402

quiet.quiet_process()  # only our own lines (TensorFlow, libtpu muted)

from vit_jax.common import errors, files  # noqa: E402


def _row(name: str, stats: dict) -> str:
    return (
        f"| {name} | {stats['std']:.4f} | {stats['neighbour_cos']:+.3f} | {stats['far_cos']:+.3f} "
        f"| {stats['rank_corr']:+.3f} |"
    )


def main(argv=None) -> None:
    p = errors.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="workdirs of finished training runs")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    from vit_jax.tools import posemb_structure  # noqa: PLC0415

    with errors.boundary():
        measured, refs = {}, {}
        names = [os.path.basename(os.path.normpath(run)) for run in args.runs]
        if len(set(names)) < len(names):  # runs of two sweeps: name them by their paths
            names = [os.path.normpath(run) for run in args.runs]
        for run, name in zip(args.runs, names):
            grid, dim, found = posemb_structure.run_structure(run)
            if not found:
                print(f"{run}: no learned position table (a fixed scheme or none)", file=sys.stderr)
            for table, stats in found.items():
                measured[f"{name} {table}"] = stats
            for name, stats in posemb_structure.references(grid, dim).items():
                refs[f"{name}, {grid[0]}x{grid[1]}, D={dim}"] = stats
        print("| table | std | cos, neighbours | cos, far pairs | Spearman (cos, distance) |")
        print("|---|---|---|---|---|")
        for name, stats in {**measured, **refs}.items():
            print(_row(name, stats))
        if args.json:
            files.write_text(
                args.json, json.dumps({"runs": measured, "references": refs}, indent=1)
            )


if __name__ == "__main__":
    main()
