"""Sites, users and API tokens: what ``shindan admin`` does (each action audited)."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.models import ROLES, ApiToken, Share, Site, User, utcnow
from shindan.service.security import SHOWN, hash_password, new_token, token_digest

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CLI_ACTOR = "admin-cli"


def _check_name(kind: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise ServiceError(
            f"{kind} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def get_site(session: Session, name: str) -> Site:
    """The site called ``name``; a ``ServiceError`` naming the known sites otherwise."""
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        known = ", ".join(session.scalars(select(Site.name).order_by(Site.name))) or "none yet"
        raise ServiceError(f"no site {name!r} (sites: {known})")
    return site


def get_user(session: Session, name: str) -> User:
    """The user called ``name``; a ``ServiceError`` otherwise."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise ServiceError(f"no user {name!r}")
    return user


def add_site(session: Session, name: str, actor: User | str = CLI_ACTOR) -> Site:
    """Create a site.

    Examples
    --------
    >>> import tempfile
    >>> from shindan.service.db import open_service
    >>> db = open_service(tempfile.mkdtemp() + "/svc")
    >>> with db.session() as s:
    ...     add_site(s, "kyoto").name
    'kyoto'
    """
    _check_name("site", name)
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise ServiceError(f"site {name!r} exists already")
    site = Site(name=name)
    session.add(site)
    session.flush()
    audit.record(session, actor, "site.add", f"site:{name}")
    return site


def add_user(
    session: Session,
    name: str,
    site: str,
    role: str,
    password: str | None = None,
    actor: User | str = CLI_ACTOR,
) -> User:
    """Create a user with one role at one site (a password is optional: tokens suffice).

    Examples
    --------
    >>> import tempfile
    >>> from shindan.service.db import open_service
    >>> db = open_service(tempfile.mkdtemp() + "/svc")
    >>> with db.session() as s:
    ...     _ = add_site(s, "kyoto")
    ...     add_user(s, "ana", site="kyoto", role="pathologist").role
    'pathologist'
    """
    _check_name("user", name)
    if role not in ROLES:
        raise ServiceError(f"role {role!r} is unknown (roles: {', '.join(ROLES)})")
    owner = get_site(session, site)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ServiceError(f"user {name!r} exists already")
    user = User(
        name=name,
        site_id=owner.id,
        role=role,
        password_hash=hash_password(password) if password else None,
        active=True,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.add", f"user:{name}", {"site": site, "role": role})
    return user


def issue_token(
    session: Session, user: str, label: str | None = None, actor: User | str = CLI_ACTOR
) -> tuple[ApiToken, str]:
    """A new API token for ``user``: the stored record and the token (shown only now).

    Examples
    --------
    >>> import tempfile
    >>> from shindan.service.db import open_service
    >>> db = open_service(tempfile.mkdtemp() + "/svc")
    >>> with db.session() as s:
    ...     _ = add_site(s, "kyoto"); _ = add_user(s, "ana", "kyoto", "uploader")
    ...     record, token = issue_token(s, "ana")
    ...     record.digest != token and token.startswith(record.prefix)
    True
    """
    owner = get_user(session, user)
    if not owner.active:
        raise ServiceError(f"user {user!r} is disabled")
    token = new_token()
    record = ApiToken(
        user_id=owner.id, digest=token_digest(token), prefix=token[:SHOWN], label=label
    )
    session.add(record)
    session.flush()
    audit.record(session, actor, "token.add", f"user:{user}", {"prefix": record.prefix})
    return record, token


def revoke_token(session: Session, prefix: str, actor: User | str = CLI_ACTOR) -> ApiToken:
    """Revoke the one live token whose shown characters start with ``prefix``."""
    if len(prefix) < 6:
        raise ServiceError("give at least 6 characters of the token (as `admin token list` shows)")
    found = list(
        session.scalars(
            select(ApiToken).where(
                ApiToken.prefix.startswith(prefix[:SHOWN], autoescape=True),
                ApiToken.revoked_at.is_(None),
            )
        )
    )
    if not found:
        raise ServiceError(f"no live token starts with {prefix!r}")
    if len(found) > 1:
        raise ServiceError(f"{len(found)} tokens start with {prefix!r}; give more characters")
    found[0].revoked_at = utcnow()
    audit.record(
        session, actor, "token.revoke", f"user:{found[0].user.name}", {"prefix": found[0].prefix}
    )
    return found[0]


def set_active(session: Session, user: str, active: bool, actor: User | str = CLI_ACTOR) -> User:
    """Enable or disable a user (a disabled user's tokens stop working)."""
    owner = get_user(session, user)
    owner.active = active
    audit.record(session, actor, "user.enable" if active else "user.disable", f"user:{user}")
    return owner


def set_password(session: Session, user: str, password: str, actor: User | str = CLI_ACTOR) -> User:
    """Set (or replace) a user's password; their browser sessions end."""
    from shindan.service.models import BrowserSession

    owner = get_user(session, user)
    owner.password_hash = hash_password(password)
    for record in session.scalars(
        select(BrowserSession).where(
            BrowserSession.user_id == owner.id, BrowserSession.ended_at.is_(None)
        )
    ):
        record.ended_at = utcnow()
    audit.record(session, actor, "user.password", f"user:{user}")
    return owner


def grant_site(
    session: Session,
    site: str,
    to_site: str | None = None,
    to_user: str | None = None,
    actor: User | str = CLI_ACTOR,
) -> Share:
    """Let another site's users, or one user (a researcher), see all of ``site``'s cases."""
    if (to_site is None) == (to_user is None):
        raise ServiceError("give exactly one of --to-site and --to-user")
    owner = get_site(session, site)
    share = Share(owner_site_id=owner.id, case_id=None)
    if to_site is not None:
        share.grantee_site_id = get_site(session, to_site).id
    else:
        share.grantee_user_id = get_user(session, to_user).id
    session.add(share)
    session.flush()
    audit.record(
        session, actor, "site.grant", f"site:{site}", {"to_site": to_site, "to_user": to_user}
    )
    return share


def list_sites(session: Session) -> list[tuple[Site, int, int]]:
    """Every site with its numbers of users and cases, by name."""
    from shindan.service.models import Case

    users = select(func.count()).select_from(User).where(User.site_id == Site.id).scalar_subquery()
    cases = select(func.count()).select_from(Case).where(Case.site_id == Site.id).scalar_subquery()
    return [tuple(r) for r in session.execute(select(Site, users, cases).order_by(Site.name))]


def list_users(session: Session, site: str | None = None) -> list[tuple[User, int]]:
    """Users (of one site, or all) with their numbers of live tokens, by name."""
    live = (
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.user_id == User.id, ApiToken.revoked_at.is_(None))
        .scalar_subquery()
    )
    query = select(User, live).order_by(User.name)
    if site is not None:
        query = query.where(User.site_id == get_site(session, site).id)
    return [tuple(r) for r in session.execute(query)]


def list_tokens(session: Session, user: str | None = None) -> list[ApiToken]:
    """Tokens (of one user, or all), oldest first; only their shown characters are known."""
    query = select(ApiToken).order_by(ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user_id == get_user(session, user).id)
    return list(session.scalars(query))
