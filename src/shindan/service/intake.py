"""Intake of ``shindan deid`` exports: manifest first, files in resumable chunks, then the
check; a clean export is stored under its cases, anything else is refused with the reason.

The steps (each an API route):

1. :func:`open_upload` takes the export's ``manifest.json``. Every path must be one that
   ``shindan deid`` writes (no ``..``, no absolute or hostile names), every file has a SHA-256
   and a size, the export's site is the caller's. Files whose content the site stores already
   are marked duplicates and need not be sent. Sending the same manifest again returns the
   same upload, so an interrupted upload resumes where it stopped.
2. :func:`write_chunk` appends bytes at the offset the upload has reached (any other offset
   is refused with the expected one); a complete file must match its SHA-256, else it is
   discarded.
3. :func:`complete_upload` assembles the export in a staging folder and runs
   :func:`shindan.deid.check.check_export` on it. Findings refuse the whole upload (the reason
   lists them) and nothing is kept; a clean export's files move to the content store
   (``files/ab/abcdef...``, one copy per content) and become case files, the cases being
   created from the manifest's pseudonyms.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.cases import add_case, check_pseudonym
from shindan.service.models import Case, CaseFile, Upload, UploadFile, User, utcnow
from shindan.service.settings import Settings

MANIFEST_FORMAT = "shindan-deid-export"
SHA256 = re.compile(r"[0-9a-f]{64}")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MODALITY = re.compile(r"[A-Za-z0-9_-]{0,32}")


@dataclass(frozen=True)
class Limits:
    """Size limits of intake (bytes and counts)."""

    manifest_bytes: int = 16 * 2**20
    chunk_bytes: int = 64 * 2**20
    upload_bytes: int = 200 * 2**30
    files: int = 100_000
    # decompression-bomb guards (pixels declared by a header; see shindan.service.bombs)
    image_pixels: int = 2**29
    slide_pixels: int = 2**38
    pixels_per_byte: int = 20_000


class IntakeError(ServiceError):
    """An upload or a chunk is refused (the API answers 422)."""


class TooLarge(IntakeError):
    """Over a size limit (413)."""


class WrongOffset(IntakeError):
    """A chunk does not start where the file has reached (409); ``expected`` says where."""

    def __init__(self, message: str, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


class NotReady(IntakeError):
    """The upload cannot be completed (or changed) in its state (409)."""


def store_path(settings: Settings, sha256: str) -> Path:
    """Where the content with this SHA-256 is kept.

    Examples
    --------
    >>> from pathlib import Path
    >>> store_path(Settings(Path("/srv"), "sqlite://"), "ab" + "0" * 62).as_posix()
    '/srv/files/ab/ab00000000000000000000000000000000000000000000000000000000000000'
    """
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return settings.files / sha256[:2] / sha256


def _staging(settings: Settings, upload: Upload) -> Path:
    return settings.uploads / upload.public_id


def _part(settings: Settings, upload: Upload, entry: UploadFile) -> Path:
    return _staging(settings, upload) / "parts" / f"{entry.index:06d}"


def _safe_path(path: object, where: str) -> str:
    from shindan.deid.check import EXPORT_NAME

    if not isinstance(path, str) or not path or len(path) > 512:
        raise IntakeError(f"{where}: path must be a non-empty string")
    parts = PurePosixPath(path).parts
    bad = (
        path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in (".", "..") for p in parts)
        or path != PurePosixPath(*parts).as_posix()
    )
    if bad or not all(EXPORT_NAME.match(p) for p in parts) or parts[-1] == "manifest.json":
        raise IntakeError(f"{where}: {path[:80]!r} is not a file name shindan deid writes")
    return path


def _file_entry(i: int, item: object) -> dict:
    where = f"manifest files[{i}]"
    if not isinstance(item, dict):
        raise IntakeError(f"{where}: not an object")
    path = _safe_path(item.get("path"), where)
    sha = item.get("sha256")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise IntakeError(f"{where}: sha256 must be 64 lowercase hex digits")
    size = item.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise IntakeError(f"{where}: bytes must be a whole number >= 0")
    cases = item.get("case")
    if not isinstance(cases, str) or not cases:
        raise IntakeError(f"{where}: names no case")
    try:
        for pseudonym in cases.split(","):
            check_pseudonym(pseudonym)
    except ServiceError as exc:
        raise IntakeError(f"{where}: {exc}") from None
    if size == 0 and sha != EMPTY_SHA256:
        raise IntakeError(f"{where}: an empty file's sha256 is {EMPTY_SHA256}")
    modality = item.get("modality")
    if modality is not None and (not isinstance(modality, str) or not MODALITY.fullmatch(modality)):
        raise IntakeError(f"{where}: modality must be up to 32 letters, digits, '_' or '-'")
    return {"path": path, "sha256": sha, "size": size, "cases": cases, "modality": modality}


def parse_manifest(text: bytes, site: str, limits: Limits = Limits()) -> tuple[dict, list[dict]]:
    """Check a manifest's bytes; the manifest and its file entries.

    Examples
    --------
    >>> m = {"format": "shindan-deid-export", "version": 1, "site": "KYOTO", "held_back": [],
    ...      "files": [{"path": "KYOTO-AAAAAAAAAA/image-0001.png", "sha256": "0" * 64,
    ...                 "bytes": 3, "case": "KYOTO-AAAAAAAAAA", "modality": "XC"}]}
    >>> parse_manifest(json.dumps(m).encode(), "kyoto")[1][0]["size"]
    3
    """
    if len(text) > limits.manifest_bytes:
        raise TooLarge(f"manifest larger than {limits.manifest_bytes} bytes")
    if b"\x00" in text or b"\\u0000" in text:
        raise IntakeError("manifest contains NUL characters")
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntakeError(f"manifest is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IntakeError(f"not a shindan deid manifest (format must be {MANIFEST_FORMAT!r})")
    if manifest.get("version") != 1:
        raise IntakeError(f"manifest version {manifest.get('version')!r} is not supported (1)")
    export_site = manifest.get("site")
    if not isinstance(export_site, str) or export_site.lower() != site.lower():
        raise IntakeError(f"the export was made for site {export_site!r}, not {site!r}")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise IntakeError("manifest lists no files")
    if len(files) > limits.files:
        raise TooLarge(f"manifest lists {len(files)} files (at most {limits.files})")
    entries = [_file_entry(i, item) for i, item in enumerate(files)]
    paths = [e["path"] for e in entries]
    if len(set(paths)) != len(paths):
        raise IntakeError("manifest lists a path twice")
    # a path cannot be both a file and a folder of other files
    folders = {p.rsplit("/", 1)[0] for p in paths if "/" in p}
    if folders & set(paths):
        raise IntakeError("manifest lists a file where it lists a folder")
    total = sum(e["size"] for e in entries)
    if total > limits.upload_bytes:
        raise TooLarge(f"export of {total} bytes is over the limit of {limits.upload_bytes}")
    return manifest, entries


def _site_has(session: Session, site_id: int, sha256: str) -> bool:
    found = session.scalar(
        select(CaseFile.id)
        .join(Case, CaseFile.case_id == Case.id)
        .where(Case.site_id == site_id, CaseFile.sha256 == sha256)
        .limit(1)
    )
    return found is not None


def open_upload(
    session: Session,
    user: User,
    manifest_bytes: bytes,
    limits: Limits = Limits(),
    client: str | None = None,
) -> tuple[Upload, bool]:
    """Start an upload from a manifest, or find the one this manifest started before.

    Returns
    -------
    upload : Upload
    new : bool
        False when the same manifest (same SHA-256) was sent before by this site and that
        upload is still open or was stored.
    """
    manifest, entries = parse_manifest(manifest_bytes, user.site.name, limits)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    earlier = session.scalar(
        select(Upload)
        .where(
            Upload.site_id == user.site_id,
            Upload.manifest_sha256 == digest,
            Upload.state.in_(("open", "stored")),
        )
        .order_by(Upload.id.desc())
        .limit(1)
    )
    if earlier is not None:
        return earlier, False
    upload = Upload(
        public_id=uuid.uuid4().hex,
        site_id=user.site_id,
        user_id=user.id,
        manifest_sha256=digest,
        manifest=manifest,
        state="open",
        total_bytes=sum(e["size"] for e in entries),
    )
    for i, e in enumerate(entries):
        duplicate = _site_has(session, user.site_id, e["sha256"])
        upload.files.append(
            UploadFile(index=i, received=e["size"] if duplicate else 0, duplicate=duplicate, **e)
        )
    session.add(upload)
    session.flush()
    upload.site = user.site
    dupes = sum(f.duplicate for f in upload.files)
    audit.record(
        session, user, "upload.open", f"upload:{upload.public_id}",
        {"files": len(entries), "bytes": upload.total_bytes, "duplicates": dupes}, client,
    )  # fmt: skip
    return upload, True


def write_chunk(
    session: Session,
    settings: Settings,
    upload: Upload,
    index: int,
    offset: int,
    data: bytes,
    limits: Limits = Limits(),
) -> UploadFile:
    """Write ``data`` at ``offset`` of file ``index``; a complete file is checked by SHA-256.

    Raises
    ------
    WrongOffset
        ``offset`` is not where the file has reached.
    IntakeError
        The chunk runs past the file's size, or the complete file has another SHA-256
        (its bytes are discarded; send it again from offset 0).
    """
    if upload.state != "open":
        raise NotReady(f"upload is {upload.state}")
    if len(data) > limits.chunk_bytes:
        raise TooLarge(f"chunk larger than {limits.chunk_bytes} bytes")
    entry = next((f for f in upload.files if f.index == index), None)
    if entry is None:
        raise IntakeError(f"upload has no file {index}")
    if entry.duplicate:
        raise NotReady(f"file {index} is stored already (a duplicate): do not send it")
    if offset != entry.received:
        raise WrongOffset(f"file {index}: send from offset {entry.received}", entry.received)
    if offset + len(data) > entry.size:
        raise IntakeError(f"file {index}: {offset + len(data)} bytes is past its size {entry.size}")
    part = _part(settings, upload, entry)
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "r+b" if part.exists() else "wb") as f:
        f.seek(offset)
        f.write(data)
        f.truncate()
    entry.received = offset + len(data)
    if entry.received == entry.size and _sha256_of(part) != entry.sha256:
        part.unlink()
        entry.received = 0
        session.commit()
        raise IntakeError(
            f"file {index} ({entry.path}): SHA-256 differs from the manifest; sent again"
        )
    return entry


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def complete_upload(
    session: Session,
    settings: Settings,
    upload: Upload,
    user: User,
    client: str | None = None,
    limits: Limits = Limits(),
) -> Upload:
    """Check the complete export and store it, or refuse it with the findings (nothing kept).

    Images whose headers declare too many pixels are refused before anything decodes them.
    """
    from shindan.deid.check import check_export
    from shindan.service.bombs import bomb_problem

    if upload.state != "open":
        return upload
    missing = [f.index for f in upload.files if not f.duplicate and f.received < f.size]
    if missing:
        raise NotReady(f"{len(missing)} file(s) not complete yet (first: {missing[0]})")
    staging = _staging(settings, upload)
    export = staging / "export"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    (export / "manifest.json").write_text(
        json.dumps(upload.manifest, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    for entry in upload.files:
        if entry.duplicate:
            continue
        target = export / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        part = _part(settings, upload, entry)
        if not part.exists():  # an empty file never got a chunk
            part.parent.mkdir(parents=True, exist_ok=True)
            part.touch()
        os.link(part, target)
    bombs = [
        bomb_problem(
            export / e.path,
            e.path,
            limits.image_pixels,
            limits.slide_pixels,
            limits.pixels_per_byte,
        )
        for e in upload.files
        if not e.duplicate
    ]
    findings = [f"decompression-bomb guard: {b}" for b in bombs if b]
    try:
        # (a bomb is never handed to the check, which decodes images)
        findings = findings or [str(f) for f in check_export(export)]
    except Exception as exc:  # noqa: BLE001 - an unreadable export is refused, not a crash
        findings = [f"the check could not read the export ({type(exc).__name__}: {exc})"[:300]]
    if findings:
        shown = "; ".join(findings[:5])
        more = f" (+{len(findings) - 5} more)" if len(findings) > 5 else ""
        upload.state = "refused"
        checker = "intake" if any(bombs) else "deid check"
        upload.reason = f"{checker} found {len(findings)} problem(s): {shown}{more}"
        upload.finished_at = utcnow()
        shutil.rmtree(staging, ignore_errors=True)
        audit.record(
            session, user, "upload.refuse", f"upload:{upload.public_id}",
            {"findings": len(findings)}, client,
        )  # fmt: skip
        return upload
    stored = 0
    for entry in upload.files:
        for pseudonym in entry.cases.split(","):
            case = session.scalar(
                select(Case).where(Case.site_id == upload.site_id, Case.pseudonym == pseudonym)
            ) or add_case(session, upload.site, pseudonym, user, client)
            known = session.scalar(
                select(CaseFile.id).where(
                    CaseFile.case_id == case.id, CaseFile.sha256 == entry.sha256
                )
            )
            if known is not None:
                continue
            session.add(
                CaseFile(
                    case_id=case.id,
                    sha256=entry.sha256,
                    size=entry.size,
                    path=entry.path,
                    modality=entry.modality,
                    upload_id=upload.id,
                )
            )
            stored += 1
        if not entry.duplicate:
            target = store_path(settings, entry.sha256)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(_part(settings, upload, entry), target)
    upload.state = "stored"
    upload.finished_at = utcnow()
    session.flush()
    shutil.rmtree(staging, ignore_errors=True)
    audit.record(
        session, user, "upload.store", f"upload:{upload.public_id}",
        {"case_files": stored}, client,
    )  # fmt: skip
    return upload


def prune_uploads(
    session: Session, settings: Settings, older_than: timedelta, actor: User | str = "admin-cli"
) -> int:
    """End open uploads started more than ``older_than`` ago: refused as abandoned, their
    received bytes deleted. The number ended."""
    cutoff = utcnow() - older_than
    stale = [
        u
        for u in session.scalars(select(Upload).where(Upload.state == "open"))
        if (u.created_at if u.created_at.tzinfo else u.created_at.replace(tzinfo=UTC)) < cutoff
    ]
    for upload in stale:
        upload.state = "refused"
        upload.reason = f"abandoned: not completed within {older_than}"
        upload.finished_at = utcnow()
        shutil.rmtree(_staging(settings, upload), ignore_errors=True)
        audit.record(session, actor, "upload.prune", f"upload:{upload.public_id}")
    return len(stale)
