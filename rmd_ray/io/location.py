"""Where a location points: parse local paths and object-store URIs into a pyarrow filesystem and path.

Every input and output of rmd-ray may be a local path (relative or absolute), a ``file://`` URI, or an
object-store URI understood by :meth:`pyarrow.fs.FileSystem.from_uri`:

* ``s3://bucket/key?endpoint_override=http://host:port&region=us-east-1`` -- the query string carries
  the S3 options pyarrow accepts in a URI (``endpoint_override``, ``scheme``, ``region``,
  ``allow_bucket_creation``, ``allow_bucket_deletion``, ``allow_delayed_open``, ``tls_ca_file_path``...);
  credentials come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or the
  usual AWS configuration chain, never from rmd-ray.
* ``gs://bucket/key`` (or ``gcs://``) for Google Cloud Storage.

Nothing waits forever on an object store. Each S3 call has a connect timeout, a request timeout and
a bounded number of attempts (pyarrow's ``AwsStandardS3RetryStrategy``); a GCS call retries for at
most ``request_timeout * max_attempts`` seconds. Defaults: connect 10 s, request 60 s, 3 attempts. Set
them per location with the query options ``connect_timeout``, ``request_timeout`` and
``max_attempts`` (``s3://b/k?endpoint_override=...&request_timeout=5&max_attempts=1``; rmd-ray reads
and removes them before pyarrow sees the query), or for the whole process with the environment
variables ``RMD_RAY_S3_CONNECT_TIMEOUT``, ``RMD_RAY_S3_REQUEST_TIMEOUT`` and ``RMD_RAY_S3_MAX_ATTEMPTS``
(the query wins). A store that does not answer ends in :class:`ObjectStoreUnreachable`, one line that
names the endpoint and what to check (:func:`object_store_errors` converts pyarrow's error).

This module parses and joins locations, masks credentials in error messages and builds (and caches) the
remote filesystems; :mod:`rmd_ray.io.storage` holds the operations on them and re-exports the public
names defined here. It imports only pyarrow and the standard library.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = [
    "Location",
    "ObjectStoreUnreachable",
    "WaitLimits",
    "basename",
    "is_remote",
    "join",
    "object_store_errors",
    "parse_location",
    "redact",
    "resolve",
    "unsupported_location",
]

_ACCEPTED = (
    "a local path, file:///absolute/path, s3://bucket/key[?endpoint_override=http://host:port&region=...], "
    "or gs://bucket/key"
)
_REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs"})
# A scheme needs two or more characters, so a Windows drive ("C:/data") stays a local path.
_URI_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+):(?P<rest>.*)$", re.DOTALL)

_cache_lock = threading.Lock()
_fs_cache: dict[tuple, pafs.FileSystem] = {}
_local_fs = pafs.LocalFileSystem()


@dataclass(frozen=True)
class Location:
    """A parsed ``uri``: ``scheme`` is ``""`` for a plain local path.

    ``prefix`` + ``path`` + ``suffix`` rebuilds the URI (``suffix`` is ``"?query"`` or ``""``), which
    lets results keep the caller's form, and ``path`` is the path inside the filesystem.
    """

    scheme: str
    prefix: str
    path: str
    suffix: str
    query: str = ""
    userinfo: str = ""

    @property
    def remote(self) -> bool:
        """Whether the location is on an object store."""
        return self.scheme in _REMOTE_SCHEMES

    def with_path(self, path: str) -> str:
        """The URI of ``path`` in the same scheme, with the same credentials and ``?query``."""
        return f"{self.prefix}{path}{self.suffix}"


def unsupported_location(uri: object, why: str) -> ValueError:
    """The :class:`ValueError` for an unusable ``uri``: names it (credentials masked) and the accepted forms."""
    return ValueError(f"Unsupported storage location {redact(str(uri))!r}: {why}. Accepted forms: {_ACCEPTED}.")


def redact(uri: str) -> str:
    """``uri`` with the credentials of ``scheme://KEY:SECRET@bucket/...`` masked, for messages."""
    # s3://KEY:SECRET@bucket/... is valid for pyarrow: never echo the credentials in an error.
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]+://)[^/@?]*@", r"\1***@", uri)


def parse_location(uri: str | os.PathLike[str]) -> Location:
    """Parse ``uri`` into a :class:`Location`; raises :class:`ValueError` for a malformed or unknown form."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise TypeError(f"expected a str or os.PathLike location, got {type(uri).__name__}")
    if not uri:
        raise unsupported_location(uri, "empty location")
    match = _URI_RE.match(uri)
    if match is None:
        return Location("", "", uri, "")
    scheme, rest = match["scheme"].lower(), match["rest"]
    if scheme == "file":
        if rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                raise unsupported_location(uri, f"a file URI names no host (got {authority!r})")
            if not slash:
                raise unsupported_location(uri, "a file URI needs an absolute path")
            return Location("file", uri[: len(uri) - len(path) - 1], "/" + path, "")
        if rest.startswith("/"):
            return Location("file", uri[: len(uri) - len(rest)], rest, "")
        raise unsupported_location(uri, "a file URI needs an absolute path")
    if scheme not in _REMOTE_SCHEMES:
        if rest.startswith("//"):
            raise unsupported_location(uri, f"unknown scheme {scheme!r}")
        return Location("", "", uri, "")  # "name:with:colons" is an ordinary relative path
    if not rest.startswith("//"):
        raise unsupported_location(uri, f"expected {scheme}://bucket/key")
    body, qmark, query = rest[2:].partition("?")
    if "#" in body or "#" in query:
        raise unsupported_location(uri, "fragments ('#') are not supported")
    userinfo, at, hostpath = body.rpartition("@") if "@" in body.split("/", 1)[0] else ("", "", body)
    bucket = hostpath.split("/", 1)[0]
    if not bucket:
        raise unsupported_location(uri, "missing bucket name")
    prefix = f"{uri[: len(match['scheme']) + 3]}{userinfo}{at}"
    return Location(scheme, prefix, hostpath, qmark + query, query, userinfo)


def _fs_path(loc: Location) -> str:
    if loc.scheme == "":
        return os.path.abspath(loc.path)
    if loc.scheme == "file":
        return os.path.normpath(unquote(loc.path))
    # pyarrow decodes percent-escapes in the URI path; strip "/" so "bkt/x/" and "bkt/x" name one thing.
    return unquote(loc.path).rstrip("/")


@dataclass(frozen=True)
class WaitLimits:
    """How long an object-store call may take: seconds to connect, seconds per request, attempts."""

    connect_timeout: float = 10.0
    request_timeout: float = 60.0
    max_attempts: int = 3


_LIMIT_ENV = {
    "connect_timeout": "RMD_RAY_S3_CONNECT_TIMEOUT",
    "request_timeout": "RMD_RAY_S3_REQUEST_TIMEOUT",
    "max_attempts": "RMD_RAY_S3_MAX_ATTEMPTS",
}


def _wait_limits(uri: str, params: list[tuple[str, str]]) -> WaitLimits:
    given = dict(params)
    values: dict[str, Any] = {}
    for name, env in _LIMIT_ENV.items():
        raw = given.get(name, os.environ.get(env))
        if raw is None:
            continue
        where = f"{name}={raw}" if name in given else f"{env}={raw}"
        try:
            value = int(raw) if name == "max_attempts" else float(raw)
        except ValueError:
            value = -1
        if not value > 0 or value == float("inf"):
            kind = "a whole number >= 1" if name == "max_attempts" else "a number of seconds > 0"
            raise unsupported_location(uri, f"{where} must be {kind}")
        values[name] = value
    return WaitLimits(**values)


def _with_limits(fs: pafs.FileSystem, limits: WaitLimits) -> pafs.FileSystem:
    # pyarrow's URI parser knows no timeouts: rebuild the filesystem from its own options plus ours.
    rebuild, (options,) = fs.__reduce__()
    if isinstance(fs, pafs.S3FileSystem):
        return rebuild({
            **options,
            "connect_timeout": limits.connect_timeout,
            "request_timeout": limits.request_timeout,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=limits.max_attempts),
        })
    if type(fs).__name__ == "GcsFileSystem":
        limit = timedelta(seconds=limits.request_timeout * limits.max_attempts)
        return rebuild({**options, "retry_time_limit": limit})
    return fs


def _remote_fs(uri: str, loc: Location) -> pafs.FileSystem:
    params = parse_qsl(loc.query, keep_blank_values=True)
    limits = _wait_limits(uri, params)
    params = [(name, value) for name, value in params if name not in _LIMIT_ENV]
    names = {name for name, _ in params}
    if loc.scheme == "s3" and "allow_delayed_open" not in names:
        # With delayed open an object smaller than one upload part goes out as a single PutObject at
        # close: one round trip for the many small objects a run writes (completion records, manifests,
        # JSON), where pyarrow would otherwise open, fill and complete a multipart upload for each.
        # Objects larger than a part still go multipart (tests/io/test_storage.py writes one).
        params.append(("allow_delayed_open", "true"))
    key: tuple = (loc.scheme, loc.userinfo, tuple(sorted(params)), limits)
    if loc.scheme == "s3" and not names & {"region", "endpoint_override"}:
        # Without either, pyarrow looks the region up from the bucket: the filesystem is per bucket.
        key += (loc.path.split("/", 1)[0],)
    with _cache_lock:
        cached = _fs_cache.get(key)
    if cached is not None:
        return cached
    query = urlencode(params, safe=":/")  # pyarrow percent-decodes option values, as parse_qsl did
    bucket = loc.path.split("/", 1)[0]
    try:
        fs, _ = pafs.FileSystem.from_uri(f"{loc.prefix}{bucket}?{query}" if query else f"{loc.prefix}{bucket}")
    except (pa.ArrowInvalid, ValueError) as exc:
        raise unsupported_location(uri, str(exc)) from exc
    fs = _with_limits(fs, limits)
    with _cache_lock:
        return _fs_cache.setdefault(key, fs)


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path that ``uri`` names.

    Parameters
    ----------
    uri : str or os.PathLike
        A local path (relative paths are made absolute), ``file:///abs/path``, ``s3://bucket/key?options``
        or ``gs://bucket/key``. The query string of an object-store URI carries the options that
        :meth:`pyarrow.fs.FileSystem.from_uri` accepts, e.g. ``endpoint_override=http://127.0.0.1:9000``.

    Returns
    -------
    tuple of (pyarrow.fs.FileSystem, str)
        The filesystem -- cached per scheme and options, so repeated calls are cheap and share one S3
        client -- and the path inside it (``bucket/key`` for an object store, without a trailing ``/``).

    Raises
    ------
    ValueError
        For a malformed URI, an unknown scheme or an option pyarrow rejects; the message names the URI
        (credentials masked) and the accepted forms.
    """
    loc = parse_location(uri)
    if not loc.remote:
        return _local_fs, _fs_path(loc)
    return _remote_fs(os.fspath(uri), loc), _fs_path(loc)


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object store (``s3://``, ``gs://``) rather than the local filesystem."""
    return parse_location(uri).remote


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Append path ``parts`` to ``uri``, keeping an object-store URI's ``?query`` at the end.

    ``join("s3://b/x?endpoint_override=E", "scores", "a.parquet")`` is
    ``"s3://b/x/scores/a.parquet?endpoint_override=E"``. Local paths follow :func:`os.path.join`.
    """
    loc = parse_location(uri)
    if loc.scheme == "":
        return os.path.join(loc.path, *parts)
    # Leading "/" in a part would make posixpath.join drop the bucket: URI parts are always relative.
    cleaned = [p.strip("/") for p in parts if p.strip("/")]
    path = loc.path.rstrip("/") if loc.path.strip("/") else loc.path
    return loc.with_path(posixpath.join(path, *cleaned) if cleaned else loc.path)


def basename(uri: str | os.PathLike[str]) -> str:
    """The last path component of a location, without any ``?query``."""
    return resolve(uri)[1].rstrip("/").rsplit("/", 1)[-1]


class ObjectStoreUnreachable(OSError, ValueError):
    """An object store that did not answer, refused the connection or could not be found, in one line.

    An :class:`OSError` (retry logic that catches those still sees it) and a :class:`ValueError` (the
    CLI prints it as a user error: one line, no traceback).
    """


_F = TypeVar("_F", bound=Callable[..., Any])
_NETWORK = ("NETWORK_CONNECTION", "curlCode", "UNAVAILABLE", "DEADLINE_EXCEEDED")


def _endpoint(loc: Location, given: dict[str, str]) -> str:
    override = given.get("endpoint_override")
    if override:
        return override if "://" in override else f"{given.get('scheme') or 'https'}://{override}"
    if loc.scheme == "s3":
        return f"AWS S3 (region {given['region']})" if given.get("region") else "AWS S3"
    return "Google Cloud Storage"


def _unreachable(uri: str | os.PathLike[str], err: OSError) -> ObjectStoreUnreachable | None:
    text = str(err)
    loc = parse_location(uri)
    if not loc.remote or not any(mark in text for mark in _NETWORK):
        return None
    params = parse_qsl(loc.query, keep_blank_values=True)
    limits, given = _wait_limits(os.fspath(uri), params), dict(params)
    if "curlCode: 28" in text or "Timeout was reached" in text or "DEADLINE_EXCEEDED" in text:
        if "onnect" in text.split("Details:")[-1] and "Operation too slow" not in text:
            what, wait = f"did not accept a connection within {limits.connect_timeout:g} s", "CONNECT"
        else:
            what, wait = f"did not answer within {limits.request_timeout:g} s", "REQUEST"
        fix = f"check the endpoint, the network and credentials (RMD_RAY_S3_{wait}_TIMEOUT to wait longer)"
    elif "curlCode: 7" in text or "refused" in text.lower() or "Could not connect" in text:
        what, fix = "refused the connection", "check the endpoint (host and port) and that the store is running"
    elif "curlCode: 6" in text or "resolve host" in text:
        what, fix = "could not be resolved", "check the endpoint's host name and the DNS of this machine"
    else:
        what, fix = "could not be reached", "check the endpoint, the network and credentials"
    attempts = f"{limits.max_attempts} attempt{'s' if limits.max_attempts != 1 else ''}"
    shown = redact(loc.prefix + loc.path)
    return ObjectStoreUnreachable(f"object store at {_endpoint(loc, given)} {what} ({shown}, {attempts}): {fix}")


def object_store_errors(func: _F) -> _F:
    """Decorate a storage operation: pyarrow's network errors on its location become one
    :class:`ObjectStoreUnreachable` line; the location is the first str/PathLike argument (or ``uri=``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ObjectStoreUnreachable:
            raise
        except OSError as err:
            uri = kwargs.get("uri", next((a for a in args if isinstance(a, (str, os.PathLike))), None))
            converted = None if uri is None else _unreachable(uri, err)
            if converted is None:
                raise
            raise converted from err

    return wrapper  # type: ignore[return-value]
