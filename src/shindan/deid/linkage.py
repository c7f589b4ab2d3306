"""The linkage table: pseudonym ↔ the patient's original identifiers, encrypted, kept at home.

One file, written beside (never inside) an export: a header line and a Fernet token
(AES-128-CBC with HMAC-SHA256, from ``cryptography``) whose key derives from the site secret
(:func:`shindan.deid.secret.derive` with purpose ``"linkage"``). A wrong key file is detected
by the token's authentication and refused with a one-line error; the table is then left as it
was. Every export merges its rows into the existing table (the same patient keeps the same
pseudonym, earlier rows are never dropped) and replaces the file atomically.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shindan.deid.records import Identifiers
from shindan.deid.secret import derive
from shindan.errors import InputError
from shindan.util.atomic import atomic_path

MAGIC = b"shindan-deid-linkage v1\n"
__all__ = [
    "LinkageRow",
    "LinkageTable",
    "check_outside",
    "check_table_writable",
    "load_key",
    "load_table",
    "lookup",
    "save_table",
]


def _fernet(secret: bytes):
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(derive(secret, "linkage")))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LinkageRow:
    """One patient: the pseudonym, the original patient ID and every identifying value met.

    ``identifiers`` maps what a value was (``PatientName``, ``svs.User``, ...) to every distinct
    value met under that name.
    """

    pseudonym: str
    site: str
    patient_id: str
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    first_export: str = ""
    last_export: str = ""

    def add(self, identifiers: Identifiers, when: str) -> None:
        """Merge the values of one exported file (order kept, duplicates dropped)."""
        for key, value in identifiers.values.items():
            value = str(value)
            if not value.strip():
                continue
            base = key.split("#")[0]  # "PatientName#2" from a DICOMDIR: same kind of value
            values = self.identifiers.setdefault(base, [])
            if value not in values:
                values.append(value)
        self.first_export = min(filter(None, (self.first_export, when)), default=when)
        self.last_export = max(self.last_export, when)

    def values(self) -> list[str]:
        """The patient ID and every identifying value, each once."""
        out = [self.patient_id]
        for values in self.identifiers.values():
            out.extend(v for v in values if v not in out)
        return [v for v in out if v.strip()]


@dataclass
class LinkageTable:
    """Rows by pseudonym, and a log of the exports made (export folder, counts, held back)."""

    rows: dict[str, LinkageRow] = field(default_factory=dict)
    exports: list[dict] = field(default_factory=list)

    def record(self, pseudonym: str, site: str, identifiers: Identifiers, when: str) -> None:
        """Add what one exported file carried to the patient's row (created when new)."""
        row = self.rows.get(pseudonym)
        if row is None:
            row = self.rows[pseudonym] = LinkageRow(pseudonym, site, identifiers.patient_id)
        elif row.patient_id != identifiers.patient_id and identifiers.patient_id:
            # a keyed 50-bit pseudonym shared by two patients: refuse rather than mix them up
            raise InputError(
                f"pseudonym {pseudonym} already belongs to another patient in the linkage "
                "table; use another --site code"
            )
        row.add(identifiers, when)

    def merge(self, other: LinkageTable) -> None:
        """Add ``other``'s rows and exports; rows of both are kept, values united."""
        for pseudonym, row in other.rows.items():
            mine = self.rows.get(pseudonym)
            if mine is None:
                self.rows[pseudonym] = row
                continue
            for key, values in row.identifiers.items():
                kept = mine.identifiers.setdefault(key, [])
                kept.extend(v for v in values if v not in kept)
            firsts = [t for t in (mine.first_export, row.first_export) if t]
            mine.first_export = min(firsts) if firsts else ""
            mine.last_export = max(mine.last_export, row.last_export)
        self.exports.extend(e for e in other.exports if e not in self.exports)

    def to_json(self) -> dict:
        return {
            "rows": [vars(r) for r in sorted(self.rows.values(), key=lambda r: r.pseudonym)],
            "exports": self.exports,
        }

    @classmethod
    def from_json(cls, data: dict) -> LinkageTable:
        rows = {r["pseudonym"]: LinkageRow(**r) for r in data.get("rows", [])}
        return cls(rows, list(data.get("exports", [])))


def _check_table_path(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --link-table must be a file")
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: not a regular file")


def load_table(path: str | Path, secret: bytes, *, must_exist: bool = False) -> LinkageTable:
    """Read and decrypt the linkage table at ``path`` (an empty table when it does not exist).

    Parameters
    ----------
    path : str or Path
        The table file.
    secret : bytes
        The site secret it was encrypted with.
    must_exist : bool
        A missing file is an error (lookup, check) instead of a new, empty table (export).

    Raises
    ------
    InputError
        Not a linkage table, or the key file is not the one the table was written with.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "link.table"
    >>> t = LinkageTable()
    >>> t.record("SITE-AAAAAAAAAA", "SITE", Identifiers("123", {"PatientName": "Doe^Jane"}), "t")
    >>> save_table(path, t, b"k" * 32)
    >>> load_table(path, b"k" * 32).rows["SITE-AAAAAAAAAA"].identifiers
    {'PatientName': ['Doe^Jane']}
    >>> load_table(path, b"x" * 32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shindan.errors.InputError: ...link.table: cannot be decrypted with this key file ...
    """
    from cryptography.fernet import InvalidToken

    path = Path(path)
    _check_table_path(path)
    if not path.exists():
        if must_exist:
            raise InputError(f"{path}: no such linkage table")
        return LinkageTable()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data.startswith(MAGIC):
        raise InputError(f"{path}: not a shindan linkage table")
    try:
        plain = _fernet(secret).decrypt(data[len(MAGIC) :].strip())
    except InvalidToken:
        raise InputError(
            f"{path}: cannot be decrypted with this key file (wrong --key-file?)"
        ) from None
    try:
        return LinkageTable.from_json(json.loads(plain))
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{path}: a damaged linkage table (its content does not parse)") from None


def check_table_writable(path: str | Path) -> None:
    """:class:`InputError` unless a linkage table may be written at ``path``: a missing file
    that can be created, or an existing linkage table (any other file is never replaced)."""
    from shindan.util.atomic import check_output_file

    path = Path(path)
    _check_table_path(path)
    if not path.exists():
        if not path.parent.is_dir():  # as for --key-file: never create folders for it
            raise InputError(f"--link-table {path}: no such folder {path.parent}")
        check_output_file(path)
        return
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise InputError(f"{path}: exists and is not a shindan linkage table; not replaced")


def save_table(path: str | Path, table: LinkageTable, secret: bytes) -> None:
    """Encrypt and write ``table`` to ``path`` atomically, merged with what the file holds
    now (another export may have added rows since it was read); mode 0600."""
    path = Path(path)
    with _locked_folder(path.parent):
        current = load_table(path, secret)
        current.merge(table)
        token = _fernet(secret).encrypt(json.dumps(current.to_json(), ensure_ascii=False).encode())
        with atomic_path(path) as tmp:
            tmp.write_bytes(MAGIC + token + b"\n")
            tmp.chmod(0o600)  # it re-identifies patients: owner only


@contextmanager
def _locked_folder(folder: Path) -> Iterator[None]:
    # Two exports finishing together must not each write the table they read (one's rows
    # would be lost): read-merge-write holds an exclusive lock on the table's folder, which
    # needs no extra file beside the table.
    fd = os.open(folder, os.O_RDONLY)  # Path.parent of a bare name is "."
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_outside(path: str | Path, folder: str | Path, option: str) -> None:
    """:class:`InputError` if ``path`` is ``folder`` or lies inside it (the linkage table and
    the key file must never be written into an export)."""
    p = Path(path).expanduser().resolve()
    f = Path(folder).expanduser().resolve()
    if p == f or f in p.parents:
        raise InputError(
            f"{option} {path}: is inside --out {folder}; the linkage table and key must stay "
            "outside the export"
        )


def now() -> str:
    """The current UTC time as recorded in the table (``YYYY-MM-DDTHH:MM:SSZ``)."""
    return _now()


def load_key(path: str | Path) -> bytes:
    """The site secret from an existing key file (lookup and check never create one)."""
    from shindan.deid.secret import load_or_create_secret

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such key file")
    return load_or_create_secret(path)


def lookup(table: LinkageTable, pseudonym: str) -> LinkageRow:
    """The row of ``pseudonym`` (a patient pseudonym as written in an export's manifest).

    Examples
    --------
    >>> t = LinkageTable()
    >>> t.record("SITE-AAAAAAAAAA", "SITE", Identifiers("123"), "t")
    >>> lookup(t, "SITE-AAAAAAAAAA").patient_id
    '123'
    """
    pseudonym = pseudonym.strip()
    row = table.rows.get(pseudonym)
    if row is None:
        raise InputError(f"{pseudonym}: not in this linkage table")
    return row
