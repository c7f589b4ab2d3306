"""The service's tables (SQLAlchemy 2.x). Alembic migrations in ``migrations/`` create them.

Every table change needs a new migration; ``tests/service/test_migrations.py`` checks that
the migrations and these models agree (autogenerate finds no difference).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shindan.service.roles import ROLES

# Named constraints, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC; SQLite returns times without their zone, which is always UTC here.

    Examples
    --------
    >>> iso(datetime(2026, 1, 2, 3, 4, 5))
    '2026-01-02T03:04:05+00:00'
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


class Base(DeclarativeBase):
    """Base of every table."""

    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    """A hospital or lab that sends cases; its users see its cases."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A person or script with one role at one site."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    # argon2id hash; None for token-only accounts
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    site: Mapped[Site] = relationship(lazy="joined")


class ApiToken(Base):
    """An API token; only its SHA-256 digest is stored, the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    # the token's first characters, to tell tokens apart in listings and revoke one
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class Case(Base):
    """A patient's case at one site, under a pseudonym (never a real identifier)."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("site_id", "pseudonym", name="uq_cases_site_pseudonym"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # what the API shows: random, so case numbers cannot be guessed or counted
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    site: Mapped[Site] = relationship(lazy="joined")


class Share(Base):
    """Access granted by a site: one case (``case_id``) or all its cases (``case_id`` None),
    to a whole site or to one user."""

    __tablename__ = "shares"
    __table_args__ = (
        CheckConstraint(
            "(grantee_site_id IS NULL) <> (grantee_user_id IS NULL)", name="one_grantee"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    grantee_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    grantee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One line of the audit log: who did what to which object, when. Append-only: the
    database refuses updates and deletes (triggers made by the migrations)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # the name is kept as written, so the log stays readable whatever happens to accounts
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict | None] = mapped_column(JSON)
    client: Mapped[str | None] = mapped_column(String(64))


UPLOAD_STATES = ("open", "stored", "refused")


class Upload(Base):
    """One ``shindan deid`` export being sent by a site: its manifest, then its files in
    chunks; on completion checked and stored, or refused with the reason (nothing kept)."""

    __tablename__ = "uploads"
    __table_args__ = (CheckConstraint(f"state IN {UPLOAD_STATES!r}", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # the same manifest sent again resumes (or finds) this upload
    manifest_sha256: Mapped[str] = mapped_column(String(64), index=True)
    manifest: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str | None] = mapped_column(Text)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    site: Mapped[Site] = relationship(lazy="joined")
    files: Mapped[list[UploadFile]] = relationship(
        order_by="UploadFile.index", cascade="all, delete-orphan", lazy="selectin"
    )


class UploadFile(Base):
    """A file listed by an upload's manifest, and how many of its bytes have arrived."""

    __tablename__ = "upload_files"
    __table_args__ = (UniqueConstraint("upload_id", "index", name="uq_upload_files_upload_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    # comma-separated pseudonyms, as in the manifest
    cases: Mapped[str] = mapped_column(String(1024))
    modality: Mapped[str | None] = mapped_column(String(32))
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    # the site stores this content already: not sent, not stored again
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)


class CaseFile(Base):
    """A stored file of a case; the content lives once per SHA-256 under the files folder."""

    __tablename__ = "case_files"
    __table_args__ = (UniqueConstraint("case_id", "sha256", name="uq_case_files_case_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # the file's path inside its export (shown to users; never used to address storage)
    path: Mapped[str] = mapped_column(String(512))
    modality: Mapped[str | None] = mapped_column(String(32))
    upload_id: Mapped[int | None] = mapped_column(ForeignKey("uploads.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BrowserSession(Base):
    """A browser's login; the cookie's secret is stored as its SHA-256 digest."""

    __tablename__ = "browser_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Job(Base):
    """An AI task run on a case: queued, claimed by a worker under a lease it renews while
    running (a worker that dies lets its lease expire, and the job is queued again), then
    done, failed or cancelled, with its log and an outputs folder written whole."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(f"state IN {JOB_STATES!r}", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    task: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    log: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the finished outputs, relative to the service folder (None until done)
    outputs: Mapped[str | None] = mapped_column(String(256))

    case: Mapped[Case] = relationship(lazy="joined")
