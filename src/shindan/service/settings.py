"""The service folder (``--data DIR``) and the database it is tied to.

A service folder holds ``service.json`` (what marks it as ours and records a ``--db`` URL
given once, so later commands need not repeat it), the embedded SQLite database
``shindan.db`` when no URL is given, and the case files under ``files/``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shindan.errors import ServiceError

MARKER = "service.json"
SQLITE_NAME = "shindan.db"
FORMAT = "shindan-service"


@dataclass(frozen=True)
class Settings:
    """Where a service keeps its files and which database it uses.

    Attributes
    ----------
    data : Path
        The service folder.
    db_url : str
        SQLAlchemy URL (``sqlite:///DATA/shindan.db`` or ``postgresql+psycopg://...``).
    created : bool
        Whether the folder was made by this call (removed again when its database fails).
    """

    data: Path
    db_url: str
    created: bool = False

    @property
    def files(self) -> Path:
        """Folder of stored case files."""
        return self.data / "files"

    @property
    def uploads(self) -> Path:
        """Folder of uploads in progress."""
        return self.data / "uploads"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db_url.split(":", 1)[0].split("+", 1)[0]


def normalize_db_url(url: str) -> str:
    """Check a ``--db`` URL and name the driver shindan ships (psycopg 3 for PostgreSQL).

    Examples
    --------
    >>> normalize_db_url("postgresql://u@127.0.0.1:5432/shindan")
    'postgresql+psycopg://u@127.0.0.1:5432/shindan'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ServiceError(f"--db {mask_url(url)!r} is not a database URL (postgresql://... )")
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if base == "sqlite":
        return f"sqlite://{rest}"
    raise ServiceError(
        f"--db: unsupported database {scheme!r} (use postgresql://... or sqlite:///...)"
    )


def mask_url(url: str) -> str:
    """A URL with its password replaced by ``***``, for messages and listings."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def load_settings(data: Path, db: str | None = None, create: bool = True) -> Settings:
    """Open (or create) the service folder ``data`` and settle its database URL.

    A new folder is created (with its parents); an existing folder must be empty or a
    service folder, so a user's own folder is never filled with service files. A ``db``
    URL is recorded in the folder the first time; a different one later is refused.

    Parameters
    ----------
    data : Path
        The service folder.
    db : str, optional
        Database URL; default the folder's recorded URL, else SQLite inside the folder.
    create : bool
        Create the folder when missing (``False``: a missing folder is an error).

    Returns
    -------
    Settings

    Examples
    --------
    >>> import tempfile
    >>> s = load_settings(Path(tempfile.mkdtemp()) / "svc")
    >>> s.dialect
    'sqlite'
    """
    data = Path(data)
    url = normalize_db_url(db) if db is not None else None
    marker = data / MARKER
    created = not data.exists()
    if data.exists() and not data.is_dir():
        raise ServiceError(f"--data {data} is a file, not a folder")
    if data.is_dir() and not marker.exists() and any(data.iterdir()):
        raise ServiceError(f"--data {data} is not empty and is not a shindan service folder")
    if marker.exists():
        try:
            record = json.loads(marker.read_text())
            if record.get("format") != FORMAT:
                raise ValueError("not a service marker")
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{marker} is unreadable ({exc})") from None
        recorded = record.get("db")
        if url is not None and recorded is not None and url != recorded:
            raise ServiceError(
                f"{data} uses the database {mask_url(recorded)}; give that --db or none"
            )
        if url is not None and recorded is None and (data / SQLITE_NAME).exists():
            raise ServiceError(
                f"{data} already uses its own SQLite database; --db cannot change it"
            )
        url = url or recorded
        if url is not None and recorded is None:
            _write_marker(marker, url)
    else:
        if not create:
            raise ServiceError(
                f"--data {data}: no service folder there (`shindan admin site add` makes one)"
            )
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot create --data {data} ({exc.strerror})") from None
        _write_marker(marker, url)
    if url is None:
        url = f"sqlite:///{(data / SQLITE_NAME).resolve()}"
    return Settings(data=data.resolve(), db_url=url, created=created)


def _write_marker(marker: Path, url: str | None) -> None:
    # the URL may hold a password: owner-only, written whole then renamed
    tmp = marker.with_name(marker.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"format": FORMAT, "version": 1, "db": url}, f, indent=2)
    os.replace(tmp, marker)
