"""Has a learned position table learned the image's 2-D layout? (ViT paper, Fig. 7)

A table starts as N(0, 0.02) noise: the cosine similarity of two patches' embeddings is then
unrelated to how far apart the patches are. A table that encodes the 2-D grid makes near patches
similar and far ones not. `structure` measures that on the patch rows of a table:

- `neighbour_cos`: mean cosine similarity of the 4-neighbours (patches at distance 1);
- `far_cos`: mean cosine similarity of the pairs at distance >= half the grid's diagonal;
- `rank_corr`: Spearman's rank correlation between similarity and Euclidean patch distance over
  all pairs — about 0 for noise, strongly negative for a 2-D table (sincos2d at 8×8, D=128: -0.8).

`tables(params, grid)` reads the learned tables of a model's parameters (`learn`: the patch rows of
`pos_embedding`; `learn2d`: row[i] + col[j]); `python scripts/posemb_structure.py RUN_DIR...` prints
them for finished runs, next to the sin-cos and the N(0, 0.02)-initial reference.
"""

from typing import Dict, Mapping, Tuple

import numpy as np

Grid = Tuple[int, int]


def patch_distances(grid: Grid) -> np.ndarray:
    """Euclidean distance `[N, N]` between the patches of a row-major h×w grid."""
    ys, xs = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    return np.hypot(ys[:, None] - ys[None], xs[:, None] - xs[None])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long vectors (ties get their mean rank)."""
    import scipy.stats  # noqa: PLC0415  (a dependency of jax)

    return float(scipy.stats.spearmanr(a, b).statistic)


def structure(table: np.ndarray, grid: Grid) -> Dict[str, float]:
    """Similarity-against-distance statistics of a patch table `[h·w, D]` (row-major)."""
    table = np.asarray(table, np.float64).reshape(grid[0] * grid[1], -1)
    unit = table / np.linalg.norm(table, axis=-1, keepdims=True)
    cos = unit @ unit.T
    dist = patch_distances(grid)
    pairs = np.triu_indices(len(table), k=1)
    far = dist >= np.hypot(grid[0] - 1, grid[1] - 1) / 2
    return dict(
        neighbour_cos=float(cos[np.isclose(dist, 1.0)].mean()),
        far_cos=float(cos[far].mean()),
        rank_corr=spearman(cos[pairs], dist[pairs]),
        std=float(table.std()),
    )


def tables(params: Mapping, grid: Grid) -> Dict[str, np.ndarray]:
    """The learned patch tables `[h·w, D]` in `params` (a model's, or a state's "params"), by name."""
    n = grid[0] * grid[1]
    found = dict(params.get("Transformer", {}).get("posembed_input", {}))
    out = {}
    if "pos_embedding" in found:  # [1, prefix + n, D]: the patch rows are the last n
        out["pos_embedding"] = np.asarray(found["pos_embedding"])[0, -n:]
    if "row" in found and "col" in found:
        row, col = np.asarray(found["row"]), np.asarray(found["col"])
        if (len(row), len(col)) != tuple(grid):
            raise ValueError(f"row/col tables are {len(row)}x{len(col)}, not the grid {grid}")
        out["row+col"] = (row[:, None] + col[None]).reshape(n, -1)
    return out


def references(grid: Grid, dim: int, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """`structure` of the fixed tables and of a learned table as initialised, for comparison."""
    from vit_jax.models import posemb  # noqa: PLC0415

    n = grid[0] * grid[1]
    rng = np.random.default_rng(seed)
    init = rng.normal(0.0, 0.02, (n, dim))
    row, col = rng.normal(0.0, 0.02, (grid[0], dim)), rng.normal(0.0, 0.02, (grid[1], dim))
    return {
        "sincos2d (fixed)": structure(posemb.sincos_2d(*grid, dim), grid),
        "sincos1d (fixed)": structure(posemb.sincos_1d(n, dim), grid),
        "pos_embedding as initialised, N(0, 0.02)": structure(init, grid),
        "row+col as initialised, N(0, 0.02) each": structure(row[:, None] + col[None], grid),
    }


def run_structure(run_dir: str) -> Tuple[Grid, int, Dict[str, Dict[str, float]]]:
    """(grid, width, {table name: structure}) of the learned tables in a run's latest checkpoint."""
    import json  # noqa: PLC0415

    from vit_jax.common import files  # noqa: PLC0415
    from vit_jax.train import checkpoint  # noqa: PLC0415

    config_path = files.join(run_dir, "config.json")
    if not files.exists(config_path):
        raise ValueError(f"{run_dir} has no config.json; give the workdir of a training run")
    config = checkpoint.effective(json.loads(files.read_text(config_path)))  # sizes from variants
    size, patch = config["image_size"], config["model.patch_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    grid = (size[0] // patch[0], size[1] // patch[1])
    state = checkpoint.restore(files.join(run_dir, "checkpoints"))
    found = tables(state["params"], grid)
    return grid, config["model.hidden_size"], {k: structure(t, grid) for k, t in found.items()}
