"""The ``rmd-ray`` command line, one module per command: ``score``, ``find-label-issues``
(:mod:`~rmd_ray.cli.label_issues`), ``train``, ``evaluate``, ``report``, ``tune`` and ``run`` (the main
job); :mod:`~rmd_ray.cli.common` holds the shared argument helpers, :mod:`~rmd_ray.cli.console` what
reaches the terminal and :mod:`~rmd_ray.cli.main` the parser.

Every command takes ``--address`` (join a running cluster; default: a local Ray instance) and the
``jobs/*.py`` scripts call :func:`main` for ``ray job submit``.
"""

from rmd_ray.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
