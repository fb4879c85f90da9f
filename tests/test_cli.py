"""The rmd-ray command line: argument handling and user errors (one clear line, exit code 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rmd_ray.cli import build_parser, main
from rmd_ray.cli.common import number, parse_pairs
from rmd_ray.io.storage import write_parquet_atomic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from _submit import build_argv  # noqa: E402


def test_pairs_and_numbers():
    assert parse_pairs(["a=1", "b=x=y"], what="--p") == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="--p 'oops' must look like NAME=VALUE"):
        parse_pairs(["oops"], what="--p")
    assert [number(t) for t in ("3", "0.25", "true", "relu")] == [3, 0.25, True, "relu"]


def test_defaults_of_the_main_job():
    args = build_parser().parse_args(["run"])
    assert (args.source, args.encoder, args.image_size, args.limit) == ("fashion-mnist:train", "efficientnet_lite0",
                                                                         32, 10_000)
    assert (args.epochs, args.default_width, args.val_limit, args.alpha, args.shrinkage) == (6, 0.125, 5_000, 0.3,
                                                                                           "ridge")
    assert args.width is None  # resolved when the config is built: the default above, or 1 for timm:/torchvision:
    assert (args.corruption_limit, args.severities, args.preset, args.proxy_groups) == (1_000, "1,2,3,4,5", "auto", 5)


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


def test_tune_scores_are_optional_and_an_unread_key_is_one_line(tmp_path, capsys):
    # a space whose losses read no weights runs without --scores
    assert build_parser().parse_args(["tune", "--space", "s.yaml", "--output", "o"]).scores is None
    space = tmp_path / "unread.yaml"
    space.write_text("name: t\nobjectives: {acc: max}\nsearch:\n  beta: {type: uniform, low: 0.0, high: 0.5}\n"
                     "fixed: {loss: focal}\n")
    assert main(["tune", "--space", str(space), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        "unread.yaml.search.beta: no loss in this space reads beta (losses: focal); beta is read by entropy_reg" in err
    )


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


def _folder_with_checkpoint(tmp_path):
    """An ImageFolder of 18 PNGs, a checkpoint with its normalisation, predictions and validation scores."""
    import torch
    from PIL import Image

    from rmd_ray.nn.engine import save_checkpoint
    from rmd_ray.nn.models import build_model

    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    ids, labels = [], []
    for k, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
            ids.append(f"{name}/{i}.png")
            labels.append(k)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, cifar_stem=True, width=0.0625)
    ckpt = save_checkpoint(tmp_path / "ckpt" / "model.pt", model=model, optimizer=None, scheduler=None, epoch=1,
                           extra={"mean": [0.5] * 3, "std": [0.25] * 3, "image_size": None, "preset": "cifar",
                                  "input_side": 12})
    logits = rng.normal(size=(18, 3)).astype(np.float32)
    pred = write_parquet_atomic(pa.table({"id": ids, "label": labels,
                                          "logits": pa.array(list(logits), pa.list_(pa.float32()))}),
                                tmp_path / "pred.parquet")
    scores = write_parquet_atomic(pa.table({"id": ids, "label": labels, "rmd": rng.normal(size=18)}),
                                  tmp_path / "val_scores.parquet")
    return root, ckpt, pred, scores


def test_evaluate_writes_corruption_and_proxy_results_that_report_draws(ray_local, tmp_path, capsys):
    import json

    from rmd_ray.data.readers import read_source
    from rmd_ray.evaluation.proxy import proxy_test_from_files
    from rmd_ray.evaluation.shift import checkpoint_corruption_eval

    root, ckpt, pred, scores = _folder_with_checkpoint(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--predictions", f"m={pred}", "--checkpoint", f"m={ckpt.parent}",
                 "--corruption-source", f"folder:{root}", "--corruptions", "contrast,pixelate",
                 "--severities", "2,4", "--proxy-scores", str(scores), "--proxy-groups", "3",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    shift = json.loads((out / "corruption.json").read_text())
    corrupted = [r for r in shift["m"] if r["severity"] > 0]
    assert len(corrupted) == 4
    mean_acc = 100 * np.mean([r["acc"] for r in corrupted])
    mean_ece = 100 * np.mean([r["ece_mass"] for r in corrupted])
    assert f"corruption m: mean ACC {mean_acc:.2f}%, mean ECE mass {mean_ece:.2f}%" in printed
    expected = checkpoint_corruption_eval(ckpt, read_source(f"folder:{root}"), corruptions=["contrast", "pixelate"],
                                          severities=[2, 4])
    # generated corruptions run in Ray (rmd_ray.distributed.prediction.shift_eval): the in-process rows, plus n
    assert [(r["corruption"], r["severity"], r["n"]) for r in shift["m"]] == [
        (e["corruption"], e["severity"], 18) for e in expected
    ]
    for got, want in zip(shift["m"], expected):
        assert got["acc"] == want["acc"]
        assert got["ece_mass"] == pytest.approx(want["ece_mass"], abs=1e-9)
        assert got["ece_width"] == pytest.approx(want["ece_width"], abs=1e-9)
    proxy = json.loads((out / "proxy.json").read_text())
    expected_proxy = proxy_test_from_files(scores, pred, n_groups=3)
    assert proxy == {"m": json.loads(json.dumps(expected_proxy.to_dict()))}
    rates = " ".join(f"{100 * e:.1f}%" for e in expected_proxy.error_rate)
    assert f"proxy test m: error rate hardest -> easiest {rates}" in printed

    assert main(["report", "--predictions", f"m={pred}", "--corruption", str(out / "corruption.json"),
                 "--proxy", str(out / "proxy.json"), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    for section in ("corruption", "proxy"):
        body = page.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "<img" in body, section


def test_evaluate_and_report_user_errors(tmp_path, capsys):
    root, ckpt, pred, scores = _folder_with_checkpoint(tmp_path)
    cases = [
        (["evaluate", "--predictions", f"m={pred}", "--checkpoint", f"m={ckpt}", "--output", str(tmp_path)],
         "--checkpoint needs --corruption-source .* or --ood-source NAME=SOURCE"),
        (["evaluate", "--predictions", f"m={pred}", "--ood-source", "digits=sklearn-digits:", "--output",
          str(tmp_path)], r"--ood-source needs --checkpoint NAME=\.\.\. for each --predictions NAME=\.\.\."),
        (["evaluate", "--predictions", f"m={pred}", "--proxy-scores", str(scores)],
         "pass --output DIR"),
        (["evaluate", "--predictions", f"m={pred}", "--checkpoint", f"m={ckpt}", "--corruption-source",
          f"folder:{root}", "--severities", "1,x", "--output", str(tmp_path)],
         "--severities must be comma-separated integers, got '1,x'"),
        (["report", "--predictions", f"m={pred}", "--corruption", str(tmp_path / "none.json"), "--output",
          str(tmp_path)], "--corruption file .* not found; write it with `rmd-ray evaluate --output DIR`"),
        (["report", "--predictions", f"m={pred}", "--proxy", str(pred), "--output", str(tmp_path)],
         "--proxy file .* is not JSON"),
    ]
    (tmp_path / "list.json").write_text("[1, 2]")
    cases.append((["report", "--predictions", f"m={pred}", "--proxy", str(tmp_path / "list.json"), "--output",
                   str(tmp_path)], r"must hold an object \{run name: proxy result\}"))
    import re

    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.search(message, err), (message, err)
        assert err.count("\n") == 1


def test_evaluate_use_gpu_reaches_the_prediction_actors(tmp_path, monkeypatch):
    """``--use-gpu`` asks for one GPU per prediction actor in the corruption shift and the OOD sets."""
    import rmd_ray.cli.console as console
    import rmd_ray.distributed.prediction.ood as ood
    import rmd_ray.distributed.prediction.shift_eval as shift

    seen = {}

    def fake_shift(*args, **kwargs):
        seen["shift"] = kwargs["use_gpu"]
        return [{"corruption": "none", "severity": 0, "acc": 0.5, "ece_mass": 0.1},
                {"corruption": "contrast", "severity": 1, "acc": 0.5, "ece_mass": 0.1}]

    def fake_ood(*args, **kwargs):
        seen["ood"] = kwargs["use_gpu"]
        report = {"auroc": 0.5, "fpr_at_95_tpr": 0.5}
        return {"d": {"n_out": 2, "maxlogit": report, "entropy": report, "msp": report}}

    monkeypatch.setattr(console, "start_ray", lambda args: None)
    monkeypatch.setattr(shift, "shift_eval", fake_shift)
    monkeypatch.setattr(ood, "ood_eval", fake_ood)
    monkeypatch.setattr("rmd_ray.distributed.sources.plan.open_source", lambda spec, limit=None: spec)
    pred = tmp_path / "p.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "label": [0, 1], "logits": [[2.0, 0.0], [0.0, 1.0]]}), pred)
    argv = ["evaluate", "--predictions", f"m={pred}", "--checkpoint", f"m={tmp_path}", "--corruption-source",
            "sklearn-digits:", "--ood-source", "d=sklearn-digits:", "--output", str(tmp_path / "o")]
    assert main([*argv, "--use-gpu"]) == 0
    assert seen == {"shift": True, "ood": True}
    seen.clear()
    assert main(argv) == 0
    assert seen == {"shift": False, "ood": False}
