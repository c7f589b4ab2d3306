"""Browser sessions: a password login sets an HttpOnly, SameSite=Strict cookie; requests that
change anything must also carry the session's CSRF token in the ``X-CSRF-Token`` header.

The CSRF token is an HMAC of the cookie's secret: the service recomputes it from the cookie,
and a page gets it from ``GET /api/me`` (another site's page can send the cookie but cannot
read that answer). Scripts use API tokens (``Authorization: Bearer``), which a browser never
sends by itself, so they need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.models import BrowserSession, User, utcnow
from shindan.service.security import hash_password, token_digest, verify_password

COOKIE = "shindan_session"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME = timedelta(hours=12)
# methods that change nothing: no CSRF token needed
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# verified when the user is unknown, so a login takes as long either way
_DUMMY_HASH = hash_password("not a password of anyone")


class LoginFailed(ServiceError):
    """Wrong name or password, or a disabled account (one message for all)."""


def login(
    session: Session, name: str, password: str, client: str | None = None
) -> tuple[BrowserSession, str, str]:
    """Check a password and open a browser session.

    Returns
    -------
    record : BrowserSession
    secret : str
        The cookie's value (shown only now).
    csrf : str
        The CSRF token the page sends with every change.

    Raises
    ------
    LoginFailed
        The same for an unknown user, a wrong password, no password set or a disabled user.
    """
    user = session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    ok = verify_password(stored, password) and stored is not _DUMMY_HASH
    if not ok or user is None or not user.active:
        audit.record(
            session, name[:64] or "?", "session.login-failed", f"user:{name[:60]}", None, client
        )
        session.commit()
        raise LoginFailed("wrong name or password")
    secret = secrets.token_urlsafe(32)
    record = BrowserSession(
        user_id=user.id, digest=token_digest(secret), expires_at=utcnow() + LIFETIME
    )
    session.add(record)
    session.flush()
    audit.record(session, user, "session.login", f"user:{name}", None, client)
    return record, secret, csrf_token(secret)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def live_session(session: Session, secret: str) -> BrowserSession | None:
    """The open, unexpired session of an active user whose cookie is ``secret``."""
    record = session.scalar(
        select(BrowserSession)
        .join(User, BrowserSession.user_id == User.id)
        .where(
            BrowserSession.digest == token_digest(secret),
            BrowserSession.ended_at.is_(None),
            User.active.is_(True),
        )
    )
    if record is None or _aware(record.expires_at) <= utcnow():
        return None
    return record


def csrf_token(secret: str) -> str:
    """The CSRF token of the session whose cookie is ``secret``.

    Examples
    --------
    >>> csrf_token("a") == csrf_token("a") != csrf_token("b")
    True
    """
    return hmac.new(secret.encode(), b"shindan csrf", hashlib.sha256).hexdigest()


def csrf_ok(secret: str, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of the cookie ``secret`` (constant-time)."""
    return bool(token) and hmac.compare_digest(csrf_token(secret), token)


def logout(session: Session, record: BrowserSession, client: str | None = None) -> None:
    """End a session: its cookie stops working at once."""
    record.ended_at = utcnow()
    user = session.get(User, record.user_id)
    audit.record(session, user, "session.logout", f"user:{user.name}", None, client)
