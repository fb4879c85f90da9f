"""Helpers every command shares: Ray arguments, NAME=VALUE pairs, the progress printer, the metrics table."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DEFAULT_SOURCE = "fashion-mnist:train"
DEFAULT_IMAGE_SIZE = 32  # Fashion-MNIST is 28 px: 32 keeps EfficientNet-Lite0 cheap on a CPU-only machine


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address ('auto' inside `ray job submit`); default: start a local Ray instance",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs for a local instance (default: physical + 1, so data tasks never starve)",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="start the Ray dashboard of a local instance on 127.0.0.1 and print its address",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show Ray's own logs on the console"
    )
    parser.set_defaults(uses_ray=True)


def add_tracking_args(parser: argparse.ArgumentParser, *, experiment: str) -> None:
    """``--mlflow URI`` and ``--mlflow-experiment NAME`` (``experiment`` describes the default)."""
    parser.add_argument(
        "--mlflow", default=None, metavar="URI",
        help="log parameters, per-epoch metrics and final artefacts to this MLflow tracking URI (file:DIR, "
        'sqlite:///FILE.db, http://HOST:PORT); needs pip install "rmd-ray[mlflow]"',
    )
    parser.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                        help=f"the MLflow experiment of --mlflow (default: {experiment})")


def check_tracking_args(args: argparse.Namespace) -> None:
    """Check ``--mlflow`` / ``--mlflow-experiment`` before Ray starts; ``args.mlflow`` becomes the URI every
    Ray process can use (see :func:`rmd_ray.distributed.runtime.tracking.check_tracking_uri`)."""
    uri, experiment = getattr(args, "mlflow", None), getattr(args, "mlflow_experiment", None)
    if uri is None:
        if experiment is not None:
            raise ValueError("--mlflow-experiment names the experiment --mlflow logs to: pass --mlflow URI as well")
        return
    if experiment is not None and not experiment.strip():
        raise ValueError("--mlflow-experiment must be a non-empty name (or leave it out for the default)")
    from rmd_ray.distributed.runtime.tracking import check_tracking_uri

    args.mlflow = check_tracking_uri(uri)


def progress_printer(stage: str):
    """A progress callback that prints one line every few seconds (a log file, not a redraw)."""
    state = {"last": 0.0, "start": time.perf_counter()}

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - state["last"] < 5.0 and done < total:
            return
        state["last"] = now
        elapsed = now - state["start"]
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        print(f"  [{stage}] {done}/{total} rows, {rate:.0f} rows/s, ETA {eta:.0f} s", flush=True)

    return report


def parse_pairs(items: list[str] | None, *, what: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{what} {item!r} must look like NAME=VALUE")
        pairs[key] = value
    return pairs


def number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def print_table(results: dict[str, dict]) -> None:
    header = f"{'run':<12} {'ACC %':>7} {'ECE mass %':>11} {'ECE width %':>12} {'NLL':>7} {'AUROC(MSP)':>11}"
    print(header)
    print("-" * len(header))
    for name, m in results.items():
        print(
            f"{name:<12} {100 * m['acc']:>7.2f} {100 * m['ece_mass']:>11.2f} {100 * m['ece_width']:>12.2f} "
            f"{m['nll']:>7.3f} {m.get('msp_auroc', float('nan')):>11.4f}"
        )


def int_list(text: str, *, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def read_json(path: str | None, *, what: str):
    """The JSON value in ``path`` (a local path or a URI), or None; one-line errors naming the file."""
    from rmd_ray.io import storage

    if path is None:
        return None
    if not storage.is_file(path):
        raise ValueError(f"{what} file {path!r} not found; write it with `rmd-ray evaluate --output DIR`")
    try:
        return json.loads(storage.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} file {path!r} is not JSON: {err}") from None


def check_output(output: str | None) -> None:
    """ValueError, in one line, when the local ``--output`` folder cannot be one: an existing file, a
    path under a file, or a folder this user cannot write. Object-store outputs are left to the store."""
    from rmd_ray.io.storage import is_remote

    if not output or is_remote(output):
        return
    path = Path(output).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is an existing file" if existing == path else f"is under {str(existing)!r}, which is a file"
        raise ValueError(f"--output {output!r} {where}, not a folder: pass a folder (created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (its parent {str(existing)!r})"
        raise ValueError(
            f"--output {output!r}{where} is not writable by this user: pass a folder you can write, or fix its "
            "permissions"
        )


#: source schemes whose argument may be a folder that planning lists (an output inside it would be read as data)
LISTED_SOURCES = ("parquet", "hf-parquet", "folder", "imagenet-val", "webdataset")


def check_output_outside_sources(output: str | None, sources: dict[str, object]) -> None:
    """ValueError, in one line, when ``--output`` is at or under a folder that a source lists: the next
    run would plan the outputs (scores parts, a class named after the run) as data.

    ``sources`` maps a flag (``--source``) to its spec(s); specs that name one file are left alone.
    """
    from rmd_ray.io.location import parse_location

    def key(where: str) -> tuple[str, str]:
        loc = parse_location(where)
        if loc.remote:
            return loc.scheme, loc.path.rstrip("/")
        return "", os.path.normpath(Path(loc.path).expanduser().absolute())

    if not output:
        return
    scheme_out, out = key(output)
    for flag, given in sources.items():
        for spec in [given] if isinstance(given, str) else list(given or []):
            scheme, _, rest = str(spec).partition(":")
            root = rest.split("*", 1)[0].split("{", 1)[0] if scheme in LISTED_SOURCES else ""
            if not root or _names_a_file(root):
                continue
            kind, folder = key(root)
            if kind == scheme_out and (out == folder or out.startswith(folder.rstrip("/") + "/")):
                raise ValueError(
                    f"--output {output!r} is inside {flag} {spec!r}: a later run would read the outputs as "
                    "data; pass an output folder outside the source"
                )


def _names_a_file(root: str) -> bool:
    from rmd_ray.io.storage import is_remote

    if is_remote(root):  # no listing at argument time: a file by its name
        return root.split("?", 1)[0].rstrip("/").lower().endswith((".parquet", ".tar", ".json"))
    return Path(root.removeprefix("file://")).expanduser().is_file()


def file_error_line(err: OSError) -> str:
    """One line for an OSError a path caused: what went wrong, the path, and what to check."""
    name = err.filename if err.filename is not None else ""
    what = err.strerror or type(err).__name__
    fixes = {
        PermissionError: "check the permissions of that path, or pass another one",
        FileNotFoundError: "check the path",
        FileExistsError: "remove it or pass another path",
        IsADirectoryError: "pass a file, not a folder",
        NotADirectoryError: "a part of that path is a file: pass a folder",
    }
    fix = next((text for kind, text in fixes.items() if isinstance(err, kind)), "check the path")
    if not name:  # raised by rmd-ray with its own message
        return f"{err}; {fix}" if err.strerror is None else f"{what}; {fix}"
    return f"{what}: {str(name)!r}; {fix}"
