"""Options that every ``train`` command shares for its card (``--domain-stain``, ``--tissue``,
``--model-version``), declared once so the three commands read the same and write the same card."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from shindan.errors import InputError

DomainStainOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--domain-stain",
        help="Stain of the training images for the card's domain (repeatable, e.g. PAS, H&E, "
        "May-Grünwald-Giemsa); analyses mark results on other stains.",
    ),
]
TissueOpt = Annotated[str, typer.Option(help="Tissue of the training images (card domain).")]
ModelVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--model-version",
        help="Version written to the model card, dot-separated numbers (e.g. 2.1) "
        "[default: 1.0 for a new classifier, 1.0.0 for a new segmenter, base+ft for --init].",
    ),
]


def check_model_version(value: str | None) -> str | None:
    """``value`` if it is dot-separated numbers (or None), else a one-line :class:`InputError`.

    Examples
    --------
    >>> check_model_version("2.1")
    '2.1'
    """
    if value is not None and not re.fullmatch(r"\d+(\.\d+){0,3}", value):
        raise InputError(f"--model-version must be dot-separated numbers (e.g. 2.1), got {value!r}")
    return value
