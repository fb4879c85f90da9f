"""One local Ray instance for every distributed test, sized as docs/design.md section 6 says.

3 logical CPUs on a 2-core machine: a stage that holds whole CPUs (an actor pool, a training worker)
must leave a CPU for the Ray Data tasks that feed it, or the pipeline hangs silently. Every test here
also runs under a pytest timeout, so a hang fails instead of eating CI's time.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_local(s3_server):
    # s3_server first: it sets the (dummy) AWS credentials in the environment, which the Ray workers
    # started here inherit, so tasks can reach the loopback S3 server.
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        # address="local": our own instance, never a cluster that a `ray start` elsewhere left running
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()
