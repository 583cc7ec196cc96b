"""scripts/bench_scan.py: one row per depth and mode, the same model in every mode."""

import json
import os
import sys

from tests.helpers.paths import ROOT


def test_bench_scan_rows(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import bench_scan

    out = tmp_path / "scan.json"
    argv = ["--depths=2", "--modes=unrolled,scan", "--width=16", "--steps=1", f"--json={out}"]
    rows = bench_scan.main(argv)
    assert [(r["depth"], r["mode"]) for r in rows] == [(2, "unrolled"), (2, "scan")]
    assert rows[0]["params"] == rows[1]["params"] > 0
    assert all(r["compile_s"] > 0 and r["step_ms"] > 0 and r["temp_mb"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
