"""100 uploads, 16 at a time, against a real ``shindan serve`` (loopback): every upload is
stored, every content once, checksums match; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from shindan.service import accounts
from shindan.service.db import open_service

from .conftest import free_port
from .test_serve import SHINDAN, wait_up

CLIENTS = 100


def request(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def export_of(root: Path, n: int) -> Path:
    """An export of case n: one image of its own and one every export shares."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    case = f"KYOTO-{letters[n % 26]}{letters[n // 26]}AAAAAAAA"  # a base32 pseudonym
    (root / case).mkdir(parents=True)
    files = []
    for i, colour in enumerate([(n, 0, 0), (9, 9, 9)], start=1):
        path = root / case / f"image-{i:04d}.png"
        Image.new("RGB", (40, 40), colour).save(path)
        data = path.read_bytes()
        files.append(
            {"path": f"{case}/{path.name}", "sha256": hashlib.sha256(data).hexdigest(),
             "bytes": len(data), "case": case, "modality": "OT"}
        )  # fmt: skip
    manifest = {"format": "shindan-deid-export", "version": 1, "site": "KYOTO", "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def upload(base: str, token: str, export: Path) -> str:
    status, up = request(
        "POST", f"{base}/api/uploads", token, (export / "manifest.json").read_bytes()
    )
    assert status == 201, up
    for f in up["files"]:
        if f["status"] != "duplicate":
            data = (export / f["path"]).read_bytes()
            url = f"{base}/api/uploads/{up['id']}/files/{f['index']}?offset=0"
            status, out = request("PUT", url, token, data)
            assert status == 200, out
    status, done = request("POST", f"{base}/api/uploads/{up['id']}/complete", token)
    assert status == 200, done
    return done["state"]


@pytest.mark.slow
def test_concurrent_uploads(service_dir, tmp_path):
    database = open_service(service_dir)
    with database.session() as session:
        accounts.add_site(session, "kyoto")
        accounts.add_user(session, "ana", "kyoto", "uploader")
        token = accounts.issue_token(session, "ana")[1]
    database.close()
    exports = [export_of(tmp_path / f"e{n}", n) for n in range(CLIENTS)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [SHINDAN, "serve", "--data", str(service_dir), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_up(process, base)
        with ThreadPoolExecutor(max_workers=16) as pool:
            states = list(pool.map(lambda e: upload(base, token, e), exports))
        assert states == ["stored"] * CLIENTS
        status, cases = request("GET", f"{base}/api/cases?limit=1000", token)
        assert status == 200 and len(cases) == CLIENTS
        # one upload completed by several requests at once: stored once, all answer alike
        extra = export_of(tmp_path / "extra", CLIENTS)
        status, up = request(
            "POST", f"{base}/api/uploads", token, (extra / "manifest.json").read_bytes()
        )
        for f in up["files"]:
            if f["status"] != "duplicate":
                url = f"{base}/api/uploads/{up['id']}/files/{f['index']}?offset=0"
                assert request("PUT", url, token, (extra / f["path"]).read_bytes())[0] == 200
        complete = f"{base}/api/uploads/{up['id']}/complete"
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda _: request("POST", complete, token), range(6)))
        assert {(s, a["state"]) for s, a in answers} == {(200, "stored")}
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    # every content stored once, under its own hash
    blobs = [p for p in (service_dir / "files").rglob("*") if p.is_file()]
    assert len(blobs) == CLIENTS + 2
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
