"""The service's HTTP API (FastAPI): every ``/api/`` route but the health check needs a token.

Authentication happens in one middleware before any routing or body parsing, so an
unauthenticated request gets 401 on every ``/api/`` path, known or not. Routes then take the
caller from :func:`current_user` and reach cases only through :mod:`shindan.service.access`.
"""

import threading
from collections.abc import Iterator
from datetime import timedelta
from importlib.resources import files
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as FastPath
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shindan import __version__
from shindan.errors import ServiceError
from shindan.service import audit
from shindan.service.access import WRITERS, NotVisible, manages, visible_case, visible_cases
from shindan.service.cases import CaseExists, add_case
from shindan.service.db import Database
from shindan.service.intake import (
    IntakeError,
    Limits,
    NotReady,
    TooLarge,
    WrongOffset,
    complete_upload,
    open_upload,
    store_path,
    write_chunk,
)
from shindan.service.models import (
    ApiToken,
    Case,
    CaseFile,
    Share,
    Site,
    Upload,
    UploadFile,
    User,
    iso,
    utcnow,
)
from shindan.service.security import token_digest
from shindan.service.sessions import (
    COOKIE,
    CSRF_HEADER,
    LIFETIME,
    SAFE_METHODS,
    LoginFailed,
    csrf_ok,
    csrf_token,
    live_session,
    login,
    logout,
)

# paths under /api/ that answer without credentials
OPEN_PATHS = frozenset({"/api/health"})
# on every answer: no MIME sniffing of downloads, no framing, no referrer leaving the service
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# last_used_at is refreshed at most this often, so reads do not all write the token row
TOUCH_EVERY = timedelta(minutes=1)

# numbers the databases can hold: ids are 32-bit integers, byte counts 64-bit
MAX_ID = 2**31 - 1
MAX_BYTES = 2**62
RowId = Annotated[int, FastPath(ge=0, le=MAX_ID)]
# strings that reach the database: no NUL characters (PostgreSQL text cannot hold them)
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]

_bearer = HTTPBearer(auto_error=False, description="An API token from `shindan admin`.")
_cookie = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    description="A browser session from POST /auth/login; changes need the X-CSRF-Token header.",
)


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str


class Me(BaseModel):
    name: str
    site: str
    role: str
    csrf_token: str | None = Field(
        None, description="With a browser session: send it as X-CSRF-Token with every change."
    )


class LoginIn(BaseModel):
    name: Text = Field(max_length=64)
    password: Text = Field(max_length=1024)


class CaseOut(BaseModel):
    id: str = Field(description="The case's id in this service (random).")
    pseudonym: str
    site: str
    created_at: str


class CaseIn(BaseModel):
    pseudonym: Text = Field(description="1-128 letters, digits, '.', '_' or '-'.")


class ShareIn(BaseModel):
    site: Text | None = Field(
        None, max_length=64, description="Share with every user of this site ..."
    )
    user: Text | None = Field(None, max_length=64, description="... or with this one user.")


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


class UploadFileOut(BaseModel):
    index: int
    path: str
    case: str = Field(description="Pseudonym(s) of the file's case(s), comma-separated.")
    bytes: int
    sha256: str
    received: int
    status: Literal["needed", "partial", "received", "duplicate"] = Field(
        description="duplicate: the site stores this content already; do not send it."
    )


class UploadOut(BaseModel):
    id: str
    state: Literal["open", "stored", "refused"]
    site: str
    reason: str | None = Field(description="Why the upload was refused.")
    bytes: int
    created_at: str
    files: list[UploadFileOut]


class CaseFileOut(BaseModel):
    id: int
    path: str
    bytes: int
    sha256: str
    modality: str | None
    created_at: str


MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "The export's manifest.json, as written by `shindan deid`.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
CHUNK_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes from `offset` on (one chunk).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _file_status(entry: UploadFile) -> str:
    if entry.duplicate:
        return "duplicate"
    if entry.received == entry.size:
        return "received"
    return "partial" if entry.received else "needed"


def _upload_file_out(entry: UploadFile) -> UploadFileOut:
    return UploadFileOut(
        index=entry.index,
        path=entry.path,
        case=entry.cases,
        bytes=entry.size,
        sha256=entry.sha256,
        received=entry.received,
        status=_file_status(entry),
    )


def _upload_out(upload: Upload) -> UploadOut:
    return UploadOut(
        id=upload.public_id,
        state=upload.state,
        site=upload.site.name,
        reason=upload.reason,
        bytes=upload.total_bytes,
        created_at=iso(upload.created_at),
        files=[_upload_file_out(f) for f in upload.files],
    )


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


def _session_user(database: Database, secret: str) -> int | None:
    with database.session() as session:
        record = live_session(session, secret)
        return record.user_id if record is not None else None


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def create_app(database: Database, limits: Limits = Limits()) -> FastAPI:
    """The FastAPI application over ``database``.

    Parameters
    ----------
    database : Database
        The opened (migrated) service database.
    limits : Limits
        Size limits of uploads.

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
        max_body_size=limits.manifest_bytes,
        description="Sites send de-identified cases; their users read them and run AI tasks.",
    )
    app.state.database = database

    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # noqa: ANN202
        path = request.url.path
        if (path == "/api" or path.startswith("/api/")) and path not in OPEN_PATHS:
            header = request.headers.get("authorization")
            secret = request.cookies.get(COOKIE)
            if header:  # a script's token
                user_id = await run_in_threadpool(_authenticate, database, header)
                if user_id is None:
                    return _unauthorized("invalid or revoked token")
            elif secret:  # a browser's session
                user_id = await run_in_threadpool(_session_user, database, secret)
                if user_id is None:
                    return _unauthorized("the session has ended: log in again")
                if request.method not in SAFE_METHODS and not csrf_ok(
                    secret, request.headers.get(CSRF_HEADER)
                ):
                    return JSONResponse(
                        {"detail": f"CSRF token missing or wrong (send {CSRF_HEADER})"},
                        status_code=403,
                    )
                request.state.session_secret = secret
            else:
                return _unauthorized("missing credentials: send Authorization: Bearer TOKEN")
            request.state.user_id = user_id
        # (after the credentials: nothing is answered to a caller without them)
        if "\x00" in path or "%00" in request.url.query or "\x00" in request.url.query:
            return JSONResponse({"detail": "NUL characters in the address"}, status_code=400)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if path.startswith("/api/"):
            # case data stays out of caches, unless a route says how (tiles: private, revalidated)
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def get_session() -> Iterator[Session]:
        with database.sessions() as session:
            yield session

    def current_user(
        request: Request,
        session: Annotated[Session, Depends(get_session)],
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        _cookie_value: Annotated[str | None, Depends(_cookie)],
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
    def me(request: Request, user: UserDep) -> Me:
        """The caller: name, site, role (and the CSRF token of a browser session)."""
        secret = getattr(request.state, "session_secret", None)
        return Me(
            name=user.name,
            site=user.site.name,
            role=user.role,
            csrf_token=csrf_token(secret) if secret else None,
        )

    @app.post("/auth/login", tags=["service"])
    def post_login(request: Request, response: Response, body: LoginIn, session: SessionDep) -> Me:
        """Open a browser session with a name and password: sets an HttpOnly, SameSite=Strict
        cookie and returns the CSRF token to send as X-CSRF-Token with every change."""
        try:
            record, secret, csrf = login(session, body.name, body.password, client(request))
        except LoginFailed as exc:
            raise HTTPException(401, str(exc)) from None
        session.commit()
        response.set_cookie(
            COOKIE,
            secret,
            max_age=int(LIFETIME.total_seconds()),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        user = session.get(User, record.user_id)
        return Me(name=user.name, site=user.site.name, role=user.role, csrf_token=csrf)

    @app.post("/auth/logout", status_code=204, tags=["service"])
    def post_logout(
        request: Request,
        response: Response,
        session: SessionDep,
        _cookie_value: Annotated[str | None, Depends(_cookie)],
    ) -> None:
        """End the browser session (needs its X-CSRF-Token)."""
        secret = request.cookies.get(COOKIE)
        record = live_session(session, secret) if secret else None
        if record is None:
            raise HTTPException(401, "no session", {"WWW-Authenticate": "Bearer"})
        if not csrf_ok(secret, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, f"CSRF token missing or wrong (send {CSRF_HEADER})")
        logout(session, record, client(request))
        session.commit()
        response.delete_cookie(COOKIE, path="/")

    @app.get("/api/cases", tags=["cases"])
    def list_cases(
        request: Request,
        user: UserDep,
        session: SessionDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
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
        request: Request, case_id: str, share_id: RowId, user: UserDep, session: SessionDep
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
        since: Annotated[
            int, Query(ge=0, le=MAX_ID, description="Only entries after this id.")
        ] = 0,
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

    RawBody = Annotated[bytes, Depends(_raw_body)]
    settings = database.settings

    # one request at a time changes an upload: a lock per upload in this process (the
    # embedded SQLite service is one process), and a row lock across PostgreSQL servers
    locks: dict[str, threading.Lock] = {}
    locks_guard = threading.Lock()

    def upload_lock(upload_id: str) -> threading.Lock:
        with locks_guard:
            return locks.setdefault(upload_id, threading.Lock())

    def upload_or_404(session: Session, user: User, upload_id: str, lock: bool = False) -> Upload:
        if user.role not in WRITERS:
            raise HTTPException(403, f"a {user.role} does not upload")
        query = select(Upload).where(Upload.public_id == upload_id, Upload.site_id == user.site_id)
        if lock:  # PostgreSQL: one request at a time changes an upload (SQLite ignores it)
            query = query.with_for_update(of=Upload)
        upload = session.scalar(query)
        if upload is None:
            raise HTTPException(404, f"no upload {upload_id}")
        return upload

    def intake_error(exc: IntakeError) -> HTTPException:
        if isinstance(exc, TooLarge):
            return HTTPException(413, str(exc))
        if isinstance(exc, WrongOffset):
            return HTTPException(409, str(exc), {"Upload-Offset": str(exc.expected)})
        if isinstance(exc, NotReady):
            return HTTPException(409, str(exc))
        return HTTPException(422, str(exc))

    @app.post("/api/uploads", status_code=201, tags=["intake"], openapi_extra=MANIFEST_BODY)
    def post_upload(
        request: Request, response: Response, body: RawBody, user: UserDep, session: SessionDep
    ) -> UploadOut:
        """Start sending a `shindan deid` export: its manifest.json (uploaders and admins).

        Answers 200 with the earlier upload when the same manifest was sent before (resume
        it, or it is stored already). Files the site stores already are duplicates: not sent.
        """
        if user.role not in WRITERS:
            raise HTTPException(403, f"a {user.role} does not upload")
        try:
            upload, new = open_upload(session, user, body, limits, client(request))
        except IntakeError as exc:
            raise intake_error(exc) from None
        session.commit()
        if not new:
            response.status_code = 200
        return _upload_out(upload)

    @app.get("/api/uploads", tags=["intake"])
    def list_uploads(user: UserDep, session: SessionDep) -> list[UploadOut]:
        """The site's uploads, newest first (uploaders and admins)."""
        if user.role not in WRITERS:
            raise HTTPException(403, f"a {user.role} does not upload")
        query = select(Upload).where(Upload.site_id == user.site_id).order_by(Upload.id.desc())
        return [_upload_out(u) for u in session.scalars(query.limit(200))]

    @app.get("/api/uploads/{upload_id}", tags=["intake"])
    def read_upload(upload_id: str, user: UserDep, session: SessionDep) -> UploadOut:
        """An upload's state and how far each file has arrived (to resume)."""
        return _upload_out(upload_or_404(session, user, upload_id))

    @app.put(
        "/api/uploads/{upload_id}/files/{index}",
        tags=["intake"],
        openapi_extra=CHUNK_BODY,
        max_body_size=limits.chunk_bytes,
    )
    def put_chunk(
        upload_id: str,
        index: RowId,
        body: RawBody,
        user: UserDep,
        session: SessionDep,
        offset: Annotated[
            int, Query(ge=0, le=MAX_BYTES, description="Where this chunk starts.")
        ] = 0,
    ) -> UploadFileOut:
        """Send a chunk of file `index` starting at `offset` (409 and `Upload-Offset` when
        the file has reached another offset). A complete file must match its SHA-256."""
        with upload_lock(upload_id):
            upload = upload_or_404(session, user, upload_id, lock=True)
            try:
                entry = write_chunk(session, settings, upload, index, offset, body, limits)
            except IntakeError as exc:
                raise intake_error(exc) from None
            session.commit()
            return _upload_file_out(entry)

    @app.post("/api/uploads/{upload_id}/complete", tags=["intake"])
    def post_complete(
        request: Request, upload_id: str, user: UserDep, session: SessionDep
    ) -> UploadOut:
        """Check the complete export (`shindan deid check`) and store it under its cases, or
        refuse it: state `refused`, the reason, nothing kept."""
        with upload_lock(upload_id):
            upload = upload_or_404(session, user, upload_id, lock=True)
            try:
                upload = complete_upload(session, settings, upload, user, client(request), limits)
                session.commit()
            except IntakeError as exc:
                raise intake_error(exc) from None
            except IntegrityError:  # completed by another server process: answer its result
                session.rollback()
                upload = upload_or_404(session, user, upload_id)
            return _upload_out(upload)

    @app.get("/api/cases/{case_id}/files", tags=["cases"])
    def list_case_files(
        request: Request, case_id: str, user: UserDep, session: SessionDep
    ) -> list[CaseFileOut]:
        """The stored files of a case."""
        case = case_or_404(session, user, case_id)
        rows = session.scalars(
            select(CaseFile).where(CaseFile.case_id == case.id).order_by(CaseFile.id)
        )
        return [
            CaseFileOut(
                id=f.id,
                path=f.path,
                bytes=f.size,
                sha256=f.sha256,
                modality=f.modality,
                created_at=iso(f.created_at),
            )
            for f in rows
        ]

    @app.get(
        "/api/cases/{case_id}/files/{file_id}",
        tags=["cases"],
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def read_case_file(
        request: Request, case_id: str, file_id: RowId, user: UserDep, session: SessionDep
    ) -> FileResponse:
        """A stored file's bytes (audited)."""
        case = case_or_404(session, user, case_id)
        entry = session.scalar(
            select(CaseFile).where(CaseFile.id == file_id, CaseFile.case_id == case.id)
        )
        if entry is None:
            raise HTTPException(404, f"no file {file_id} in case {case_id}")
        audit.record(
            session, user, "file.read", f"case:{case_id}", {"file": entry.path}, client(request)
        )
        session.commit()
        return FileResponse(
            store_path(settings, entry.sha256),
            media_type="application/octet-stream",
            filename=entry.path.rsplit("/", 1)[-1],
        )

    from shindan.service import tiles  # the viewer's Deep Zoom tiles

    app.state.tiles = tiles.TileService(settings)
    app.include_router(
        tiles.router(settings, get_session, current_user, case_or_404, app.state.tiles)
    )

    from shindan.service import jobs_api  # AI tasks run as jobs by workers

    app.include_router(jobs_api.router(settings, get_session, current_user, case_or_404))

    return app
