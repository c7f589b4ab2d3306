"""Which cases a user may see: their own site's, and those another site shared with them.

Every case route goes through :func:`visible_case`, so a case the caller may not see and a
case that does not exist answer the same way (404): other sites' case ids leak nothing.
"""

from __future__ import annotations

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.orm import Session

from shindan.service.models import Case, Share, User

# roles that may add cases to their site and manage its shares
WRITERS = ("admin", "uploader")


class NotVisible(LookupError):
    """The case does not exist or the caller may not see it (the API answers 404)."""


def visible_cases(user: User) -> Select:
    """A query of the cases ``user`` may see, newest first.

    A case is visible to the users of its site, and to a site or user it was shared with
    (one case, or all of its site's cases).
    """
    shared = exists().where(
        or_(
            Share.case_id == Case.id,
            and_(Share.case_id.is_(None), Share.owner_site_id == Case.site_id),
        ),
        or_(Share.grantee_user_id == user.id, Share.grantee_site_id == user.site_id),
    )
    return (
        select(Case)
        .where(or_(Case.site_id == user.site_id, shared))
        .order_by(Case.created_at.desc(), Case.id.desc())
    )


def visible_case(session: Session, user: User, public_id: str) -> Case:
    """The case ``public_id`` if ``user`` may see it; :class:`NotVisible` otherwise."""
    case = session.scalar(visible_cases(user).where(Case.public_id == public_id))
    if case is None:
        raise NotVisible(public_id)
    return case


def manages(user: User, case: Case) -> bool:
    """Whether ``user`` may change ``case`` and its shares (an uploader or admin of its site)."""
    return user.role in WRITERS and user.site_id == case.site_id
