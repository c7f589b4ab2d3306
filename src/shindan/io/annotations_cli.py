"""``shindan annotations ...``: convert annotation files between formats.

Thin typer wiring; the formats are imported inside the commands so ``shindan --help`` stays
fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Annotation files: convert between QuPath GeoJSON, ImageScope, ASAP, labelme, COCO, "
    "label masks and DICOM (annotations, segmentations).",
    no_args_is_help=True,
)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(metavar="IN", help="Annotation file to read.")],
    target: Annotated[
        Path, typer.Argument(metavar="OUT", help="File to write (never replaced without --force).")
    ],
    from_format: Annotated[
        str | None,
        typer.Option("--from", help="Input format (default: from the file; see 'formats')."),
    ] = None,
    to_format: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Output format (default: from the suffix; needed for .json, "
            ".xml, .dcm and instance masks).",
        ),
    ] = None,
    vocabulary: Annotated[
        Path | None,
        typer.Option(
            help="Class vocabulary, JSON or CSV (default: the built-in kidney one; "
            "see 'shindan annotations vocabulary')."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse classes the vocabulary does not list.")
    ] = False,
    image: Annotated[
        Path | None,
        typer.Option(
            help="The annotated image or slide: its size and µm/px fill what the file "
            "lacks; DICOM outputs reference it (it must then be DICOM)."
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(help="µm per level-0 pixel when neither the file nor --image records it."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            help="Level-0 image size WxH when neither the file nor --image gives it "
            "(masks need it)."
        ),
    ] = None,
    label: Annotated[
        str, typer.Option(help="Class for objects without one (e.g. an instance mask's).")
    ] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output file.")
    ] = False,
) -> None:
    """Convert IN to OUT in level-0 pixel coordinates, recording µm/px where OUT can.

    Class names map through the vocabulary; what OUT's format cannot carry (holes, points,
    instance ids, ...) is said on stderr as a note.
    """
    from shindan.io.annotation_formats.convert import convert as run_convert
    from shindan.io.annotation_formats.convert import parse_size

    result = run_convert(
        source,
        target,
        source_format=from_format,
        target_format=to_format,
        vocabulary=vocabulary,
        strict=strict,
        image=image,
        mpp=mpp,
        size=parse_size(size) if size else None,
        label=label,
        force=force,
    )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(result.summary(target), err=True)


@app.command()
def formats() -> None:
    """List the formats: name, file suffixes, what each can carry."""
    from shindan.io.annotation_formats import CARRIES, CARRIES_META, list_formats

    for f in list_formats():
        carries = [c.replace("_", " ") for c in (*CARRIES, *CARRIES_META) if c in f.carries]
        suffixes = " ".join(f.suffixes) or "(--from/--to)"
        typer.echo(f"{f.name:14s} {suffixes:22s} {f.description}; carries: {', '.join(carries)}")


@app.command("vocabulary")
def show_vocabulary() -> None:
    """Print the built-in class vocabulary as JSON (a starting point for --vocabulary)."""
    from shindan.io.annotation_formats import default_vocabulary

    typer.echo(json.dumps(default_vocabulary().to_json(), indent=1))
