"""Nothing hangs on an object store: a silent or refused endpoint ends in one clear line, in bounded time.

Both servers live on 127.0.0.1 only: a listener that accepts connections and never answers, and a port
nothing listens on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rmd_ray.io import storage
from rmd_ray.io.location import WaitLimits


@pytest.fixture(autouse=True)
def _dummy_credentials(monkeypatch):
    # No credential-chain lookups (EC2 metadata times out slowly): the endpoint is what is under test.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("RMD_RAY_S3_CONNECT_TIMEOUT", "RMD_RAY_S3_REQUEST_TIMEOUT", "RMD_RAY_S3_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never sends a byte; the thread ends by itself."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        deadline = time.monotonic() + 60  # bounded even if the test never sets stop
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                accepted.append(conn)  # held open, never answered
        finally:
            for conn in accepted:
                conn.close()
            server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def refused_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    return port


def _uri(port: int, extra: str = "") -> str:
    return f"s3://bucket/x/y.parquet?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1{extra}"


def test_a_silent_endpoint_ends_in_one_line_within_the_request_timeout(silent_port):
    start = time.monotonic()
    with pytest.raises(storage.ObjectStoreUnreachable) as info:
        storage.exists(_uri(silent_port, "&request_timeout=2&max_attempts=1"))
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 20, elapsed
    assert "\n" not in message
    assert message.startswith(f"object store at http://127.0.0.1:{silent_port} did not answer within 2 s ")
    assert "(s3://bucket/x/y.parquet, 1 attempt)" in message
    assert "RMD_RAY_S3_REQUEST_TIMEOUT" in message
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)


def test_the_environment_sets_the_limits_and_the_query_wins(silent_port, monkeypatch):
    monkeypatch.setenv("RMD_RAY_S3_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("RMD_RAY_S3_MAX_ATTEMPTS", "1")
    start = time.monotonic()
    with pytest.raises(storage.ObjectStoreUnreachable, match=r"did not answer within 1 s .*1 attempt\)"):
        storage.read_bytes(_uri(silent_port))
    assert time.monotonic() - start < 20
    fs, _ = storage.resolve(_uri(silent_port, "&request_timeout=7"))
    options = fs.__reduce__()[1][0]
    assert (options["request_timeout"], options["connect_timeout"]) == (7.0, 10.0)


def test_a_refused_endpoint_ends_in_one_line_within_the_bound(refused_port):
    start = time.monotonic()
    with pytest.raises(storage.ObjectStoreUnreachable) as info:
        storage.list_files(_uri(refused_port, "&max_attempts=2"))
    assert time.monotonic() - start < 20
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"object store at http://127.0.0.1:{refused_port} refused the connection (s3://bucket/x/y.parquet, "
        "2 attempts): check the endpoint (host and port) and that the store is running"
    )


def test_writes_are_bounded_too(refused_port):
    import pyarrow as pa

    with pytest.raises(storage.ObjectStoreUnreachable, match="refused the connection"):
        storage.write_parquet_atomic(pa.table({"a": [1]}), _uri(refused_port, "&max_attempts=1"))


def test_defaults_and_bad_limits():
    assert WaitLimits() == WaitLimits(connect_timeout=10.0, request_timeout=60.0, max_attempts=3)
    fs, _ = storage.resolve("s3://bucket/k?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1")
    options = fs.__reduce__()[1][0]
    assert (options["connect_timeout"], options["request_timeout"]) == (10.0, 60.0)
    for bad in ("request_timeout=0", "request_timeout=abc", "max_attempts=1.5", "connect_timeout=inf"):
        with pytest.raises(ValueError, match=f"{bad} must be"):
            storage.resolve(f"s3://bucket/k?endpoint_override=127.0.0.1:9&{bad}")


def test_local_errors_are_left_alone(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "missing"))


def test_a_damaged_parquet_file_is_one_line_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(20_000))}), path, row_group_size=5_000)
    data = bytearray(path.read_bytes())
    data[200:4_000] = bytes(3_800)  # the footer survives, a column chunk does not
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"'{path}' is not a readable Parquet file \(.+\): it is truncated") as info:
        storage.read_parquet(path)
    assert "\n" not in str(info.value)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError, match=r"is not a readable Parquet file \(no Parquet footer\)"):
        storage.read_parquet_metadata(path)
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(pa.ArrowInvalid, match="No match for FieldRef"):  # a missing column is not damage
        storage.read_parquet(path, columns=["b"])
