"""``--val-fraction`` / ``--val-source`` / ``--test-source`` of ``rmd-ray train`` and ``rmd-ray tune``.

The flag checks run before Ray starts (one line, exit 2). The end-to-end test trains one epoch of a
tiny model through the CLI and needs the shared ``ray_local`` instance.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.cli import build_parser, main
from rmd_ray.cli.train import DEFAULT_VAL_FRACTION, check_validation_args

SPACE = "tune_spaces/loss_family.yaml"


def test_defaults_carve_a_tenth_and_keep_run_as_it_was():
    train = build_parser().parse_args(["train", "--output", "o"])
    assert (train.val_source, train.val_fraction, train.split_seed, train.test_source) == (None, None, None, None)
    check_validation_args(train)
    assert (train.val_fraction, train.split_seed) == (DEFAULT_VAL_FRACTION, 0) == (0.1, 0)
    assert train.test_source == "fashion-mnist:test"  # the default training source's own test split
    tune = build_parser().parse_args(["tune", "--space", "s.yaml", "--output", "o"])
    assert tune.carve_validation and tune.val_source is None and tune.test_source is None
    check_validation_args(tune)
    assert (tune.val_fraction, tune.test_source) == (0.1, "fashion-mnist:test")
    # the main job keeps its data flow: it selects nothing, and its evaluation data is the test split
    run = build_parser().parse_args(["run"])
    assert not run.carve_validation and run.val_source == "fashion-mnist:test" and not hasattr(run, "val_fraction")


def test_train_difficulty_flags_become_the_configs_weight_source():
    from rmd_ray.cli.train import train_config
    from rmd_ray.core import WeightConfig

    args = build_parser().parse_args(["train", "--output", "o", "--difficulty", "shuffled_rmd", "--temperature", "0.5",
                                      "--normalization", "rank"])
    config = train_config(args, loss="proposed", hparams={})
    assert config.difficulty == "shuffled_rmd"
    assert config.weight_config == WeightConfig(temperature=0.5, normalization="rank")
    plain = train_config(build_parser().parse_args(["train", "--output", "o"]), loss="proposed", hparams={})
    assert plain.difficulty is None and plain.weight_config == WeightConfig()  # the weights as scored
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--output", "o", "--difficulty", "entropy"])


def test_explicit_val_source_is_used_as_given():
    # the command of earlier releases: another training source and its test file as --val-source
    args = build_parser().parse_args(["train", "--train-source", "parquet:/t.parquet", "--val-source",
                                      "parquet:/v.parquet", "--val-limit", "9", "--output", "o"])
    check_validation_args(args)
    assert (args.val_source, args.val_limit, args.val_fraction) == ("parquet:/v.parquet", 9, None)
    assert args.test_source == "none"  # Fashion-MNIST's test split would not match another source's classes
    args = build_parser().parse_args(["train", "--train-source", "parquet:/t.parquet", "--test-source",
                                      "parquet:/x.parquet", "--output", "o"])
    check_validation_args(args)
    assert (args.test_source, args.val_fraction) == ("parquet:/x.parquet", 0.1)


@pytest.mark.parametrize(("extra", "message"), [
    (["--val-fraction", "0.2", "--val-source", "fashion-mnist:test"],
     "--val-fraction and --val-source both given: --val-source is the validation data, --val-fraction carves it "
     "out of the training data; pass one of them"),
    (["--val-fraction", "1"], "--val-fraction must be in (0, 1) (the share of each class held out), got 1; e.g. 0.1"),
    (["--val-fraction", "0"], "--val-fraction must be in (0, 1)"),
    (["--val-fraction", "nan"], "--val-fraction must be in (0, 1)"),
    (["--val-limit", "10"], "--val-limit applies to --val-source only"),
    (["--split-seed", "3", "--val-source", "fashion-mnist:test"],
     "--split-seed seeds the split --val-fraction draws; with --val-source there is none"),
    (["--val-source", "nosuch"], "source 'nosuch' must look like SCHEME:ARGUMENT"),
], ids=["both", "one", "zero", "nan", "val-limit", "split-seed", "val-source-spec"])
@pytest.mark.parametrize("command", ["train", "tune"])
def test_flag_errors_are_one_line_before_ray_starts(tmp_path, capsys, command, extra, message):
    head = ["train", "--loss", "ce"] if command == "train" else ["tune", "--space", SPACE]
    assert main([*head, *extra, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rmd-ray {command}: error: ") and err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize("job", ["train", "tune"])
def test_job_smoke_settings_pass_the_flag_checks(job):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "jobs" / f"{job}.py"
    spec = importlib.util.spec_from_file_location(f"_job_{job}", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(path.parent))  # the job imports its sibling _submit
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    head = ["tune", "--space", SPACE] if job == "tune" else ["train"]
    args = build_parser().parse_args([*head, *module.SMOKE, "--output", "o"])
    check_validation_args(args)  # the smoke run carves its validation split: no --val-limit left over
    assert (args.val_source, args.val_fraction) == (None, 0.1)


def test_test_source_is_checked_before_ray_starts(tmp_path, capsys):
    assert main(["train", "--loss", "ce", "--test-source", "nosuch:x", "--output", str(tmp_path)]) == 2
    assert "rmd-ray train: error: unknown data source 'nosuch'" in capsys.readouterr().err
    assert main(["tune", "--space", SPACE, "--test-source", "nosuch:x", "--output", str(tmp_path)]) == 2
    assert "rmd-ray tune: error: unknown data source 'nosuch'" in capsys.readouterr().err


def _png(rng, label: int) -> bytes:
    pixels = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
    pixels[..., label] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(path, *, n: int, seed: int, prefix: str) -> str:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    table = pa.table({
        "id": [f"{prefix}{i:03d}" for i in range(n)],
        "label": pa.array(labels, pa.int64()),
        "image": [_png(rng, int(k)) for k in labels],
    }).replace_schema_metadata({b"classes": b'["r", "g", "b"]'})
    pq.write_table(table, path, row_group_size=16)
    return f"parquet:{path}"


@pytest.mark.ray
@pytest.mark.slow  # one Ray Train fit of one epoch
@pytest.mark.timeout(300)
def test_train_records_the_split_validates_on_it_and_predicts_test_once(ray_local, tmp_path, capsys):
    from rmd_ray.io.parts import read_table
    from rmd_ray.io.storage import read_parquet_metadata

    train_spec = _images(tmp_path / "train.parquet", n=48, seed=0, prefix="tr")
    test_spec = _images(tmp_path / "test.parquet", n=18, seed=1, prefix="te")
    out = tmp_path / "out"
    assert main(["train", "--train-source", train_spec, "--test-source", test_spec, "--val-fraction", "0.25",
                 "--split-seed", "4", "--loss", "ce", "--epochs", "1", "--width", "0.0625", "--train-batch-size", "8",
                 "--cpus-per-worker", "0.5", "--run-name", "r", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    recorded = pq.read_table(out / "r" / "val_split.parquet")
    ids = recorded.column("id").to_pylist()
    # 0.25 of each class of 16: 4 per class, recorded with their labels
    assert len(ids) == 12 and np.bincount(recorded.column("label").to_numpy()).tolist() == [4, 4, 4]
    assert all(i.startswith("tr") for i in ids)
    meta = read_parquet_metadata(str(out / "r" / "val_split.parquet"))
    assert (meta["fraction"], meta["seed"], meta["n_train"], meta["n_val"]) == (0.25, 4, 36, 12)
    assert f"validation split: 12 of 48 training rows (0.25 of each class, seed 4) -> {out / 'r'}" in printed
    # validation predictions are exactly the recorded ids; the test file is predicted once, whole
    val_pred = read_table(str(out / "r" / "predictions_val.parquet"), columns=["id"]).column("id").to_pylist()
    assert sorted(val_pred) == sorted(ids)
    test_pred = read_table(str(out / "r" / "predictions_test.parquet"), columns=["id"]).column("id").to_pylist()
    assert sorted(test_pred) == [f"te{i:03d}" for i in range(18)]


@pytest.mark.ray
@pytest.mark.slow  # one Tune trial of one epoch
@pytest.mark.timeout(600)
def test_tune_ranks_on_the_split_and_tests_the_front_once(ray_local, tmp_path, capsys):
    from rmd_ray.io.parts import read_table_metadata as read_metadata

    space = tmp_path / "focal.yaml"
    space.write_text("name: focal\nobjectives: {acc: max}\nnum_samples: 1\ngrace_period: 1\n"
                     "search:\n  gamma: {type: uniform, low: 0.5, high: 4.0}\nfixed: {loss: focal, epochs: 1}\n")
    train_spec = _images(tmp_path / "train.parquet", n=48, seed=0, prefix="tr")
    test_spec = _images(tmp_path / "test.parquet", n=18, seed=1, prefix="te")
    out = tmp_path / "out"
    assert main(["tune", "--space", str(space), "--train-source", train_spec, "--test-source", test_spec,
                 "--width", "0.0625", "--train-batch-size", "8", "--cpus-per-worker", "0.5",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    recorded = pq.read_table(out / "val_split.parquet")
    # default fraction 0.1 of each class of 16: round(1.6) = 2 per class
    assert np.bincount(recorded.column("label").to_numpy()).tolist() == [2, 2, 2]
    assert "validation split: 6 of 48 training rows (0.1 of each class, seed 0)" in printed
    assert "ranked on parquet" in printed and "validation part (0.1 stratified, seed 0)" in printed
    rows = pq.read_table(out / "tune_results.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["pareto"] and 0 <= rows[0]["test_acc"] <= 1
    meta = read_metadata(str(out / "tune_results.parquet"))
    assert meta["test"] == {"trials_predicted": [rows[0]["trial"]], "after_selection": True}
    assert "validation part" in meta["val"]
    assert f"test split {test_spec}: predicted once, after the search, by the Pareto-front trials" in printed
    assert f"{rows[0]['trial']:<12} {100 * rows[0]['test_acc']:>7.2f}" in printed  # the test table
