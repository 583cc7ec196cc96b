"""vit_jax/tools/posemb_structure.py and its script: similarity-against-distance of position tables."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import scipy.stats

from tests.helpers.paths import ROOT
from vit_jax.models import posemb
from vit_jax.tools import posemb_structure as ps
from vit_jax.train import checkpoint

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_run_v0")


def test_distances_and_spearman_against_scipy():
    d = ps.patch_distances((2, 3))
    # patch 0 is (0, 0), patch 5 is (1, 2), patch 4 is (1, 1)
    assert d[0, 5] == pytest.approx(np.sqrt(5)) and d[0, 4] == pytest.approx(np.sqrt(2))
    assert d[1, 4] == 1.0 and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)  # a has ties
    assert ps.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


def test_structure_by_hand():
    # a 1x3 grid: unit vectors at 0, 90 and 180 degrees
    table = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    s = ps.structure(table, (1, 3))
    assert s["neighbour_cos"] == pytest.approx(0.0)  # pairs (0,1) and (1,2): both orthogonal
    assert s["far_cos"] == pytest.approx(-1.0 / 3.0)  # d >= 1: (0,1) 0, (1,2) 0, (0,2) -1
    # similarities (0, -1, 0) against distances (1, 2, 1): perfectly anti-ordered ranks
    assert s["rank_corr"] == pytest.approx(-1.0)
    assert s["std"] == pytest.approx(np.std(table))


def test_fixed_tables_are_structured_and_noise_is_not():
    grid, dim = (8, 8), 128
    sincos = ps.structure(posemb.sincos_2d(*grid, dim), grid)
    noise = ps.structure(np.random.default_rng(1).normal(0, 0.02, (64, dim)), grid)
    assert sincos["rank_corr"] < -0.85 and sincos["neighbour_cos"] > 0.95
    assert abs(noise["rank_corr"]) < 0.05 and abs(noise["neighbour_cos"]) < 0.05
    refs = ps.references(grid, dim)
    assert refs["sincos2d (fixed)"] == sincos
    # row + col shares a vector along each row/column: neighbours start at cos ~ 1/2
    assert 0.4 < refs["row+col as initialised, N(0, 0.02) each"]["neighbour_cos"] < 0.6


def test_tables_read_learn_and_learn2d():
    rng = np.random.default_rng(2)
    pos = rng.normal(size=(1, 1 + 6, 4))  # a CLS row, then 2x3 patches
    row, col = rng.normal(size=(2, 4)), rng.normal(size=(3, 4))
    params = {"Transformer": {"posembed_input": {"pos_embedding": pos, "row": row, "col": col}}}
    found = ps.tables(params, (2, 3))
    np.testing.assert_array_equal(found["pos_embedding"], pos[0, 1:])
    np.testing.assert_allclose(found["row+col"][1 * 3 + 2], row[1] + col[2])
    assert ps.tables({"Transformer": {}}, (2, 3)) == {}
    with pytest.raises(ValueError, match="not the grid"):
        ps.tables(params, (3, 2))


def test_run_structure_on_a_saved_run():
    grid, dim, found = ps.run_structure(FIXTURE)  # a run saved by an older main: Ti/4 at 8 px
    assert grid == (2, 2) and dim == 16
    table = checkpoint.restore(os.path.join(FIXTURE, "checkpoints"))["params"]["Transformer"][
        "posembed_input"
    ]["pos_embedding"][0, 1:]  # token pooling: one CLS row first
    assert found == {"pos_embedding": ps.structure(table, grid)}


def test_script_prints_table_and_json(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import posemb_structure as script

    out = tmp_path / "s.json"
    script.main([FIXTURE, f"--json={out}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| table |") and lines[2].startswith("| tiny_run_v0 pos_embedding |")
    saved = json.loads(out.read_text())
    assert set(saved["runs"]) == {"tiny_run_v0 pos_embedding"}
    assert "sincos2d (fixed), 2x2, D=16" in saved["references"]
    copy = tmp_path / "other" / "tiny_run_v0"  # the same run name in another sweep
    shutil.copytree(FIXTURE, copy)
    script.main([FIXTURE, str(copy)])
    rows = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()[2:4]]
    assert rows == [f"| {os.path.normpath(FIXTURE)} pos_embedding", f"| {copy} pos_embedding"]
    with pytest.raises(SystemExit) as e:
        script.main([str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} has no config.json; give the workdir of a training run"]
