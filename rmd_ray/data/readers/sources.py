"""The :data:`SOURCES` registry of spec-string schemes and :func:`read_source`, which dispatches on it."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from rmd_ray.core.registry import Registry
from rmd_ray.data.readers.arrays import read_sklearn_digits
from rmd_ray.data.readers.cifar import read_cifar_pickle
from rmd_ray.data.readers.fashion_mnist import FASHION_MNIST_ROOT, read_fashion_mnist
from rmd_ray.data.readers.folder import read_image_folder
from rmd_ray.data.readers.parquet import read_parquet_images
from rmd_ray.data.readers.published import read_published_corruptions
from rmd_ray.data.readers.tables import SPLITS, check_limit

# --------------------------------------------------------------------------------------------
# dispatch by spec string

SOURCES: Registry[Callable[[str, int | None], pa.Table]] = Registry("data source")


def _split_suffix(rest: str, default: str = "train") -> tuple[str, str]:
    head, sep, tail = rest.rpartition(":")
    if sep and tail in SPLITS:
        return head, tail
    if rest in SPLITS:
        return "", rest
    return rest, default


@SOURCES.register("fashion-mnist")
def _source_fashion_mnist(rest: str, limit: int | None) -> pa.Table:
    root, split = _split_suffix(rest)
    return read_fashion_mnist(root or FASHION_MNIST_ROOT, split=split, limit=limit)


@SOURCES.register("sklearn-digits")
def _source_sklearn_digits(rest: str, limit: int | None) -> pa.Table:
    if rest:
        raise ValueError(f"sklearn-digits takes no argument, got {rest!r}: write 'sklearn-digits:'")
    return read_sklearn_digits(limit=limit)


@SOURCES.register("parquet")
def _source_parquet(rest: str, limit: int | None) -> pa.Table:
    return read_parquet_images(_need_path(rest, "parquet"), limit=limit)


@SOURCES.register("folder")
def _source_folder(rest: str, limit: int | None) -> pa.Table:
    table = read_image_folder(_need_path(rest, "folder"))
    return table if limit is None else table.slice(0, limit)


@SOURCES.register("cifar-pickle")
def _source_cifar_pickle(rest: str, limit: int | None) -> pa.Table:
    root, split = _split_suffix(rest)
    table = read_cifar_pickle(_need_path(root, "cifar-pickle"), split=split)
    return table if limit is None else table.slice(0, limit)


@SOURCES.register("imagenet-c")
def _source_published_c(rest: str, limit: int | None) -> pa.Table:
    return read_published_corruptions(_need_path(rest, "imagenet-c"), limit=limit)


def _need_path(rest: str, scheme: str) -> str:
    if not rest:
        raise ValueError(f"source {scheme!r} needs a path: '{scheme}:/path/to/data'")
    return rest


def read_source(spec: str, *, limit: int | None = None) -> pa.Table:
    """Read a data source named by a spec string ``"<scheme>:<argument>"``.

    ``"fashion-mnist:train"``, ``"fashion-mnist:/root:test"``, ``"parquet:/path/train.parquet"``,
    ``"folder:/path/root"``, ``"cifar-pickle:/path/cifar-10-batches-py:test"`` (split defaults to
    ``train``), ``"imagenet-c:/path/ROOT"`` (a published ImageNet-C or CIFAR-10-C directory, with
    ``corruption`` and ``severity`` columns: :func:`read_published_corruptions`). ``limit`` keeps the
    first rows (for ``imagenet-c``, of each corruption and severity).
    """
    if not isinstance(spec, str):
        raise TypeError(f"source spec must be a str, got {type(spec).__name__}")
    check_limit(limit)
    scheme, _, rest = spec.partition(":")
    return SOURCES.get(scheme)(rest, limit)
