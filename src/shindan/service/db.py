"""Engines, sessions and schema upgrades (Alembic migrations shipped in the package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shindan.errors import ServiceError
from shindan.service.settings import Settings, load_settings, mask_url

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on and a wait instead of 'locked'.

    Examples
    --------
    >>> make_engine("sqlite://").dialect.name
    'sqlite'
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API objects
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(connection=None):  # noqa: ANN001, ANN201 - alembic types stay inside
    """The Alembic configuration of the shipped migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is already there)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")


class Database:
    """The service's database: an engine, a session factory, the schema upgraded.

    Parameters
    ----------
    settings : Settings
        The service folder and database URL.
    migrate : bool
        Run the migrations first (default).
    """

    def __init__(self, settings: Settings, migrate: bool = True) -> None:
        try:
            self._open(settings, migrate)
        except ServiceError:
            # a folder made for a database that cannot be opened is not left behind
            if settings.created:
                shutil.rmtree(settings.data, ignore_errors=True)
            raise

    def _open(self, settings: Settings, migrate: bool) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        try:
            if migrate:
                upgrade(self.engine)
            else:
                with self.engine.connect():
                    pass
        except OperationalError as exc:
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
            raise ServiceError(
                f"cannot open the database {mask_url(settings.db_url)} ({reason})"
            ) from None
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise ServiceError(
                f"database {mask_url(settings.db_url)}: {type(exc).__name__}"
            ) from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block, rolled back on an error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()


def open_service(data: Path | str, db: str | None = None, create: bool = True) -> Database:
    """The database of the service folder ``data`` (created when new), schema upgraded.

    Examples
    --------
    >>> import tempfile
    >>> database = open_service(tempfile.mkdtemp() + "/svc")
    >>> database.settings.dialect
    'sqlite'
    >>> database.close()
    """
    return Database(load_settings(Path(data), db, create=create))
