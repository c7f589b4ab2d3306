"""The audit log: who read, uploaded, shared or administered what, and when (append-only)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from shindan.service.models import AuditEntry, User, iso

COLUMNS = ("id", "at", "actor", "action", "target", "detail", "client")


def record(
    session: Session,
    actor: User | str,
    action: str,
    target: str | None = None,
    detail: dict | None = None,
    client: str | None = None,
) -> AuditEntry:
    """Add one entry (committed with the session's other changes).

    Parameters
    ----------
    session : Session
        Open session.
    actor : User or str
        The user, or a name for actions outside the API (``admin-cli``).
    action : str
        What was done, dotted (``case.read``, ``user.add``).
    target : str, optional
        What it was done to (``case:<id>``, ``user:<name>``).
    detail : dict, optional
        Extra facts (JSON).
    client : str, optional
        The caller's address.
    """
    entry = AuditEntry(
        user_id=actor.id if isinstance(actor, User) else None,
        actor=actor.name if isinstance(actor, User) else actor,
        action=action,
        target=target,
        detail=detail,
        client=client,
    )
    session.add(entry)
    return entry


def entries(session: Session, since_id: int = 0, limit: int | None = None) -> list[AuditEntry]:
    """Entries with ``id > since_id`` in the order they were written."""
    query = select(AuditEntry).where(AuditEntry.id > since_id).order_by(AuditEntry.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def as_row(entry: AuditEntry) -> dict:
    """One entry as a plain dict (``COLUMNS``), times in ISO 8601."""
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
        "client": entry.client,
    }


def to_csv(rows: Iterable[AuditEntry]) -> str:
    """Entries as CSV text with a header row (``detail`` as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for entry in rows:
        row = as_row(entry)
        row["detail"] = json.dumps(row["detail"]) if row["detail"] is not None else ""
        writer.writerow([row[c] if row[c] is not None else "" for c in COLUMNS])
    return out.getvalue()
