"""Fixtures of the service tests: every test that takes ``service_db`` runs twice, on the
embedded SQLite database and on a real PostgreSQL cluster the tests start (initdb on a free
loopback port, removed afterwards). The PostgreSQL runs skip with a one-line reason when the
server programs are not installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_bin() -> Path | None:
    # Debian keeps the server programs out of PATH, one folder per major version
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    port: int
    user: str = "shindan"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth, no fsync)."""
    bindir = _server_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed")
    # PostgreSQL refuses to run as root: run it as the 'postgres' account then
    as_user: dict = {}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' account to run PostgreSQL")
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="shindan-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, cwd=root, timeout=120, **as_user)

    started = False
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "shindan",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        started = True
        yield Cluster(port=port)
    finally:
        if started:
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                cwd=root,
                timeout=60,
                **as_user,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def service_db(request) -> str | None:
    """``None`` (the embedded SQLite database) or the URL of a new, empty PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    import psycopg

    cluster = request.getfixturevalue("postgres_cluster")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield cluster.url(name)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def service_dir(tmp_path, service_db) -> Path:
    """A new service folder tied to ``service_db`` (schema not created yet)."""
    from shindan.service.settings import load_settings

    data = tmp_path / "svc"
    load_settings(data, service_db)
    return data


@pytest.fixture
def limits():
    """Intake limits of the ``api`` fixture: small chunks, so test files take several."""
    from shindan.service.intake import Limits

    return Limits(manifest_bytes=64 * 1024, chunk_bytes=8192, upload_bytes=10**6, files=50)


USERS = {  # name: (site, role)
    "ana": ("kyoto", "uploader"),
    "adm": ("kyoto", "admin"),
    "ben": ("osaka", "uploader"),
    "pat": ("osaka", "pathologist"),
    "rui": ("osaka", "researcher"),
    "oad": ("osaka", "admin"),
}


@dataclass
class Api:
    client: object  # fastapi.testclient.TestClient
    tokens: dict[str, str]
    database: object

    def call(self, method: str, path: str, user: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def cases(self, user: str) -> list[str]:
        answer = self.call("GET", "/api/cases", user)
        assert answer.status_code == 200, answer.text
        return sorted(c["pseudonym"] for c in answer.json())

    def add_case(self, user: str, pseudonym: str) -> str:
        answer = self.call("POST", "/api/cases", user, json={"pseudonym": pseudonym})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]


@pytest.fixture
def api(service_dir, limits):
    """Two sites (kyoto, osaka), a user of every role, their tokens; the app in a TestClient."""
    from fastapi.testclient import TestClient

    from shindan.service import accounts
    from shindan.service.app import create_app
    from shindan.service.db import open_service

    database = open_service(service_dir)
    tokens = {}
    with database.session() as session:
        for site in ("kyoto", "osaka"):
            accounts.add_site(session, site)
        for name, (site, role) in USERS.items():
            accounts.add_user(session, name, site, role)
            tokens[name] = accounts.issue_token(session, name)[1]
    with TestClient(create_app(database, limits)) as client:
        yield Api(client, tokens, database)
    database.close()
