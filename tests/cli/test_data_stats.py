"""The data_stats command on the offline digits set, and its one-line errors."""

import json

from vit_jax import data_stats


def test_prints_counts_shape_and_speed(capsys):
    argv = ["--dataset=digits", "--split=test", "--image_size=16", "--steps=2", "--no_flip"]
    assert data_stats.main(argv) == 0
    out = capsys.readouterr().out
    assert "examples     360" in out
    assert "     3  3                              37" in out  # Class "3": 37 test examples.
    assert "image shape  (16, 16, 3)" in out
    assert "images/s" in out


def test_json_output(capsys):
    argv = ["--dataset=digits", "--split=train[:10%]", "--image_size=8", "--steps=0", "--json"]
    assert data_stats.main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_examples"] == 144 and sum(stats["classes"].values()) == 144
    assert stats["image_shape"] == [8, 8, 3] and "train_pipeline" not in stats


def test_data_errors_print_one_line_without_traceback(capsys):
    assert data_stats.main(["--dataset=folder:/no/such/dir"]) == 2
    err = capsys.readouterr().err
    assert err == "error: dataset folder not found: /no/such/dir (from 'folder:/no/such/dir')\n"
