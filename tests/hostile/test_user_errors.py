"""One line per user error: each bad input ends in exit code 2 and one stderr line that names the input and
the fix, with no traceback (``--verbose`` adds one). Every case fails before Ray starts."""

from __future__ import annotations

import importlib
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmd_ray.cli import main


def _one_line(capsys, command: str, pattern: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"rmd-ray {command}: error: "), err
    assert re.search(pattern, err), err
    return err


def test_output_that_is_an_existing_file(tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("x")
    assert main(["train", "--loss", "ce", "--output", str(file)]) == 2
    _one_line(capsys, "train", rf"--output '{re.escape(str(file))}' is an existing file, not a folder: pass a folder")
    assert main(["report", "--predictions", "a=p.parquet", "--output", str(file / "sub")]) == 2
    _one_line(capsys, "report", rf"--output '.*sub' is under '{re.escape(str(file))}', which is a file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to a 0o500 folder anyway")
def test_output_that_is_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--loss", "ce", "--output", str(locked / "run")]) == 2
        _one_line(capsys, "train", r"--output '.*run' \(its parent '.*locked'\) is not writable by this user")
    finally:
        locked.chmod(0o700)


def test_a_permission_error_inside_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    cli_main = importlib.import_module("rmd_ray.cli.main")

    def denied(args):
        raise PermissionError(13, "Permission denied", "/x/report.html")

    monkeypatch.setattr(cli_main, "cmd_report", denied)
    assert main(["report", "--predictions", "a=p.parquet", "--output", str(tmp_path)]) == 2
    _one_line(capsys, "report", r"Permission denied: '/x/report.html'; check the permissions of that path")
    assert main(["--verbose", "report", "--predictions", "a=p.parquet", "--output", str(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err  # --verbose shows where it came from


def test_loss_param_that_is_not_a_number(tmp_path, capsys):
    assert main(["train", "--loss-param", "alpha=abc", "--output", str(tmp_path)]) == 2
    _one_line(capsys, "train", r"--loss-param alpha=abc: alpha must be a number in \[0, inf\), got 'abc'$")


@pytest.mark.parametrize("content", [b"loss: [ce, focal\nlr: 0.1\n", bytes(range(256)) * 4], ids=["not-yaml", "binary"])
def test_tune_space_that_is_not_yaml(tmp_path, capsys, content):
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    assert main(["tune", "--space", str(space), "--output", str(tmp_path / "out")]) == 2
    err = _one_line(capsys, "tune", rf"search space file '{re.escape(str(space))}' is not (valid YAML|text)")
    assert "pass a YAML file" in err or "see tune_spaces/*.yaml" in err


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
def test_predictions_file_that_is_not_parquet(tmp_path, capsys, cut):
    path = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(500)], "label": list(range(500))}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "truncated" else b"PAR1 but not really" * 10)
    assert main(["evaluate", "--predictions", f"run={path}"]) == 2
    _one_line(capsys, "evaluate", rf"'{re.escape(str(path))}' is not a readable Parquet file .*write it again")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_checkpoint_for_an_encoder(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    torch.save({"model": _Payload(marker)}, path)
    assert main(["score", "--encoder", "tiny_cnn", "--checkpoint", str(path), "--output", str(tmp_path / "o")]) == 2
    err = _one_line(capsys, "score", rf"checkpoint '{re.escape(str(path))}' holds pickled Python objects")
    assert "weights-only checkpoints" in err and "torch.save(model.state_dict(), PATH)" in err
    assert "weights_only=False" not in err and not marker.exists()


def test_pickled_and_corrupt_checkpoints_for_a_model(tmp_path):
    torch = pytest.importorskip("torch")
    from rmd_ray.nn.engine import model_from_checkpoint

    path = tmp_path / "model.pt"
    torch.save({"model": _Payload(tmp_path / "pwned")}, path)
    with pytest.raises(ValueError, match=r"holds pickled Python objects \(.*posix.system.*\); rmd-ray never") as info:
        model_from_checkpoint(path)
    assert "\n" not in str(info.value)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"is not a readable torch file .*write it again with torch.save") as info:
        model_from_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_missing_predictions_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["evaluate", "--predictions", f"run={missing}"]) == 2
    _one_line(capsys, "evaluate", rf"predictions file '{re.escape(str(missing))}' does not exist; check the path")


@pytest.mark.parametrize("spec, output", [
    ("parquet:{d}", "{d}/run"),
    ("folder:{d}", "{d}/run"),
    ("parquet:{d}/*.parquet", "{d}/scores"),
    ("parquet:s3://bucket/train/?endpoint_override=http://127.0.0.1:9", "s3://bucket/train/run"),
])
def test_an_output_folder_inside_a_listed_source(tmp_path, capsys, spec, output):
    spec, output = spec.format(d=tmp_path), output.format(d=tmp_path)
    assert main(["score", "--source", spec, "--output", output]) == 2
    _one_line(capsys, "score", r"--output .* is inside --source .*: a later run would read the outputs as data; "
                               r"pass an output folder outside the source")


def test_an_output_beside_a_single_parquet_file_is_fine(tmp_path):
    from rmd_ray.cli.common import check_output_outside_sources

    (tmp_path / "train.parquet").write_bytes(b"")
    check_output_outside_sources(str(tmp_path / "run"), {"--source": f"parquet:{tmp_path}/train.parquet"})
    check_output_outside_sources(str(tmp_path / "run"), {"--source": "fashion-mnist:train"})
    check_output_outside_sources("s3://b/run", {"--train-source": f"parquet:{tmp_path}"})  # another store
    with pytest.raises(ValueError, match="is inside --val-source"):
        check_output_outside_sources(str(tmp_path), {"--val-source": f"folder:{tmp_path}"})
