"""Image-data readers: every source becomes one ``pyarrow.Table`` that :mod:`rmd_ray.data.decode` reads.

Every reader returns a table with columns

- ``id`` (string, unique within the source), ``label`` (int64), and the image column(s) of one kind:
- ``image`` (binary, encoded JPEG/PNG/...), or ``path`` (string, absolute file path), or
  ``pixels`` (binary, raw uint8, row-major) + ``shape`` (list<int32>: ``[H, W]`` or ``[H, W, C]``),

and table metadata ``b"classes"`` (JSON list of class names; class ``k`` is ``classes[k]``) and
``b"source"`` (a description), plus reader-specific keys (e.g. ``b"skipped_non_image"``).

Readers do not judge labels: :func:`validate_labels` splits a table into good rows and error rows
``(id, label, reason)`` so that no row is silently lost.

Submodules: :mod:`~rmd_ray.data.readers.tables` (table metadata and pixel-table helpers),
:mod:`~rmd_ray.data.readers.parquet`, :mod:`~rmd_ray.data.readers.folder`, :mod:`~rmd_ray.data.readers.cifar`,
:mod:`~rmd_ray.data.readers.fashion_mnist`, :mod:`~rmd_ray.data.readers.arrays` (one reader per format),
:mod:`~rmd_ray.data.readers.published` (published ImageNet-C / CIFAR-10-C), :mod:`~rmd_ray.data.readers.sources`
(the :data:`SOURCES` registry and :func:`read_source`) and :mod:`~rmd_ray.data.readers.labels`
(:func:`validate_labels`).
"""

from __future__ import annotations

# Readers first, then the SOURCES registry that dispatches to them.
# isort: off
from rmd_ray.data.readers.tables import (
    table_classes as table_classes,
)
from rmd_ray.data.readers.parquet import (
    parse_classes as parse_classes,
    read_parquet_images as read_parquet_images,
)
from rmd_ray.data.readers.folder import (
    IMAGE_EXTENSIONS as IMAGE_EXTENSIONS,
    image_extensions as image_extensions,
    read_image_folder as read_image_folder,
)
from rmd_ray.data.readers.cifar import (
    read_cifar_pickle as read_cifar_pickle,
)
from rmd_ray.data.readers.fashion_mnist import (
    FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT as FASHION_MNIST_ROOT,
    read_fashion_mnist as read_fashion_mnist,
)
from rmd_ray.data.readers.arrays import (
    from_arrays as from_arrays,
    read_sklearn_digits as read_sklearn_digits,
)
from rmd_ray.data.readers.published import (
    CIFAR_C_PER_SEVERITY as CIFAR_C_PER_SEVERITY,
    read_published_corruptions as read_published_corruptions,
)
from rmd_ray.data.readers.sources import (
    SOURCES as SOURCES,
    read_source as read_source,
)
from rmd_ray.data.readers.labels import (
    label_errors as label_errors,
    validate_labels as validate_labels,
)
# isort: on

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "SOURCES",
    "from_arrays",
    "read_cifar_pickle",
    "read_fashion_mnist",
    "read_image_folder",
    "read_parquet_images",
    "read_sklearn_digits",
    "read_source",
    "table_classes",
    "validate_labels",
]
