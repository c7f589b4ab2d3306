"""The kidney case report: one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from shindan.report.overlay import NUCLEUS_DOT, PALETTE, image_data_uri
from shindan.util.atomic import atomic_path

_env = Environment(
    loader=PackageLoader("shindan.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def scale_note(scores: dict) -> str:
    """Where the areas' µm/px comes from, shown next to every area of the report.

    Examples
    --------
    >>> scale_note({"mpp": 0.5, "input_mpp": 0.25, "input_mpp_source": "file"})
    'at 0.5 µm/px (label map; input 0.25 µm/px, from the file)'
    >>> scale_note({"mpp": 0.25, "input_mpp": 0.25, "input_mpp_source": "given"})
    'at 0.25 µm/px (input, given with --mpp)'
    """
    source = "from the file" if scores["input_mpp_source"] == "file" else "given with --mpp"
    if abs(scores["mpp"] - scores["input_mpp"]) <= 1e-9 * scores["mpp"]:
        return f"at {scores['mpp']:.4g} µm/px (input, {source})"
    return (
        f"at {scores['mpp']:.4g} µm/px (label map; input {scores['input_mpp']:.4g} µm/px, {source})"
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
        legend=[(name, _hex(rgb)) for name, rgb in PALETTE.values()],
        nucleus=(NUCLEUS_DOT[0], _hex(NUCLEUS_DOT[1])),
        synthetic=[n for n, m in scores["model"].items() if m["synthetic_training_data"]],
        scale=scale_note(scores),
        outside=scores.get("outside_domain", {}),
    )
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
