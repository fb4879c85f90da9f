"""End to end as a user runs it: `ray start --head` on loopback, `ray job submit jobs/score.py --smoke-test`.

Stops only the cluster it started: its processes are found by the unique temp dir on their command
lines, never with a bare `ray stop` (which kills every Ray process on a shared machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rmd_ray.data.readers import FASHION_MNIST_ROOT
from rmd_ray.io.parts import read_table_metadata

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def stop_cluster(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_with(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while processes_with(marker) and time.time() < deadline:
            time.sleep(0.3)


@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_ray_job_submit_smoke_test(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs_port, dashboard_port = free_port(), free_port()
    # Every fixed default port moved to a free one: another Ray instance on the machine (a test's
    # ray.init, a user's cluster) holds the defaults, and the job agent then never registers.
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    ray_bin = Path(sys.executable).parent / "ray"  # the CLI beside this interpreter, else the one on PATH
    ray_bin = str(ray_bin) if ray_bin.is_file() else shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the `ray` command line is not installed (pip install 'ray[default]')")
    start = subprocess.run(
        [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--num-cpus=3",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats", *agent_ports],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        output = tmp_path / "scores"
        command = [ray_bin, "job", "submit", f"--address=http://127.0.0.1:{dashboard_port}", "--working-dir",
                   str(ROOT), "--", "python", "jobs/score.py", "--smoke-test", "--output", str(output)]
        for _ in range(30):  # the dashboard agent registers a few seconds after `ray start` returns
            submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=480)
            log = submit.stdout + submit.stderr
            if "No available agent to submit job" not in log:
                break
            time.sleep(2)
        assert submit.returncode == 0, log[-4000:]
        assert "succeeded" in log.lower(), log[-4000:]
        assert "scored 256 of 256 rows (0 in the errors table)" in log
        scores = pq.read_table(output / "scores.parquet")
        assert scores.num_rows == 256 and len(set(scores.column("id").to_pylist())) == 256
        meta = read_table_metadata(output / "scores.parquet")  # the directory's manifest
        assert meta["encoder"] == "efficientnet_lite0" and meta["resolution"] == 32
    finally:
        stop_cluster(temp_dir)
    assert processes_with(temp_dir) == []
