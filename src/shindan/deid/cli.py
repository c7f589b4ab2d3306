"""``shindan deid ...``: export de-identified data, check an export, look up a pseudonym.

``shindan deid INPUT...`` is the export itself; ``check`` and ``lookup`` are sub-commands.
A click group that routes any first argument that is not a sub-command to ``export`` lets the
three forms live under one name (``shindan deid export INPUT...`` works too, e.g. for an
input literally named ``check``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

HELP = """De-identify DICOM, whole-slide images and plain images for export from a hospital.

\b
shindan deid INPUT... --out DIR --site SITE --link-table FILE --key-file KEY
  de-identify (short for 'shindan deid export INPUT...'); DIR/manifest.json
  lists every file (path, sha256, case, study, modality, profile) and what
  was held back; the encrypted linkage table (pseudonym -> identifiers) is
  written outside DIR; KEY is created with a new random secret when missing
  (keep it safe: it re-identifies, and pseudonyms depend on it)
shindan deid check DIR [--link-table FILE --key-file KEY]
  scan an export for identifiers: exit 0 clean, 1 with one finding per line
shindan deid lookup PSEUDONYM --link-table FILE --key-file KEY
  print the identifiers behind a pseudonym (needs the key)

See 'shindan deid export --help' for the profile options.
"""


class _DefaultToExport(TyperGroup):
    """A group whose first argument, when not a sub-command or help, starts ``export``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["export", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultToExport, help=HELP, no_args_is_help=True)

LinkTable = Annotated[
    Path,
    typer.Option(
        "--link-table",
        help="The encrypted linkage table (pseudonym -> identifiers); never inside --out.",
    ),
]
KeyFile = Annotated[
    Path,
    typer.Option(
        "--key-file",
        help="The site's key file (its secret keys pseudonyms, UIDs, date shifts and the "
        "table's encryption).",
    ),
]


@app.command()
def export(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT",
            help="DICOM files or folders (DICOMDIR file sets included), whole-slide TIFFs "
            "(SVS, NDPI, OME-TIFF), plain images (JPEG, PNG, TIFF, BMP). Never modified.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The export folder (written whole, atomically).")
    ],
    site: Annotated[str, typer.Option("--site", help="Site code: the prefix of every pseudonym.")],
    link_table: LinkTable,
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="The site's key file; created with a new random secret when missing (keep "
            "it: without it the table cannot be read and pseudonyms change).",
        ),
    ],
    retain_dates: Annotated[
        bool,
        typer.Option(
            help="Annex E: retain longitudinal temporal information with modified dates (every "
            "date of a patient moves back by the same keyed number of days); "
            "--no-retain-dates removes dates.",
        ),
    ] = True,
    retain_patient_characteristics: Annotated[
        bool, typer.Option(help="Annex E: keep age, sex, size, weight and the like.")
    ] = True,
    retain_device_identity: Annotated[
        bool, typer.Option(help="Annex E: keep device model, serial number, station name.")
    ] = True,
    clean_descriptors: Annotated[
        bool,
        typer.Option(
            help="Annex E: keep free-text descriptions that hold no identifier, date or long "
            "number (--no-clean-descriptors removes them all).",
        ),
    ] = True,
    keep_private: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-private",
            help="A private tag to keep, 'gggg,eeee' (xx for the block), optionally "
            "'CREATOR/gggg,xxee'; repeat. Every other private tag is removed.",
        ),
    ] = None,
    patient_map: Annotated[
        Path | None,
        typer.Option(
            help="CSV with columns path,patient_id: the patient of each slide or plain image "
            "(default: the name of the INPUT folder it is in, or a file's own stem).",
        ),
    ] = None,
    mask_images: Annotated[
        bool,
        typer.Option(
            help="Mask burned-in text in plain images too (screenshots, photos of labels); "
            "--no-mask-images skips their OCR. DICOM images that may carry text (ultrasound, "
            "secondary capture, Burned In Annotation YES) always are.",
        ),
    ] = True,
    ocr: Annotated[
        bool,
        typer.Option(
            help="Find burned-in text with Tesseract (English and Japanese); --no-ocr masks "
            "only the --regions and holds back images without configured regions.",
        ),
    ] = True,
    regions: Annotated[
        Path | None,
        typer.Option(help="JSON/TOML rules: regions to mask per manufacturer/model."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress on stderr.")] = False,
) -> None:
    """De-identify INPUT... into a new --out folder; pseudonyms go to the encrypted --link-table.

    Writes --out/manifest.json (every file with its sha256, case, study, modality,
    profile). Files that cannot be cleaned with confidence are held back and listed. The
    finished export is checked like 'shindan deid check'; anything found fails it and
    nothing is written."""
    from shindan.deid.export import export as run_export
    from shindan.deid.profile import Profile

    profile = Profile(
        retain_dates=retain_dates,
        retain_patient_characteristics=retain_patient_characteristics,
        retain_device_identity=retain_device_identity,
        clean_descriptors=clean_descriptors,
        private_allow=tuple(keep_private or ()),
    )
    replacing = out.is_dir() and any(out.iterdir())  # only a previous export gets past checks
    r = run_export(
        inputs,
        out,
        site,
        link_table,
        key_file,
        profile=profile,
        patient_map=patient_map,
        mask_images=mask_images,
        ocr=ocr,
        regions=regions,
        progress=not quiet,
    )
    if replacing:
        print(f"deid: the previous export in {r.out} was replaced", file=sys.stderr)
    patients = "patient" if r.cases == 1 else "patients"
    print(
        f"deid: {r.files} files of {r.cases} {patients} written to {r.out} in {r.seconds:.1f} s; "
        f"{len(r.held_back)} held back",
        file=sys.stderr,
    )
    for label, src, reason in r.held_back:
        print(f"  {label} {src}: {reason}", file=sys.stderr)


@app.command()
def check(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="An export folder ('shindan deid --out').")
    ],
    link_table: Annotated[
        Path | None,
        typer.Option("--link-table", help="The linkage table: its identifiers are searched for."),
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="The key file of the linkage table.")
    ] = None,
) -> None:
    """Scan an export for identifiers: exit 1 with one finding per line, 0 when clean.

    Looks at every DICOM element (private, nested), TIFF tag, XML, PNG/JPEG metadata
    and file name, plus a byte search of every file for the linkage table's values;
    also phone numbers, e-mail addresses, '氏名'/MRN-like labels and dates in free
    text. Prints one finding per line (file: where: what); exit 1 if any, 0 when clean."""
    from shindan.deid.check import check_export, known_from_table
    from shindan.deid.linkage import load_key, load_table
    from shindan.errors import InputError

    if (link_table is None) != (key_file is None):
        raise InputError("--link-table and --key-file go together")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file; give the export folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    known = []
    if link_table is not None and key_file is not None:
        secret = load_key(key_file)
        known = known_from_table(load_table(link_table, secret, must_exist=True), secret)
    findings = check_export(folder, known)
    for f in findings:
        print(f)
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    if findings:
        print(f"deid check: {len(findings)} findings in {n} files", file=sys.stderr)
        raise typer.Exit(1)
    print(f"deid check: clean ({n} files)", file=sys.stderr)


@app.command()
def lookup(
    pseudonym: Annotated[
        str, typer.Argument(metavar="PSEUDONYM", help="A patient pseudonym, e.g. KYOTO-ABCDEFGHIJ.")
    ],
    link_table: LinkTable,
    key_file: KeyFile,
) -> None:
    """Print the identifiers behind a pseudonym (needs the site's key file).

    JSON: patient ID, every identifying value recorded, first and last export."""
    import json

    from shindan.deid.linkage import load_key, load_table
    from shindan.deid.linkage import lookup as find

    row = find(load_table(link_table, load_key(key_file), must_exist=True), pseudonym)
    print(json.dumps(vars(row), indent=2, ensure_ascii=False))
