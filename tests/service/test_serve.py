"""``shindan serve`` as a real process on a free loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from shindan.service import accounts
from shindan.service.cases import add_case
from shindan.service.db import open_service

from .conftest import free_port
from .test_intake import _hand_export, make_export

SHINDAN = str(Path(sys.executable).with_name("shindan"))


def get(url: str, token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def request(method: str, url: str, token: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def wait_up(process: subprocess.Popen, base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if get(f"{base}/api/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("shindan serve did not answer in time")


def test_serve_answers_health_and_cases(service_dir, service_db, tmp_path):
    database = open_service(service_dir)
    with database.session() as session:
        accounts.add_site(session, "kyoto")
        accounts.add_user(session, "ana", "kyoto", "uploader")
        token = accounts.issue_token(session, "ana")[1]
        case = add_case(session, accounts.get_site(session, "kyoto"), "c-0001", "test")
        case_id = case.public_id
    database.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # the recorded --db may be repeated
    extra = ["--db", service_db] if service_db else []
    cmd = [SHINDAN, "serve", "--data", str(service_dir), "--port", str(port), *extra]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(process, base)
        status, health = get(f"{base}/api/health")
        assert health["database"] == ("postgresql" if service_db else "sqlite")
        assert get(f"{base}/api/cases")[0] == 401
        status, cases = get(f"{base}/api/cases", token)
        assert status == 200 and [(c["id"], c["pseudonym"]) for c in cases] == [(case_id, "c-0001")]
        assert get(f"{base}/api/cases/{case_id}", token)[1]["site"] == "kyoto"
        status, spec = get(f"{base}/openapi.json")
        assert status == 200 and "/api/cases" in spec["paths"]

        # shindan upload sends a real deid export, resuming an upload a client left half done
        export = make_export(tmp_path, "export", [1, 2])
        manifest = json.loads((export / "manifest.json").read_text())
        started = request(
            "POST", f"{base}/api/uploads", token, (export / "manifest.json").read_bytes()
        )
        first = (export / manifest["files"][0]["path"]).read_bytes()
        url0 = f"{base}/api/uploads/{started['id']}/files/0?offset=0"
        assert request("PUT", url0, token, first[:1000])["received"] == 1000
        env = {**os.environ, "SHINDAN_TOKEN": token}
        sent = subprocess.run(
            [SHINDAN, "upload", str(export), "--url", base], capture_output=True, text=True,
            env=env, timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        done = json.loads(sent.stdout)
        assert done["id"] == started["id"] and done["state"] == "stored"
        status, cases = get(f"{base}/api/cases", token)
        assert {c["pseudonym"] for c in cases} == {"c-0001", manifest["cases"][0]}

        if service_db is None:  # (does not depend on the database)
            # an export the service's check refuses: exit 1, the reason on stderr
            bad = _hand_export(tmp_path / "bad", ["tel 03-1234-5678"])
            refused = subprocess.run(
                [SHINDAN, "upload", str(bad), "--url", base], capture_output=True, text=True,
                env=env, timeout=120,
            )  # fmt: skip
            assert refused.returncode == 1 and refused.stdout == "", refused.stderr
            last = refused.stderr.strip().splitlines()[-1]
            assert last.startswith("refused: deid check found 2 problem(s)"), last
            assert "phone number '03-1234-5678'" in last
            # a second server on the same port is refused with one line
            busy = subprocess.run(
                [SHINDAN, "serve", "--data", str(service_dir), "--port", str(port)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert busy.returncode == 2, busy.stderr
            assert busy.stderr.startswith("error: cannot listen"), busy.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err and "Traceback" not in err
    # the port is free again (a new server may bind it)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_serve_option_errors(tmp_path):
    for args, message in (
        (["--ray", "127.0.0.1:6379"], "error: --ray 127.0.0.1:6379: Ray"),
        (["--db", "mysql://x@h/db"], "error: --db: unsupported database"),
        (["--host", "no-such-host.invalid"], "error: --host no-such-host.invalid"),
    ):
        p = subprocess.run(
            [SHINDAN, "serve", "--data", str(tmp_path / "svc"), "--port", str(free_port()), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert p.returncode == 2 and p.stdout == "", (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), p.stderr
    # options are checked before the service folder is made
    assert not (tmp_path / "svc").exists()


def test_unreachable_database_is_one_line(tmp_path):
    url, port = f"postgresql://nobody@127.0.0.1:{free_port()}/none", str(free_port())
    p = subprocess.run(
        [SHINDAN, "serve", "--data", str(tmp_path / "svc"), "--db", url, "--port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: cannot open the database") and p.stderr.count("\n") == 1
    assert "nobody@127.0.0.1" in p.stderr
    # the folder made for it is removed again (it would hold the unusable URL)
    assert not (tmp_path / "svc").exists()


def test_upload_errors_are_one_line(tmp_path):
    export = _hand_export(tmp_path / "e", [None])
    env = {k: v for k, v in os.environ.items() if k != "SHINDAN_TOKEN"}
    down = f"http://127.0.0.1:{free_port()}"
    for args, extra, message in (
        ([str(export), "--url", down], {}, "error: give the API token"),
        ([str(export), "--url", down], {"SHINDAN_TOKEN": "shd_x"}, "error: cannot reach"),
        ([str(tmp_path), "--url", down], {"SHINDAN_TOKEN": "shd_x"}, "error: "),
    ):
        p = subprocess.run(
            [SHINDAN, "upload", *args], capture_output=True, text=True, env={**env, **extra},
            timeout=60,
        )  # fmt: skip
        assert p.returncode == 2 and p.stdout == "", p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), p.stderr
