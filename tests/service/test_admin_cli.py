"""``shindan admin``: sites, users, tokens as the contract writes them, on SQLite and PostgreSQL.

The contract's command forms run as real subprocesses; the other checks call the same typer
app in-process (fast) and look at what the database holds.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from shindan.errors import ServiceError
from shindan.service.cli import app as admin_app
from shindan.service.db import open_service
from shindan.service.models import ApiToken, User
from shindan.service.security import token_digest, verify_password

SHINDAN = str(Path(sys.executable).with_name("shindan"))


def shindan(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SHINDAN, *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def admin(*args: str, stdin: str | None = None):
    """``shindan admin ARGS`` in-process; a ServiceError propagates as the CLI's one-line error."""
    result = CliRunner().invoke(admin_app, list(args), input=stdin)
    if isinstance(result.exception, ServiceError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def tokens_in_db(data: Path) -> list[ApiToken]:
    database = open_service(data, create=False)
    try:
        with database.session() as session:
            return list(session.scalars(select(ApiToken)))
    finally:
        database.close()


def test_contract_forms(service_dir):
    p = shindan("admin", "site", "add", "kyoto", "--data", str(service_dir))
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    p = shindan(
        "admin", "user", "add", "ana", "--site", "kyoto", "--role", "uploader",
        "--data", str(service_dir), "--token",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip()
    assert p.stdout == token + "\n" and token.startswith("shd_") and len(token) == 47
    # stored only as its digest
    [record] = tokens_in_db(service_dir)
    assert record.digest == token_digest(token) and token not in (record.digest, record.prefix)
    if (service_dir / "shindan.db").exists():
        for f in service_dir.glob("shindan.db*"):
            assert token.encode() not in f.read_bytes()


def test_contract_errors_are_one_line(tmp_path):
    # the message format does not depend on the database: SQLite only (subprocesses are slow)
    data = ["--data", str(tmp_path / "svc")]
    admin("site", "add", "kyoto", *data)
    for args in (
        ["user", "add", "bob", "--site", "nowhere", "--role", "admin"],
        ["user", "add", "bob", "--site", "kyoto", "--role", "boss"],
        ["user", "add", "bad name", "--site", "kyoto", "--role", "admin"],
    ):
        p = shindan("admin", *args, *data, "--token")
        assert p.returncode == 2 and p.stdout == "", (args, p.stdout)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


def test_refused_commands_change_nothing(service_dir):
    data = ["--data", str(service_dir)]
    admin("site", "add", "kyoto", *data)
    for args, message in (
        (["--site", "nowhere", "--role", "admin"], "no site 'nowhere'"),
        (["--site", "kyoto", "--role", "boss"], "role 'boss' is unknown"),
    ):
        with pytest.raises(ServiceError, match=message):
            admin("user", "add", "bob", *args, *data, "--token")
    with pytest.raises(ServiceError, match="user name 'bad name'"):
        admin("user", "add", "bad name", "--site", "kyoto", "--role", "admin", *data)
    assert admin("user", "list", *data).stdout == ""
    assert tokens_in_db(service_dir) == []


def test_lists_revoke_disable_and_audit(service_dir):
    data = ["--data", str(service_dir)]
    admin("site", "add", "kyoto", *data)
    admin("site", "add", "osaka", *data)
    token = admin("user", "add", "ana", "--site", "kyoto", "--role", "uploader", "--token", *data)
    token = token.stdout.strip()
    admin("user", "add", "rui", "--site", "osaka", "--role", "researcher", *data)
    second = admin("token", "add", "rui", "--label", "notebook", *data).stdout.strip()
    assert second != token
    assert admin("site", "list", *data).stdout.splitlines() == [
        "kyoto\t1 users\t0 cases",
        "osaka\t1 users\t0 cases",
    ]
    users = admin("user", "list", "--site", "osaka", *data).stdout.splitlines()
    assert users == ["rui\tosaka\tresearcher\tactive\t1 tokens"]
    listing = admin("token", "list", *data).stdout
    assert token[:12] in listing and token not in listing and second not in listing

    with pytest.raises(ServiceError, match="at least 6"):
        admin("token", "revoke", "shd_", *data)
    admin("token", "revoke", second[:12], *data)
    rows = admin("token", "list", "--user", "rui", *data).stdout.splitlines()
    assert len(rows) == 1 and rows[0].endswith("\trevoked") and "notebook" in rows[0]
    with pytest.raises(ServiceError, match="no live token"):
        admin("token", "revoke", second[:12], *data)

    admin("user", "disable", "ana", *data)
    assert "\tdisabled\t" in admin("user", "list", *data).stdout
    with pytest.raises(ServiceError, match="disabled"):
        admin("token", "add", "ana", *data)
    admin("user", "enable", "ana", *data)
    admin("site", "grant", "kyoto", "--to-user", "rui", *data)
    with pytest.raises(ServiceError, match="exactly one"):
        admin("site", "grant", "kyoto", *data)

    exported = list(csv.DictReader(io.StringIO(admin("audit", "export", *data).stdout)))
    assert [r["action"] for r in exported] == [
        "site.add", "site.add", "user.add", "token.add", "user.add", "token.add",
        "token.revoke", "user.disable", "user.enable", "site.grant",
    ]  # fmt: skip
    assert {r["actor"] for r in exported} == {"admin-cli"}
    since = admin("audit", "export", "--since", exported[-2]["id"], *data).stdout
    assert len(since.splitlines()) == 2  # header and the last entry


def test_duplicates_and_password(service_dir):
    data = ["--data", str(service_dir)]
    admin("site", "add", "kyoto", *data)
    with pytest.raises(ServiceError, match="exists already"):
        admin("site", "add", "kyoto", *data)
    admin("user", "add", "ana", "--site", "kyoto", "--role", "admin", "--password-stdin", *data,
          stdin="correct horse battery\n")  # fmt: skip
    with pytest.raises(ServiceError, match="exists already"):
        admin("user", "add", "ana", "--site", "kyoto", "--role", "pathologist", *data)
    with pytest.raises(ServiceError, match="at least 12"):
        admin("user", "add", "bo", "--site", "kyoto", "--role", "admin", "--password-stdin", *data,
              stdin="short\n")  # fmt: skip
    database = open_service(service_dir, create=False)
    try:
        with database.session() as session:
            user = session.scalar(select(User).where(User.name == "ana"))
            assert user.password_hash.startswith("$argon2id$")
            assert verify_password(user.password_hash, "correct horse battery")
            assert not verify_password(user.password_hash, "correct horse")
            assert session.scalar(select(User).where(User.name == "bo")) is None
    finally:
        database.close()


def test_service_folder_rules(tmp_path, service_db):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(ServiceError, match="not a shindan service folder"):
        admin("site", "add", "kyoto", "--data", str(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(ServiceError, match="no service folder"):
        admin("site", "list", "--data", str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ServiceError, match="not a database URL"):
        admin("site", "add", "kyoto", "--data", str(tmp_path / "svc"), "--db", "nonsense")

    # a --db given once is recorded; a different one later is refused
    data = tmp_path / "svc2"
    extra = ["--db", service_db] if service_db else []
    admin("site", "add", "kyoto", "--data", str(data), *extra)
    assert admin("site", "list", "--data", str(data)).stdout.startswith("kyoto\t")
    with pytest.raises(ServiceError, match="give that --db or none|cannot change"):
        admin("site", "list", "--data", str(data), "--db", "postgresql://x@127.0.0.1:1/other")
