"""The service's HTTP API (FastAPI): every ``/api/`` route but the health check needs a token.

Authentication happens in one middleware before any routing or body parsing, so an
unauthenticated request gets 401 on every ``/api/`` path, known or not. Routes then take the
caller from :func:`current_user` and reach cases only through :mod:`shindan.service.access`.
"""

from collections.abc import Iterator
from datetime import timedelta
from importlib.resources import files
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from shindan import __version__
from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.access import WRITERS, NotVisible, manages, visible_case, visible_cases
from shindan.service.cases import CaseExists, add_case
from shindan.service.db import Database
from shindan.service.models import ApiToken, Case, Share, Site, User, iso, utcnow
from shindan.service.security import token_digest

# paths under /api/ that answer without credentials
OPEN_PATHS = frozenset({"/api/health"})
# last_used_at is refreshed at most this often, so reads do not all write the token row
TOUCH_EVERY = timedelta(minutes=1)

_bearer = HTTPBearer(auto_error=False, description="An API token from `shindan admin`.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str


class Me(BaseModel):
    name: str
    site: str
    role: str


class CaseOut(BaseModel):
    id: str = Field(description="The case's id in this service (random).")
    pseudonym: str
    site: str
    created_at: str


class CaseIn(BaseModel):
    pseudonym: str = Field(description="1-128 letters, digits, '.', '_' or '-'.")


class ShareIn(BaseModel):
    site: str | None = Field(None, description="Share with every user of this site ...")
    user: str | None = Field(None, description="... or with this one user.")


class ShareOut(BaseModel):
    id: int
    site: str | None
    user: str | None
    created_at: str


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    detail: dict | None
    client: str | None


def _authenticate(database: Database, header: str | None) -> int | None:
    """The id of the live user holding the token in ``header``, or None."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    with database.session() as session:
        record = session.scalar(
            select(ApiToken)
            .join(User, ApiToken.user_id == User.id)
            .where(
                ApiToken.digest == token_digest(token),
                ApiToken.revoked_at.is_(None),
                User.active.is_(True),
            )
        )
        if record is None:
            return None
        now = utcnow()
        last = record.last_used_at
        if (
            last is None
            or now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo)) > TOUCH_EVERY
        ):
            record.last_used_at = now
        return record.user_id


def create_app(database: Database) -> FastAPI:
    """The FastAPI application over ``database``.

    Parameters
    ----------
    database : Database
        The opened (migrated) service database.

    Returns
    -------
    FastAPI

    Examples
    --------
    >>> import tempfile
    >>> from shindan.service.db import open_service
    >>> api = create_app(open_service(tempfile.mkdtemp() + "/svc"))
    >>> api.title
    'shindan service'
    """
    # the interactive docs pages load scripts from a CDN: off, /openapi.json stays
    app = FastAPI(
        title="shindan service",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        description="Sites send de-identified cases; their users read them and run AI tasks.",
    )
    app.state.database = database

    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # noqa: ANN202
        path = request.url.path
        if (path == "/api" or path.startswith("/api/")) and path not in OPEN_PATHS:
            header = request.headers.get("authorization")
            user_id = await run_in_threadpool(_authenticate, database, header)
            if user_id is None:
                detail = "missing credentials" if not header else "invalid or revoked token"
                return JSONResponse(
                    {"detail": f"{detail}: send Authorization: Bearer TOKEN"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            request.state.user_id = user_id
        return await call_next(request)

    def get_session() -> Iterator[Session]:
        with database.sessions() as session:
            yield session

    def current_user(
        request: Request,
        session: Annotated[Session, Depends(get_session)],
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> User:
        # the middleware checked the token; this declares it in the OpenAPI spec
        user = session.get(User, getattr(request.state, "user_id", None) or 0)
        if user is None:
            raise HTTPException(401, "missing credentials", {"WWW-Authenticate": "Bearer"})
        return user

    SessionDep = Annotated[Session, Depends(get_session)]
    UserDep = Annotated[User, Depends(current_user)]

    def client(request: Request) -> str | None:
        return request.client.host if request.client else None

    def case_or_404(session: Session, user: User, case_id: str) -> Case:
        try:
            return visible_case(session, user, case_id)
        except NotVisible:
            raise HTTPException(404, f"no case {case_id}") from None

    def case_out(case: Case) -> CaseOut:
        return CaseOut(
            id=case.public_id,
            pseudonym=case.pseudonym,
            site=case.site.name,
            created_at=iso(case.created_at),
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return files("shindan.service").joinpath("static/index.html").read_text("utf-8")

    @app.get("/api/health", tags=["service"])
    def health() -> Health:
        """Open: the service is up and its database answers."""
        return Health(status="ok", version=__version__, database=database.settings.dialect)

    @app.get("/api/me", tags=["service"])
    def me(user: UserDep) -> Me:
        """The caller: name, site, role."""
        return Me(name=user.name, site=user.site.name, role=user.role)

    @app.get("/api/cases", tags=["cases"])
    def list_cases(
        request: Request,
        user: UserDep,
        session: SessionDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[CaseOut]:
        """The cases the caller may see (their site's and those shared with them), newest first."""
        cases = list(session.scalars(visible_cases(user).limit(limit).offset(offset)))
        audit.record(
            session,
            user,
            "case.list",
            None,
            {"count": len(cases), "offset": offset},
            client(request),
        )
        session.commit()
        return [case_out(c) for c in cases]

    @app.post("/api/cases", status_code=201, tags=["cases"])
    def post_case(request: Request, body: CaseIn, user: UserDep, session: SessionDep) -> CaseOut:
        """Add a case to the caller's site (uploaders and admins)."""
        if user.role not in WRITERS:
            raise HTTPException(403, f"a {user.role} cannot add cases")
        try:
            case = add_case(session, user.site, body.pseudonym, user, client(request))
        except CaseExists as exc:
            raise HTTPException(409, str(exc)) from None
        except ServiceError as exc:
            raise HTTPException(422, str(exc)) from None
        session.commit()
        return case_out(case)

    @app.get("/api/cases/{case_id}", tags=["cases"])
    def read_case(request: Request, case_id: str, user: UserDep, session: SessionDep) -> CaseOut:
        """One case (404 when it does not exist or the caller may not see it)."""
        case = case_or_404(session, user, case_id)
        audit.record(session, user, "case.read", f"case:{case_id}", None, client(request))
        session.commit()
        return case_out(case)

    def share_out(session: Session, share: Share) -> ShareOut:
        site = session.get(Site, share.grantee_site_id) if share.grantee_site_id else None
        who = session.get(User, share.grantee_user_id) if share.grantee_user_id else None
        return ShareOut(
            id=share.id,
            site=site.name if site else None,
            user=who.name if who else None,
            created_at=iso(share.created_at),
        )

    def managed_case(session: Session, user: User, case_id: str) -> Case:
        case = case_or_404(session, user, case_id)
        if not manages(user, case):
            raise HTTPException(403, "only the case's site uploaders and admins manage its shares")
        return case

    @app.get("/api/cases/{case_id}/shares", tags=["cases"])
    def list_shares(case_id: str, user: UserDep, session: SessionDep) -> list[ShareOut]:
        """Who else may see this case (the case's site uploaders and admins)."""
        case = managed_case(session, user, case_id)
        shares = session.scalars(select(Share).where(Share.case_id == case.id).order_by(Share.id))
        return [share_out(session, s) for s in shares]

    @app.post("/api/cases/{case_id}/shares", status_code=201, tags=["cases"])
    def add_share(
        request: Request, case_id: str, body: ShareIn, user: UserDep, session: SessionDep
    ) -> ShareOut:
        """Share a case with another site or one user (the case's site uploaders and admins)."""
        case = managed_case(session, user, case_id)
        if (body.site is None) == (body.user is None):
            raise HTTPException(422, "give exactly one of site and user")
        share = Share(owner_site_id=case.site_id, case_id=case.id, created_by=user.id)
        if body.site is not None:
            site = session.scalar(select(Site).where(Site.name == body.site))
            if site is None:
                raise HTTPException(422, f"no site {body.site}")
            share.grantee_site_id = site.id
        else:
            grantee = session.scalar(select(User).where(User.name == body.user))
            if grantee is None:
                raise HTTPException(422, f"no user {body.user}")
            share.grantee_user_id = grantee.id
        session.add(share)
        session.flush()
        audit.record(
            session,
            user,
            "case.share",
            f"case:{case_id}",
            {"site": body.site, "user": body.user},
            client(request),
        )
        session.commit()
        return share_out(session, share)

    @app.delete("/api/cases/{case_id}/shares/{share_id}", status_code=204, tags=["cases"])
    def remove_share(
        request: Request, case_id: str, share_id: int, user: UserDep, session: SessionDep
    ) -> None:
        """Stop sharing a case (the case's site uploaders and admins)."""
        case = managed_case(session, user, case_id)
        share = session.scalar(select(Share).where(Share.id == share_id, Share.case_id == case.id))
        if share is None:
            raise HTTPException(404, f"no share {share_id} of case {case_id}")
        session.delete(share)
        audit.record(
            session, user, "case.unshare", f"case:{case_id}", {"share": share_id}, client(request)
        )
        session.commit()

    @app.get(
        "/api/audit",
        tags=["service"],
        responses={200: {"content": {"text/csv": {}}}},
    )
    def read_audit(
        request: Request,
        user: UserDep,
        session: SessionDep,
        since: Annotated[int, Query(ge=0, description="Only entries after this id.")] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> list[AuditOut]:
        """The audit log in the order written (admins only); ``format=csv`` exports it."""
        if user.role != "admin":
            raise HTTPException(403, "only admins read the audit log")
        rows = audit.entries(session, since_id=since, limit=limit)
        audit.record(
            session, user, "audit.read", None, {"since": since, "count": len(rows)}, client(request)
        )
        session.commit()
        if format == "csv":
            return PlainTextResponse(audit.to_csv(rows), media_type="text/csv")
        return [AuditOut(**audit.as_row(e)) for e in rows]

    return app
