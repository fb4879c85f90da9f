"""GPU wiring end to end short of CUDA: encoder actors, training workers and prediction actors ask for
GPUs and land on the one node that advertises them (logical GPUs, ``RMD_RAY_FORCE_CPU=1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def test_gpu_work_is_placed_on_the_node_with_gpus(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)  # never join the test session's own instance
    done = subprocess.run([sys.executable, str(HERE / "_logical_gpus.py"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith('{"gpu_node"')]
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[-1])
    assert result["encoder_nodes"] == [result["gpu_node"]]  # every encoder actor on the GPU node
    assert result["rows_scored"] == 32
    kinds = {}
    for actor in result["gpu_actors"]:
        assert actor["node"] == result["gpu_node"], actor  # nothing that holds a GPU runs on the CPU node
        assert actor["gpu"] == 1.0
        kinds.setdefault(actor["class"], 0)
        kinds[actor["class"]] += 1
    assert any("EmbedActor" in k for k in kinds), kinds  # scoring's encoder actors and prediction's model actors
    assert sum(v for k, v in kinds.items() if "EmbedActor" in k) >= 2, kinds
    assert any("TrainWorker" in k for k in kinds), kinds  # the Ray Train worker
    assert result["predicted"] == 32 and result["logits_finite"]
    assert 0.0 <= result["val_acc"] <= 1.0
