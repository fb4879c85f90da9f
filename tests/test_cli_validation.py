"""``--val-fraction`` / ``--val-source`` / ``--test-source`` of ``rmd-ray train`` and ``rmd-ray tune``.

The flag checks run before Ray starts (one line, exit 2). The end-to-end test trains one epoch of a
tiny model through the CLI and needs the shared ``ray_local`` instance.
"""

from __future__ import annotations

import pytest

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


def test_train_fault_flags_become_the_configs_elastic_range_and_wait(tmp_path, capsys):
    from rmd_ray.cli.train import train_config

    args = build_parser().parse_args(["train", "--output", "o", "--num-workers", "4", "--min-workers", "2",
                                      "--placement-timeout", "90"])
    config = train_config(args, loss="ce", hparams={})
    assert (config.num_workers, config.min_workers, config.placement_timeout_s) == (4, 2, 90.0)
    plain = train_config(build_parser().parse_args(["train", "--output", "o"]), loss="ce", hparams={})
    assert (plain.min_workers, plain.placement_timeout_s) == (None, 600.0)  # a fixed group, a 10-minute wait
    assert not hasattr(build_parser().parse_args(["run"]), "min_workers")  # `rmd-ray train` only
    # a range the group cannot take is one line, before Ray starts
    assert main(["train", "--loss", "ce", "--num-workers", "2", "--min-workers", "3", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TrainConfig.min_workers must be None (always num_workers) or an int in [1, " \
        "num_workers=2] (elastic training), got 3" in err


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
