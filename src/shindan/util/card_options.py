"""Options that every ``train`` command shares for the card's domain (``--domain-stain``,
``--tissue``), declared once so the three commands read the same and write the same card."""

from __future__ import annotations

from typing import Annotated

import typer

DomainStainOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--domain-stain",
        help="Stain of the training images for the card's domain (repeatable, e.g. PAS, H&E, "
        "May-Grünwald-Giemsa); analyses mark results on other stains.",
    ),
]
TissueOpt = Annotated[str, typer.Option(help="Tissue of the training images (card domain).")]
