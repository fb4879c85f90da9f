"""The rmd-ray command line: argument handling and user errors (one clear line, exit code 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rmd_ray.cli import _number, _parse_pairs, build_parser, main
from rmd_ray.data.io import write_parquet_atomic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from _submit import build_argv  # noqa: E402


def test_pairs_and_numbers():
    assert _parse_pairs(["a=1", "b=x=y"], what="--p") == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="--p 'oops' must look like NAME=VALUE"):
        _parse_pairs(["oops"], what="--p")
    assert [_number(t) for t in ("3", "0.25", "true", "relu")] == [3, 0.25, True, "relu"]


def test_defaults_of_the_main_job():
    args = build_parser().parse_args(["run"])
    assert (args.source, args.encoder, args.image_size, args.limit) == ("fashion-mnist:train", "efficientnet_lite0",
                                                                         32, 10_000)
    assert (args.epochs, args.width, args.val_limit, args.alpha, args.shrinkage) == (6, 0.125, 5_000, 0.3, "ridge")


def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["score", "--source", "nosuch:thing", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rmd-ray score: error: unknown data source 'nosuch'") and err.count("\n") == 1
    assert main(["train", "--loss", "proposed", "--loss-param", "alpha=-1", "--output", str(tmp_path)]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["train", "--loss", "proposed", "--output", str(tmp_path)]) == 2
    assert "needs difficulty weights: pass --scores" in capsys.readouterr().err
    assert main(["tune", "--space", str(tmp_path / "none.yaml"), "--scores", "a=b", "--output", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_evaluate_prints_the_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 50)
    path = tmp_path / "p.parquet"
    write_parquet_atomic(pa.table({"id": [str(i) for i in range(50)], "label": labels,
                                   "logits": pa.array(list(logits), pa.list_(pa.float32()))}), path)
    assert main(["evaluate", "--predictions", f"mine={path}", "--output", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    acc = 100 * float((logits.argmax(1) == labels).mean())
    assert out.splitlines()[2].split()[:2] == ["mine", f"{acc:.2f}"]
    assert (tmp_path / "e" / "metrics.json").is_file()


def test_job_wrappers_join_the_cluster_and_add_smoke_settings():
    assert build_argv("score", ["--smoke-test"], smoke=["--limit", "256"], default_output="runs/s") == [
        "score", "--address", "auto", "--output", "runs/s", "--limit", "256"]
    assert build_argv("train", ["--address", "ray://h:10001", "--output", "o"], smoke=[], default_output="x") == [
        "train", "--address", "ray://h:10001", "--output", "o"]
    assert build_argv("evaluate", ["--predictions", "a=b"], smoke=[], default_output=None) == [
        "evaluate", "--predictions", "a=b"]
