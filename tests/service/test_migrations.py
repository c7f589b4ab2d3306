"""The shipped migrations create exactly the tables of the models, on SQLite and PostgreSQL,
and the audit log refuses changes at the database level."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from shindan.service import audit
from shindan.service.db import alembic_config, open_service
from shindan.service.models import Base


def test_migrations_match_models(service_dir):
    database = open_service(service_dir)
    try:
        with database.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
            assert ctx.get_current_revision() is not None
    finally:
        database.close()


def test_upgrade_twice_and_downgrade(service_dir):
    # opening again is a no-op; downgrading to nothing removes every table
    open_service(service_dir).close()
    database = open_service(service_dir)
    try:
        with database.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        with database.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert set(inspect(database.engine).get_table_names()) >= set(Base.metadata.tables)
    finally:
        database.close()


def test_audit_log_is_append_only(service_dir):
    database = open_service(service_dir)
    try:
        with database.session() as session:
            audit.record(session, "tester", "case.read", "case:x")
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                with database.engine.begin() as conn:
                    conn.execute(text(statement))
        with database.session() as session:
            assert [e.actor for e in audit.entries(session)] == ["tester"]
    finally:
        database.close()
