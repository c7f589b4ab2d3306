"""``shindan deid INPUT... --out DIR``: de-identify DICOM, slides and plain images for export.

The export is built in a temporary folder beside ``--out`` and renamed only when complete and
checked: every input file is recognised by its content (DICOM with or without a DICOMDIR,
whole-slide TIFF, plain image), de-identified by its module (:mod:`.dicom`, :mod:`.slide`,
:mod:`.plain`), and named only from pseudonyms, kinds and counters::

    DIR/manifest.json
    DIR/<SITE-pseudonym>/<S-study or no-study>/<MODALITY>-00001.dcm
    DIR/<SITE-pseudonym>/slide-0002.svs, image-0003.jpg
    DIR/fileset-01/DICOMDIR, DIR/fileset-01/P0001/S0001/I000001   (a DICOMDIR and its files)

Files that cannot be made safe with confidence are held back: listed in the manifest under a
neutral label with the reason (their input paths go to the linkage table's export log and to
stderr, never into the export). :func:`shindan.deid.check.check_export` then scans the new
folder for every identifier met; anything found fails the export and leaves nothing. Only
then are the key file (when new), the linkage table and the folder written.

The patient of a DICOM file is its Patient ID. For slides and plain images it comes from
``--patient-map`` (CSV with ``path,patient_id``), else from the name of the INPUT folder the
file was found in (one folder per patient), else, for a file given directly, its file stem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shindan.deid.check import EXPORT_NAME, Known, check_export, known_from_table
from shindan.deid.linkage import (
    LinkageTable,
    check_outside,
    check_table_writable,
    load_table,
    now,
    save_table,
)
from shindan.deid.profile import Profile
from shindan.deid.pseudonyms import Pseudonymiser, check_site
from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.deid.secret import load_or_create_secret
from shindan.errors import InputError, ShindanError
from shindan.util.atomic import atomic_dir, check_replaceable

__all__ = ["ExportResult", "export", "sniff"]

MANIFEST_FORMAT = "shindan-deid-export"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


class ExportCheckFailed(ShindanError):
    """The finished export still holds identifiers: nothing is written."""


@dataclass
class ExportResult:
    """What an export wrote: the folder, counts, and the held-back inputs (label, path, why)."""

    out: Path
    files: int
    cases: int
    held_back: list[tuple[str, Path, str]] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- inputs


def sniff(path: Path) -> str:
    """The kind of an input file by its content: ``dicom``, ``dicomdir``, ``slide``,
    ``image`` or ``other``.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "notes.dcm"
    >>> _ = p.write_text("not an image")
    >>> sniff(p)
    'other'
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return "other"
    if head[128:132] == b"DICM":
        from pydicom.filereader import read_file_meta_info

        try:
            meta = read_file_meta_info(path)
            if str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
                return "dicomdir"
        except Exception:  # a broken meta header: the DICOM module holds it back with why
            pass
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "slide" if _is_slide(path) else "image"
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:2] == b"BM":
        return "image"
    # DICOM without the preamble (old files): a group 0002/0008 tag first
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00":
        return "dicom"
    return "dicom" if _parses_as_dicom(path) else "other"


def _parses_as_dicom(path: Path) -> bool:
    """A DICOM data set without preamble in another byte order or VR: pydicom reads it."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            return "SOPClassUID" in ds and "SOPInstanceUID" in ds
        except Exception:  # anything pydicom cannot parse is not DICOM here
            return False


def _is_slide(path: Path) -> bool:
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(path) as tif:
                flags = set(tif.flags)
                return bool(
                    flags & {"svs", "ndpi", "ome", "scn", "philips", "bif"}
                    or len(tif.pages) > 1
                    or tif.pages[0].is_tiled
                )
    except Exception:  # unreadable: the slide module holds it back with the reason
        return True


@dataclass
class _Input:
    src: Path
    kind: str
    root: Path | None  # the INPUT folder it was found in (None: given directly)


def _walk(inputs: Sequence[Path]) -> tuple[list[_Input], int]:
    """Every file under the inputs (sorted, hidden files skipped), with its kind."""
    found: dict[Path, _Input] = {}
    hidden = 0
    for item in inputs:
        if item.is_dir():
            for f in sorted(item.rglob("*")):
                rel = f.relative_to(item).parts
                if any(p.startswith(".") for p in rel):
                    hidden += f.is_file()
                    continue
                if f.is_file():
                    found.setdefault(f.resolve(), _Input(f, sniff(f), item))
        else:
            found.setdefault(item.resolve(), _Input(item, sniff(item), None))
    return list(found.values()), hidden


def _referenced_files(dicomdir: Path) -> list[Path]:
    """The files a DICOMDIR lists (those that exist), matched case-insensitively."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(dicomdir, force=True)
            records = list(ds.get("DirectoryRecordSequence", []))
        except Exception:
            return []
    out = []
    for record in records:
        if "ReferencedFileID" not in record:
            continue
        value = record.ReferencedFileID
        parts = [str(p) for p in value] if not isinstance(value, str) else [value]
        path = _find(dicomdir.parent, parts)
        if path is not None:
            out.append(path)
    return out


def _find(root: Path, parts: list[str]) -> Path | None:
    path = root
    for part in parts:
        part = part.strip()
        nxt = path / part
        if not nxt.exists() and path.is_dir():
            matches = [p for p in path.iterdir() if p.name.lower() == part.lower()]
            nxt = matches[0] if matches else nxt
        path = nxt
    return path if path.is_file() else None


def _read_patient_map(path: Path) -> dict[Path, str]:
    if not path.is_file():
        raise InputError(f"{path}: no such patient map (CSV with columns path,patient_id)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not rows or not {"path", "patient_id"} <= set(rows[0]):
        raise InputError(f"{path}: needs the columns path,patient_id")
    out = {}
    for i, row in enumerate(rows, start=2):
        p, pid = (row.get("path") or "").strip(), (row.get("patient_id") or "").strip()
        if not p or not pid:
            raise InputError(f"{path}: line {i}: empty path or patient_id")
        f = Path(p) if Path(p).is_absolute() else path.parent / p
        out[f.resolve()] = pid
    return out


def _patient_of(item: _Input, patient_map: dict[Path, str]) -> str:
    pid = patient_map.get(item.src.resolve())
    if pid:
        return pid
    if item.root is not None:
        return item.root.resolve().name
    return item.src.name.split(".")[0]


def _one_patient_notes(items: Sequence[_Input], patient_map: dict[Path, str]) -> list[str]:
    """Notes for INPUT folders whose slides/images sit in several subfolders: they all go to
    one patient (the folder's name), wrong when the subfolders are patients (``photos/P1``,
    ``photos/P2`` given as ``photos``)."""
    subs: dict[Path, set[str]] = {}
    for item in items:
        if item.kind not in ("slide", "image") or item.root is None:
            continue
        rel = item.src.relative_to(item.root).parts
        if len(rel) > 1 and item.src.resolve() not in patient_map:
            subs.setdefault(item.root, set()).add(rel[0])
    notes = []
    for root, names in subs.items():
        if len(names) > 1:
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            notes.append(
                f"deid: note: {root}: the slides/images of its {len(names)} subfolders "
                f"({shown}) all go to one patient, {root.resolve().name!r}; if they are "
                "different patients, give each subfolder as its own INPUT or a --patient-map"
            )
    return notes


# ----------------------------------------------------------------------------- checks


def _previous_export(out: Path) -> bool:
    try:
        data = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        return isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT
    except (OSError, ValueError):
        return False


def _owned(out: Path):
    # a previous export may be replaced (its own names only); any other folder must be empty
    if out.is_dir() and _previous_export(out):
        return lambda name: bool(EXPORT_NAME.match(name))
    return ()


def _check_paths(inputs: Sequence[Path], out: Path, link_table: Path, key_file: Path) -> None:
    check_replaceable(out, _owned(out))
    check_outside(link_table, out, "--link-table")
    check_outside(key_file, out, "--key-file")
    if link_table.expanduser().resolve() == key_file.expanduser().resolve():
        raise InputError("--link-table and --key-file must be two different files")
    check_table_writable(link_table)
    if key_file.is_dir():
        raise InputError(f"--key-file {key_file}: is a folder")
    if not key_file.exists() and not key_file.parent.is_dir():
        raise InputError(f"--key-file {key_file}: no such folder {key_file.parent}")
    resolved_out = out.expanduser().resolve()
    for item in inputs:
        if not item.exists():
            raise InputError(f"{item}: no such file or folder")
        r = item.resolve()
        if r == resolved_out or resolved_out in r.parents:
            raise InputError(f"{item}: is inside --out {out}; export elsewhere")
        if item.is_dir() and r in resolved_out.parents:
            raise InputError(f"--out {out}: is inside the input folder {item}; export elsewhere")
        for option, path in (("--link-table", link_table), ("--key-file", key_file)):
            if path.expanduser().resolve() == r:
                raise InputError(f"{option} {path}: is an input")


class _NewKey:
    """A key file made only when the export succeeds: the secret is created in a temporary
    file beside it and linked to its name at the end (never replacing another's key)."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self.tmp: Path | None = None
        self.linked = False

    def secret(self) -> bytes:
        if self.key_file.exists():
            return load_or_create_secret(self.key_file)
        self.tmp = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}.new")
        self.tmp.unlink(missing_ok=True)
        return load_or_create_secret(self.tmp)

    def commit(self) -> None:
        if self.tmp is None:
            return
        try:
            os.link(self.tmp, self.key_file)
        except FileExistsError:
            raise InputError(
                f"--key-file {self.key_file}: was created by another process meanwhile; run again"
            ) from None
        self.linked = True

    def discard(self, failed: bool) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            if failed and self.linked:
                self.key_file.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- export


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _slide_suffix(src: Path) -> str:
    name = src.name.lower()
    for s in (".ome.tiff", ".ome.tif", ".svs", ".ndpi", ".tiff", ".tif"):
        if name.endswith(s):
            return s
    return ".tiff"


def _image_suffix(src: Path) -> str:
    with open(src, "rb") as fh:
        head = fh.read(8)
    if head[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if head[:2] == b"BM":
        return ".bmp"
    return ".tif"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


class _Run:
    def __init__(self, stage: Path, pseudo: Pseudonymiser, profile: Profile, masker, mask_images):
        self.stage = stage
        self.work = stage / ".work"
        self.work.mkdir()
        self.pseudo = pseudo
        self.profile = profile
        self.masker = masker
        self.mask_images = mask_images
        self.exported: list[Exported] = []
        self.held: list[tuple[Path, str, str]] = []  # input, kind, reason
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _result(self, src: Path, kind: str, r: Exported | HeldBack) -> Exported | None:
        if isinstance(r, HeldBack):
            self.held.append((src, kind, r.reason))
            return None
        return r

    def _guarded(self, src: Path, kind: str, fn) -> Exported | None:
        try:
            r = fn()
        except ShindanError:
            raise
        except Exception as exc:  # a hostile file the module did not expect: never exported
            r = HeldBack(src, f"cannot be de-identified ({_one_line(exc)})")
        return self._result(src, kind, r)

    def dicom(self, src: Path) -> Exported | None:
        from shindan.deid.dicom import deidentify_dicom

        n = self._next()
        tmp = self.work / f"{n:06d}.dcm"
        r = self._guarded(
            src, "dicom", lambda: deidentify_dicom(src, tmp, self.pseudo, self.profile, self.masker)
        )
        if r is None:
            return None
        modality = "".join(c for c in r.modality.upper() if c.isalnum())[:16] or "DICOM"
        final = self.stage / r.case / (r.study or "no-study") / f"{modality}-{n:05d}.dcm"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        r = _moved(r, final)
        self.exported.append(r)
        return r

    def fileset(self, dicomdir: Path, members: list[Path], index: int) -> None:
        from shindan.deid.dicom import deidentify_dicom, deidentify_dicomdir

        folder = self.stage / f"fileset-{index:02d}"
        patients: dict[str, int] = {}
        studies: dict[tuple[str, str], int] = {}
        file_map: dict[Path, Path] = {}
        for i, src in enumerate(members, start=1):
            n = self._next()
            tmp = self.work / f"{n:06d}.dcm"
            r = self._guarded(
                src,
                "dicom",
                lambda src=src, tmp=tmp: deidentify_dicom(
                    src, tmp, self.pseudo, self.profile, self.masker
                ),
            )
            if r is None:
                continue
            p = patients.setdefault(r.case, len(patients) + 1)
            s = studies.setdefault((r.case, r.study), len(studies) + 1)
            final = folder / f"P{p:04d}" / f"S{s:04d}" / f"I{i:06d}"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            file_map[src] = final
            self.exported.append(_moved(r, final))
        if not file_map:
            why = (
                "none of the files it lists was exported"
                if members  # else: it lists none, or only files an earlier DICOMDIR brought
                else "it lists no files other than those of an earlier DICOMDIR (or none)"
            )
            self.held.append((dicomdir, "dicomdir", why))
            return
        r = self._guarded(
            dicomdir,
            "dicomdir",
            lambda: deidentify_dicomdir(
                dicomdir, folder / "DICOMDIR", self.pseudo, self.profile, file_map
            ),
        )
        if r is not None:
            self.exported.append(r)

    def slide(self, src: Path, pid: str) -> None:
        from shindan.deid.slide import deidentify_slide

        case = self.pseudo.patient(pid)
        dst = self.stage / case / f"slide-{self._next():04d}{_slide_suffix(src)}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        r = self._guarded(
            src, "slide", lambda: deidentify_slide(src, dst, self.pseudo, case, Identifiers(pid))
        )
        if r is not None:
            self.exported.append(r)
        _prune(dst.parent)

    def image(self, src: Path, pid: str) -> None:
        from shindan.deid.plain import deidentify_image

        case = self.pseudo.patient(pid)
        dst = self.stage / case / f"image-{self._next():04d}{_image_suffix(src)}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        r = self._guarded(
            src,
            "image",
            lambda: deidentify_image(
                src, dst, self.pseudo, case, Identifiers(pid), mask=self.mask_images
            ),
        )
        if r is not None:
            self.exported.append(r)
        _prune(dst.parent)


def _moved(r: Exported, path: Path) -> Exported:
    from dataclasses import replace

    return replace(r, path=path)


def _prune(folder: Path) -> None:
    """Remove a case folder left empty by a held-back file."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _sanitise(reason: str, src: Path, inputs: Sequence[Path], stage: Path) -> str:
    """A held-back reason without input or staging paths or quoted values (a reader's error
    message may quote the value it choked on): it goes into the export."""
    for text in sorted(
        {str(src), str(src.resolve()), str(stage), *(str(i) for i in inputs), src.name},
        key=len,
        reverse=True,
    ):
        if len(text) >= 3:
            reason = reason.replace(text, "<input>")
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    return " ".join(reason.split())


def _known(
    table: LinkageTable, secret: bytes, cases: set[str], extra: list[Exported]
) -> list[Known]:
    out = known_from_table(table, secret, cases)
    for r in extra:  # multi-patient DICOMDIRs: their values, searched everywhere
        first = r.case.split(",")[0] or None
        out.extend(Known(k, v, first) for k, v in r.identifiers.values.items())
    return out


def export(
    inputs: Sequence[str | Path],
    out: str | Path,
    site: str,
    link_table: str | Path,
    key_file: str | Path,
    *,
    profile: Profile | None = None,
    patient_map: str | Path | None = None,
    mask_images: bool = True,
    ocr: bool = True,
    regions: str | Path | None = None,
    progress: bool = True,
) -> ExportResult:
    """De-identify ``inputs`` into the new folder ``out``; record pseudonyms in the table.

    Parameters
    ----------
    inputs : sequence of path
        Files and folders: DICOM files (DICOMDIR file sets included), whole-slide TIFFs
        (SVS, NDPI, OME-TIFF, tiled TIFF) and plain images (JPEG, PNG, TIFF, BMP). Never
        modified.
    out : path
        The export folder (created; a previous export there is replaced, any other existing
        folder must be empty).
    site : str
        Site code, the prefix of every pseudonym.
    link_table : path
        The encrypted linkage table (created, or merged into); never inside ``out``.
    key_file : path
        The site secret (created with a new random secret when missing); never inside ``out``.
    profile : Profile, optional
        PS3.15 Annex E options for DICOM (default: every option on, see :class:`Profile`).
    patient_map : path, optional
        CSV ``path,patient_id`` naming the patient of slides and plain images.
    mask_images : bool
        Mask burned-in text in plain images too (default; DICOM images that may carry text
        always are). False skips their OCR, and the export says so.
    ocr : bool
        Find burned-in text with Tesseract; without it only configured ``regions`` are masked
        (and an image without configured regions is held back).
    regions : path, optional
        JSON/TOML region rules per manufacturer/model
        (:func:`shindan.deid.burned_in.load_region_rules`).
    progress : bool
        One line per file on stderr.

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError
        Bad paths or options (before any work), a wrong key file for the table.
    ExportCheckFailed
        The finished export still held identifiers (nothing is written).

    Examples
    --------
    >>> r = export(["dicom/"], "export", "KYOTO", "link.table", "site.key")  # doctest: +SKIP
    >>> r.files, len(r.held_back)  # doctest: +SKIP
    (12, 0)
    """
    t0 = time.perf_counter()
    inputs = [Path(i) for i in inputs]
    out, link_table, key_file = Path(out), Path(link_table), Path(key_file)
    if not inputs:
        raise InputError("no input files given")
    check_site(site)
    _check_paths(inputs, out, link_table, key_file)
    profile = profile or Profile()
    pmap = _read_patient_map(Path(patient_map)) if patient_map is not None else {}
    from shindan.deid.burned_in import dicom_masker, load_region_rules

    rules = load_region_rules(regions) if regions is not None else []
    masker = dicom_masker(rules, ocr=ocr)
    key = _NewKey(key_file)
    failed = True
    try:
        secret = key.secret()
        table = load_table(link_table, secret)  # a wrong key stops here, before any work
        pseudo = Pseudonymiser(secret, site)
        result = _export(inputs, out, site, pseudo, profile, pmap, masker, mask_images, progress)
        with atomic_dir(out, _owned(out)) as stage:
            run, manifest = result(stage)
            if not run.exported:  # nothing could be made safe: an error, not an empty export
                src, _, reason = run.held[0]
                more = f" (and {len(run.held) - 1} more held back)" if len(run.held) > 1 else ""
                raise InputError(f"nothing to export: {src}: {reason}{more}")
            when = now()
            for r in run.exported:
                if "," not in r.case and r.case:
                    table.record(r.case, site, r.identifiers, when)
            cases = {c for r in run.exported for c in r.case.split(",") if c}
            multi = [r for r in run.exported if "," in r.case]
            if progress:
                print(f"deid: checking {len(run.exported)} files for identifiers", file=sys.stderr)
            findings = check_export(stage, _known(table, secret, cases, multi))
            if findings:
                shown = "; ".join(str(f) for f in findings[:3])
                more = f" (and {len(findings) - 3} more)" if len(findings) > 3 else ""
                raise ExportCheckFailed(
                    f"the export still holds identifiers, nothing was written: {shown}{more}"
                )
            table.exports.append(
                {
                    "time": when,
                    "out": str(out.resolve()),
                    "site": site,
                    "files": len(manifest["files"]),
                    "cases": sorted(cases),
                    "held_back": [
                        {"path": h["path"], "input": str(src.resolve()), "reason": reason}
                        for h, (src, _, reason) in zip(manifest["held_back"], run.held, strict=True)
                    ],
                }
            )
            key.commit()
            save_table(link_table, table, secret)
        failed = False
    finally:
        key.discard(failed)
    held = [
        (h["path"], src, reason)
        for h, (src, _, reason) in zip(manifest["held_back"], run.held, strict=True)
    ]
    return ExportResult(out, len(manifest["files"]), len(cases), held, time.perf_counter() - t0)


def _export(inputs, out, site, pseudo, profile, pmap, masker, mask_images, progress):
    """Walk the inputs now (errors before any writing); return the writer for the stage."""
    items, hidden = _walk(inputs)
    if not items:
        raise InputError(
            "no input files found" + (f" ({hidden} hidden files skipped)" if hidden else "")
        )
    in_fileset: dict[Path, Path] = {}
    filesets: list[tuple[Path, list[Path]]] = []
    for item in items:
        if item.kind == "dicomdir":
            members = [m for m in _referenced_files(item.src) if m.resolve() not in in_fileset]
            for m in members:
                in_fileset[m.resolve()] = item.src
            filesets.append((item.src, members))
    if progress and hidden:
        print(f"deid: {hidden} hidden file(s) skipped", file=sys.stderr)
    if progress:
        for note in _one_patient_notes(items, pmap):
            print(note, file=sys.stderr)
        images = sum(item.kind == "image" for item in items)
        if images and not mask_images:  # a screenshot can show a name in its pixels
            print(
                f"deid: note: {images} plain image(s) not searched for burned-in text "
                "(screenshots, photos of labels: --no-mask-images was given)",
                file=sys.stderr,
            )

    from shindan import __version__

    def write(stage: Path):
        run = _Run(stage, pseudo, profile, masker, mask_images)
        done = 0

        def tell(src: Path, kind: str) -> None:
            nonlocal done
            done += 1
            if progress:
                print(f"deid [{done}] {kind} {src}", file=sys.stderr)

        for k, (dicomdir, members) in enumerate(filesets, start=1):
            for m in members:
                tell(m, "dicom")
            tell(dicomdir, "dicomdir")
            run.fileset(dicomdir, members, k)
        for item in items:
            if item.kind == "dicomdir" or item.src.resolve() in in_fileset:
                continue
            tell(item.src, item.kind)
            if item.kind == "dicom":
                run.dicom(item.src)
            elif item.kind == "slide":
                run.slide(item.src, _patient_of(item, pmap))
            elif item.kind == "image":
                run.image(item.src, _patient_of(item, pmap))
            else:
                run.held.append(
                    (item.src, "other", "not a DICOM file, whole-slide TIFF or plain image")
                )
        shutil.rmtree(run.work)
        files = []
        for r in run.exported:
            path = Path(r.path)
            files.append(
                {
                    "path": path.relative_to(stage).as_posix(),
                    "sha256": _sha256(path),
                    "bytes": path.stat().st_size,
                    "case": r.case,
                    "study": r.study,
                    "modality": r.modality,
                    "profile": r.profile,
                    "masked_regions": r.masked_regions,
                }
            )
        held_back = [
            {
                "path": f"held-back-{i:04d}",
                "kind": kind,
                "reason": _sanitise(reason, src, inputs, stage),
            }
            for i, (src, kind, reason) in enumerate(run.held, start=1)
        ]
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "shindan": __version__,
            "site": site,
            "profile": {
                "dicom": profile.describe(),
                "retain_dates": profile.retain_dates,
                "retain_patient_characteristics": profile.retain_patient_characteristics,
                "retain_device_identity": profile.retain_device_identity,
                "clean_descriptors": profile.clean_descriptors,
                "private_allow": list(profile.private_allow),
                "mask_plain_images": mask_images,
            },
            "cases": sorted({c for r in run.exported for c in r.case.split(",") if c}),
            "files": files,
            "held_back": held_back,
        }
        (stage / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return run, manifest

    return write
