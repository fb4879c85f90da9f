"""Jinja2 templates of the report (``templates/``), rendered with autoescaping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

#: Folder of the page and table templates and the stylesheet (package data).
TEMPLATES = Path(__file__).resolve().parent / "templates"

_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
)


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>``. Every value is HTML-escaped except ``markupsafe.Markup``
    (HTML that a section builder produced, its own text already escaped)."""
    return _ENV.get_template(template).render(**context)
