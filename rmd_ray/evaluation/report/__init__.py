"""A self-contained HTML report: metrics, calibration, selective prediction, robustness and difficulty.

:func:`build_report` writes one ``report.html`` with every figure embedded as a base64 PNG data URI
(no external files, scripts or fonts), so the page can be mailed or archived as is. Sections whose
inputs were not given are replaced by a note saying what would enable them.

Modules: :mod:`~.page` (input checks, :func:`build_report`), :mod:`~.tables` (metrics and provenance),
:mod:`~.figures` (every plot, drawn on :class:`matplotlib.figure.Figure` objects, not ``pyplot``, so
nothing touches matplotlib's global state), :mod:`~.gallery` (hardest / easiest images by RMD) and
:mod:`~.templating` with ``templates/`` (Jinja2 page and table templates, the stylesheet).
"""

from rmd_ray.evaluation.report.gallery import gallery_selection
from rmd_ray.evaluation.report.page import SECTIONS, build_report
from rmd_ray.evaluation.report.tables import format_hparams

__all__ = ["SECTIONS", "build_report", "format_hparams", "gallery_selection"]
