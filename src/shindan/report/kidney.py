"""The kidney case report: one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from shindan.report.overlay import PALETTE, image_data_uri
from shindan.util.atomic import atomic_path

_env = Environment(
    loader=PackageLoader("shindan.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def write_kidney_report(
    out: Path, case: str, scores: dict, overlay: np.ndarray, thumbnail: np.ndarray
) -> None:
    """Render ``report.html``: overlay, scores with definitions, glomeruli, settings, models."""
    html = _env.get_template("kidney.html.j2").render(
        case=case,
        s=scores,
        overlay=image_data_uri(overlay),
        thumbnail=image_data_uri(thumbnail),
        legend=[(name, "#{:02x}{:02x}{:02x}".format(*rgb)) for name, rgb in PALETTE.values()],
        synthetic=[n for n, m in scores["model"].items() if m["synthetic_training_data"]],
    )
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
