"""Cases: a patient's material at one site under a pseudonym (never a real identifier)."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.models import Case, Site, User

PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CaseExists(ServiceError):
    """The site has a case with this pseudonym already."""


def check_pseudonym(pseudonym: str) -> str:
    """``pseudonym`` if it is 1-128 letters, digits, '.', '_' or '-' (a ServiceError otherwise).

    Examples
    --------
    >>> check_pseudonym("c-0001")
    'c-0001'
    """
    if not PSEUDONYM.fullmatch(pseudonym):
        raise ServiceError(
            f"pseudonym {pseudonym[:40]!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return pseudonym


def add_case(
    session: Session,
    site: Site,
    pseudonym: str,
    actor: User | str,
    client: str | None = None,
) -> Case:
    """Add a case to ``site`` (committed with the session; audited as ``case.add``).

    Raises
    ------
    CaseExists
        The site has a case with this pseudonym.

    Examples
    --------
    >>> import tempfile
    >>> from shindan.service.accounts import add_site
    >>> from shindan.service.db import open_service
    >>> db = open_service(tempfile.mkdtemp() + "/svc")
    >>> with db.session() as s:
    ...     add_case(s, add_site(s, "kyoto"), "c-0001", "admin-cli").site.name
    'kyoto'
    """
    check_pseudonym(pseudonym)
    taken = select(Case.id).where(Case.site_id == site.id, Case.pseudonym == pseudonym)
    if session.scalar(taken) is not None:
        raise CaseExists(f"site {site.name} has a case {pseudonym} already")
    case = Case(public_id=uuid.uuid4().hex, site_id=site.id, pseudonym=pseudonym)
    try:
        with session.begin_nested():  # the same pseudonym added concurrently
            session.add(case)
            session.flush()
    except IntegrityError:
        raise CaseExists(f"site {site.name} has a case {pseudonym} already") from None
    case.site = site
    audit.record(session, actor, "case.add", f"case:{case.public_id}", None, client)
    return case
