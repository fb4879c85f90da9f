"""Scoring survives a killed driver (resume) and a lost node; training survives a lost node (multi-node on one machine).

Each scenario runs in its own processes with its own Ray cluster, under a timeout, and is compared
row by row with an uninterrupted run: no row lost, none doubled, the same scores. A training node lost
with no spare capacity either stops the run in bounded time, naming the checkpoint a rerun continues
from, or (elastic, ``min_workers``) goes on with the worker left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scoring_reference import parquet_dir, reference_scores

from rmd_ray.core import CovarianceConfig
from rmd_ray.io.parts import read_table

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]
HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.pop("RAY_ADDRESS", None)  # never join the test session's own instance
    return env


def _score_argv(source: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from rmd_ray.cli import main; sys.exit(main(sys.argv[1:]))",
            "score", "--source", source, "--output", str(output), "--encoder", "efficientnet_lite0",
            "--image-size", "32", "--num-actors", "1", "--batch-size", "8", "--shard-rows", "16", *extra]


def _records(shards: Path) -> int:
    """Completion records written (a leading dot marks an atomic write still in progress)."""
    return len([p for p in shards.glob("*.json") if not p.name.startswith(".")]) if shards.is_dir() else 0


def _scores(path: Path) -> dict[str, tuple]:
    table = read_table(path / "scores.parquet")
    return {r["id"]: (r["label"], r["md"], r["rmd"], r["weight"]) for r in table.to_pylist()}


def _assert_equals_the_core_in_this_process(root: Path, output: Path) -> dict[str, float]:
    """What an uninterrupted run gives, without running one (scoring_reference.reference_scores): every
    source row's features written once and equal to the encoder here, the scores equal to the core here.
    Returns id -> rmd."""
    rows, md, rmd = reference_scores(root, output / "features.parquet", encoder="efficientnet_lite0",
                                     image_size=32, covariance=CovarianceConfig(shrinkage="ridge"))
    got = _scores(output)
    assert sorted(got) == sorted(r["id"] for r in rows)
    np.testing.assert_allclose([got[r["id"]][1:3] for r in rows], np.stack([md, rmd], axis=1),
                               rtol=0, atol=1e-6 * np.abs(md).max())
    return {r["id"]: got[r["id"]][2] for r in rows}


def test_a_killed_scoring_run_resumes_to_the_same_scores(tmp_path):
    root = parquet_dir(tmp_path / "pq", files=4, rows=96, row_group=16)  # 24 shards of 16 rows
    source = f"parquet:{root}"
    out = tmp_path / "killed"
    shards = out / "features.parquet" / "_shards"
    proc = subprocess.Popen(_score_argv(source, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _records(shards) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = _records(shards)
    assert 3 <= done_at_kill < 24
    assert not (out / "scores.parquet").exists()  # nothing half-published

    # the same command again: reuses every finished shard and ends with every row exactly once, the
    # killed attempt's unfinished rows dropped, and the scores an uninterrupted run gives
    resumed = subprocess.run(_score_argv(source, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    reused = int(resumed.stdout.split(" shards reused")[0].rsplit(", ", 1)[-1])
    assert reused >= done_at_kill
    assert len(_assert_equals_the_core_in_this_process(root, out)) == 384

    # another configuration over the same features directory is refused, and --fresh starts over
    other = subprocess.run(_score_argv(source, out, "--n-views", "2"), env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert other.returncode == 2 and "holds features of another run" in other.stderr and "--fresh" in other.stderr


def test_multi_node_scoring_uses_both_nodes_and_survives_losing_one(tmp_path):
    """A 3-node cluster (a head with no CPUs, two worker nodes): once an encoder actor runs on each worker node,
    one node is killed; the run ends with every row once and the scores an uninterrupted run gives."""
    root = parquet_dir(tmp_path / "pq", files=4, rows=96, row_group=16)
    done = subprocess.run(
        [sys.executable, str(HERE / "_multinode_scoring.py"), f"parquet:{root}", str(tmp_path / "lost"),
         "efficientnet_lite0", "32"],
        env=_env(), capture_output=True, text=True, timeout=360,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Ray's raylet may print its own warnings to stdout after the result: take the result line
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"worker_nodes"')]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    removed = result["removed"]
    assert removed["actor_nodes"] == sorted(result["worker_nodes"])  # encoder actors on both nodes
    assert removed["node"] in result["worker_nodes"] and removed["records_at_removal"] >= 2
    assert result["rows_in"] == result["rows_scored"] == 384
    assert len(_assert_equals_the_core_in_this_process(root, tmp_path / "lost")) == 384


@pytest.mark.timeout(900)  # ~2-3 min alone; node-loss detection and the group restart crawl on a loaded machine
@pytest.mark.extended  # in-call restarts: test_training's killed worker; restarts after node loss: the tests below
def test_training_on_two_nodes_resumes_from_the_checkpoint_when_one_is_lost(tmp_path):
    """Two Train workers, one per worker node (SPREAD); the node of one worker goes mid-epoch 2.

    Ray Train restarts the group on the node left from epoch 1's checkpoint (not from 0), the run
    finishes its 3 epochs, and the test split is predicted by the model actors, every id once.
    """
    done = subprocess.run(
        [sys.executable, str(HERE / "_multinode_training.py"), str(tmp_path / "run")],
        env=_env(), capture_output=True, text=True, timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"removed"')]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    removed = result["removed"]
    assert "error" not in removed, removed
    assert removed["registered"], removed  # the node went after epoch 1's checkpoint was registered
    assert len(removed["training_nodes"]) == 2 and removed["node"] in removed["training_nodes"]  # one per node
    started = [line.split() for line in result["hook"] if line]
    # epochs 0 and 1 started on both nodes; after the loss, epoch 1 again (from its checkpoint, not 0) and 2
    assert [int(e) for e, _, _ in started] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert {n for e, _, n in started[4:]} == set(removed["training_nodes"]) - {removed["node"]}
    assert result["epochs"] == [1, 2, 3] and result["resumed_from"] == [0, 1, 1]
    assert sorted(result["predicted_ids"]) == sorted(result["test_ids"])  # every test id exactly once
    assert result["val_acc"] >= 0.5


def _no_spare_run(mode: str, output: Path) -> dict:
    # short start attempts (Ray's default is 60 s each): the wait is bounded by placement_timeout_s=15 plus one
    env = dict(_env(), RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="8")
    done = subprocess.run([sys.executable, str(HERE / "_multinode_no_spare.py"), mode, str(output)],
                          env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"removed"')]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert "error" not in result["removed"], result["removed"]
    return result


@pytest.mark.timeout(600)
def test_a_node_lost_without_spare_capacity_stops_with_the_last_checkpoint_and_a_rerun_continues(tmp_path):
    """Two 1.5-CPU workers on two 2-CPU nodes; rank 1's node goes after epoch 1's checkpoint, none replaces it.

    The fixed group cannot be placed again: the run stops in bounded time with one line naming the need,
    the cluster's CPUs and the checkpoint, which loads weights-only; with a node back, the same call
    continues from it (epoch 2 onwards, not from 0).
    """
    result = _no_spare_run("stop", tmp_path / "out")
    error = result["error"]
    checkpoint = str(tmp_path / "out" / "run" / "epoch_0001_")
    assert error["type"] == "WorkerCapacityError" and "\n" not in error["message"]
    assert re.fullmatch(
        r"training stopped: after losing workers, the cluster could not place 2 workers x 1\.5 CPUs for \d+ s "
        r"\(placement_timeout_s=15\); it has 2 CPUs on 2 nodes now\. Last checkpoint: "
        + re.escape(checkpoint) + r"[0-9a-f]{8} \(epoch 1 of 3\), intact\. Rerun the same command once the cluster "
        r"has room to continue from it, or set min_workers \(--min-workers\) to go on with fewer workers\.",
        error["message"],
    ), error["message"]
    assert error["after_loss_s"] < 15 + 8 + 40  # the wait, one start attempt, the loss noticed: not forever
    assert result["checkpoint"]["path"].startswith(checkpoint) and result["checkpoint"]["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "epoch"} <= set(result["checkpoint"]["keys"])
    # the rerun continued from epoch 1's checkpoint on both nodes: epochs 2 and 3 were trained, epoch 1 was not
    assert result["epochs"] == [1, 2, 3] and result["resumed_from"] == [0, 1, 1] and result["workers"] == [2, 2, 2]
    rerun = result["hook"][result["hook_before_rerun"]:]
    assert sorted((e, r) for e, r, _ in rerun) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert result["last_checkpoint"].startswith(str(tmp_path / "out" / "run" / "epoch_0003_"))
    assert result["train_loss"][-1] < result["train_loss"][0] and result["val_acc"] >= 0.5


@pytest.mark.timeout(600)
@pytest.mark.extended  # opt-in elastic training; its schedule and capacity logic: test_engine, test_capacity
def test_an_elastic_run_goes_on_with_the_worker_left_when_a_node_is_lost(tmp_path):
    """The same loss with ``min_workers=1``: Ray Train restarts the group with the one worker the cluster
    holds, from epoch 1's checkpoint, and the schedule follows the larger shard (cosine to 0 at the end)."""
    result = _no_spare_run("elastic", tmp_path / "out")
    assert "error" not in result, result.get("error")
    assert result["epochs"] == [1, 2, 3] and result["resumed_from"] == [0, 1, 1] and result["workers"] == [2, 1, 1]
    after = [(e, r, n) for e, r, n in result["hook"] if e >= 1][2:]  # after both ranks' first epoch-2 start
    assert after == [(1, 0, result["removed"]["kept"]), (2, 0, result["removed"]["kept"])]
    # lr after each epoch of a 3-epoch cosine from 0.1, although the last two epochs took twice the steps
    np.testing.assert_allclose(result["lr"], [0.075, 0.025, 0.0], atol=1e-9)
    assert result["last_checkpoint"].startswith(str(tmp_path / "out" / "run" / "epoch_0003_"))
    assert result["train_loss"][-1] < result["train_loss"][0] and result["val_acc"] >= 0.5


def _shard_attempts(shards: Path) -> dict[str, str]:
    return {str(r["shard"]): r["attempt"] for r in (json.loads(p.read_text()) for p in sorted(shards.glob("*.json"))
                                                     if not p.name.startswith("."))} if shards.is_dir() else {}


@pytest.mark.extended  # per-shard records and resume: the killed scoring run above uses the same pipeline
def test_a_driver_killed_while_predicting_resumes_per_shard_without_training_again(tmp_path):
    """The driver dies (SIGKILL) once two of the test split's eight shards are predicted. The same call again
    does not train (the run's last checkpoint already holds every epoch), keeps the two predicted shards
    and the whole validation split, predicts the other six, and ends with every test id once."""
    script, out = str(HERE / "_predict_crash.py"), tmp_path / "out"
    crashed = subprocess.run([sys.executable, script, "crash", str(out)], env=_env(), capture_output=True, text=True,
                             timeout=360)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout[-3000:] + crashed.stderr[-3000:]
    test_shards, val_shards = (out / "run" / f"predictions_{s}.parquet" / "_shards" for s in ("test", "val"))
    before, val_before = _shard_attempts(test_shards), _shard_attempts(val_shards)
    assert len(before) == 2 and len(val_before) == 4  # val (4 shards of 16 rows) was done first
    assert (out / "epochs_crash.log").read_text().split() == ["0"]

    rerun = subprocess.run([sys.executable, script, "rerun", str(out)], env=_env(), capture_output=True, text=True,
                           timeout=360)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    result = json.loads([line for line in rerun.stdout.splitlines() if line.startswith('{"started"')][-1])
    assert result["started"] == [] and result["epochs"] == [1]  # training was not run again
    after = result["records"]
    assert sorted(after, key=int) == [str(i) for i in range(8)]
    assert {s: after[s] for s in before} == before  # the shards predicted before the kill were kept
    assert len({after[s] for s in after if s not in before} - set(before.values())) == 1  # the rest: one new attempt
    assert _shard_attempts(val_shards) == val_before  # the validation predictions too
    assert sorted(result["predicted_ids"]) == sorted(result["test_ids"])  # every test id exactly once
