"""The ``shindan stats`` reports: one self-contained HTML file per analysis."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from shindan import __version__

_env = Environment(
    loader=PackageLoader("shindan.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def png_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, so the report stays one offline file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_stats_report(
    path: Path,
    *,
    title: str,
    subtitle: str,
    json_name: str,
    data_rows: Sequence[tuple[str, Any]],
    tables: Sequence[dict[str, Any]],
    figures: Sequence[tuple[str, str, bytes]],
    methods: Sequence[tuple[str, str]],
    settings: Sequence[tuple[str, Any]],
    notes: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> None:
    """Write the report to ``path`` (a staging path: the caller moves it into place).

    ``tables``: each ``{"caption", "header", "rows"}``; ``figures``: ``(file name, caption,
    PNG bytes)``; ``methods``: ``(test, assumptions)``.
    """
    html = _env.get_template("stats.html.j2").render(
        title=title,
        subtitle=subtitle,
        version=__version__,
        json_name=json_name,
        data_rows=data_rows,
        tables=tables,
        figures=[{"file": f, "caption": c, "uri": png_uri(b)} for f, c, b in figures],
        methods=[{"test": t, "assumptions": a} for t, a in methods],
        settings=settings,
        notes=notes,
        warnings=warnings,
    )
    path.write_text(html, encoding="utf-8")
