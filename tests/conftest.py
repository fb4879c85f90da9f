"""Fixtures shared by the whole suite: a real S3-compatible server for the storage tests.

``s3_server`` runs moto's S3 server in a thread of this process, bound to 127.0.0.1 only, so object-store
code is tested against real HTTP requests from pyarrow's own S3 client (never a mocked client). It starts
on first use only: a run that never asks for it never imports moto.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No instance-metadata lookups: they time out slowly off EC2.
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Settings from the developer's shell that would send requests elsewhere or with other credentials.
_AWS_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server: its ``endpoint`` and a way to get a fresh bucket URI."""

    endpoint: str

    @property
    def query(self) -> str:
        """The URI query that points pyarrow at this server (credentials come from the environment)."""
        return f"endpoint_override={self.endpoint}&region=us-east-1"

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if needed) and return its base URI, ``s3://name?endpoint_override=...``."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}?{self.query}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for the session, with dummy AWS credentials in ``os.environ``.

    Usage: ``base = s3_server.bucket("my-bucket")`` then ``storage.join(base, "dir", "file.parquet")``.
    """
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    pytest.importorskip("boto3")
    with pytest.MonkeyPatch.context() as env:
        for name, value in _AWS_ENV.items():
            env.setenv(name, value)
        for name in _AWS_UNSET:
            env.delenv(name, raising=False)
        # werkzeug logs one line per request: noise in a failing test's captured output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Port 0: the server binds a free port on 127.0.0.1 itself, so no other process can take it
        # between "find a free port" and "bind".
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield S3Server(endpoint=f"http://{host}:{port}")
        finally:
            server.stop()


# One local Ray instance for every test that needs one, sized as docs/design.md section 6 says: 3 logical
# CPUs on a 2-core machine, so a stage that holds whole CPUs (an actor pool, a training worker) leaves a
# CPU for the Ray Data tasks that feed it (else the pipeline hangs silently). Ray tests also run under a
# pytest timeout, so a hang fails instead of eating CI's time.
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


def _held_resources(ray) -> str:
    """The placement groups still holding resources (ray.util.state would need the dashboard, off here)."""
    groups = [f"{pg_id[:8]} {info['state']} {list(info['bundles'].values())}"
              for pg_id, info in ray.util.placement_group_table().items() if info["state"] != "REMOVED"]
    return f"placement groups: {groups or 'none'} (else live actors or tasks)"


@pytest.fixture(autouse=True)
def _ray_resources_released(request):
    """Every test that uses ``ray_local`` must hand back all of its CPUs.

    The instance is shared by the session: an actor or placement group that one test leaves behind takes
    CPUs from the next, whose pipeline then waits forever for them (a hang far from its cause). Release is
    asynchronous, so this waits a while before failing, and the failure names what is still held.
    """
    yield
    if "ray_local" not in request.fixturenames:
        return
    import time

    import ray

    if not ray.is_initialized():
        return
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= total - 1e-6:
            return
        time.sleep(0.5)
    free = ray.available_resources().get("CPU", 0.0)
    pytest.fail(f"{request.node.nodeid} left {total - free:g} of {total:g} CPUs held: {_held_resources(ray)}")


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    """A location with nothing under it yet: a local folder, or a prefix in a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    import uuid

    from rmd_ray.io import storage

    server = request.getfixturevalue("s3_server")
    return storage.join(server.bucket(f"rmd-{uuid.uuid4().hex[:16]}"), "store")
