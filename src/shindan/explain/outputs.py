"""What ``shindan explain`` writes, and the check of its ``--out`` (light: no torch)."""

from __future__ import annotations

from pathlib import Path

from shindan.util.atomic import check_can_be_folder, check_output_file

ATTENTION_COLUMNS = (
    "image",
    "label",
    "cam_in_mask",
    "mask_area_fraction",
    "probability",
    "true",
    "correct",
)


def is_summary_header(row: list[str]) -> bool:
    """Whether a CSV header row is the one ``attention_summary.csv`` starts with."""
    return row[:2] == ["class", "n_correct"]


def check_out(out: str | Path) -> None:
    """:class:`~shindan.errors.InputError` unless explain may write into the folder ``out``.

    ``out`` must be (or can become) a folder, and its ``attention.csv`` and
    ``attention_summary.csv``, when there, must be ones shindan wrote; heatmaps
    (``<image>_cam.png``) of the same name are replaced, other files are kept.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_out(d / "cams")  # a new folder: fine
    >>> (d / "attention.csv").write_text("my,notes\\n")
    9
    >>> check_out(d)
    Traceback (most recent call last):
    ...
    shindan.errors.InputError: .../attention.csv: exists and was not written by shindan; ...
    """
    out = Path(out)
    check_can_be_folder(out)
    check_output_file(out / "attention.csv", ATTENTION_COLUMNS, force_option=False)
    check_output_file(out / "attention_summary.csv", is_summary_header, force_option=False)
