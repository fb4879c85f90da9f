"""Transitional re-export: the Tune YAML schema moved to :mod:`rmd_ray.distributed.tune_space`.

It is not math, so it lives next to Tune. Only ``rmd_ray/distributed/tuning.py`` still imports it from
here, until its rewrite lands; then delete this module and the two exceptions that allow it
(``pyproject.toml`` ``ignore_imports`` and ``tests/test_layers.py::ALLOWED``).
``rmd_ray.core`` itself does not import this module, so ``import rmd_ray.core`` stays free of the
distributed layer.
"""

from rmd_ray.distributed.tune_space import (  # noqa: F401  (re-export)
    PARAMETERS,
    SearchSpace,
    load_search_space,
    parse_search_space,
)
