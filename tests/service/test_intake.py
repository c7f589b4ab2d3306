"""Intake of ``shindan deid`` exports: chunked, resumable, SHA-256 checked, duplicates known by
hash, ``deid check`` on arrival (refused with the reason, nothing kept), hostile manifests and
oversized bodies refused. Exports are made by the real ``shindan deid``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import func, select

from shindan.service.models import Case, CaseFile, Upload

from .test_api import _fill, _operations


def make_export(tmp: Path, name: str, seeds: list[int], site: str = "KYOTO") -> Path:
    """A real ``shindan deid`` export of random 64x64 PNGs of one patient."""
    from shindan.deid.export import export

    source = tmp / f"{name}-in" / "patient-7"
    source.mkdir(parents=True)
    for seed in seeds:
        pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(source / f"img{seed}.png")
    out = tmp / name
    export([source], out, site, tmp / "link.bin", tmp / "key", ocr=False, progress=False)
    return out


def send(api, user: str, export: Path, chunk: int = 5000, complete: bool = True) -> dict:
    """Upload an export the way a client does: manifest, needed files in chunks, complete."""
    manifest = (export / "manifest.json").read_bytes()
    answer = api.call("POST", "/api/uploads", user, content=manifest)
    assert answer.status_code in (200, 201), answer.text
    upload = answer.json()
    for f in upload["files"]:
        if f["status"] == "duplicate":
            continue
        data = (export / f["path"]).read_bytes()
        for offset in range(f["received"], len(data), chunk):
            put = api.call(
                "PUT",
                f"/api/uploads/{upload['id']}/files/{f['index']}?offset={offset}",
                user,
                content=data[offset : offset + chunk],
            )
            assert put.status_code == 200, put.text
    if not complete:
        return upload
    answer = api.call("POST", f"/api/uploads/{upload['id']}/complete", user)
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_blobs(api) -> list[Path]:
    files = api.database.settings.files
    return sorted(p for p in files.rglob("*") if p.is_file()) if files.exists() else []


def staging_left(api) -> list[Path]:
    uploads = api.database.settings.uploads
    return list(uploads.iterdir()) if uploads.exists() else []


def test_export_in_chunks_resumed_and_stored(api, tmp_path):
    export = make_export(tmp_path, "e1", [1, 2])
    manifest = json.loads((export / "manifest.json").read_text())
    pseudonym = manifest["cases"][0]
    first = api.call("POST", "/api/uploads", "ana", content=(export / "manifest.json").read_bytes())
    assert first.status_code == 201, first.text
    upload = first.json()
    assert upload["state"] == "open" and [f["status"] for f in upload["files"]] == ["needed"] * 2
    data0 = (export / upload["files"][0]["path"]).read_bytes()
    assert len(data0) > 8192  # more than one chunk of the test limits
    url0 = f"/api/uploads/{upload['id']}/files/0"
    assert (
        api.call("PUT", f"{url0}?offset=0", "ana", content=data0[:4000]).json()["received"] == 4000
    )
    # the client stops; sending the same manifest again finds the same upload and its offsets
    again = api.call("POST", "/api/uploads", "ana", content=(export / "manifest.json").read_bytes())
    assert again.status_code == 200 and again.json()["id"] == upload["id"]
    assert again.json()["files"][0] == {**upload["files"][0], "received": 4000, "status": "partial"}
    # a chunk at another offset is refused with the offset to resume from
    wrong = api.call("PUT", f"{url0}?offset=0", "ana", content=data0[:10])
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == "4000"
    early = api.call("POST", f"/api/uploads/{upload['id']}/complete", "ana")
    assert early.status_code == 409 and "not complete" in early.json()["detail"]

    done = send(api, "ana", export)
    assert done["id"] == upload["id"] and done["state"] == "stored", done
    assert done["reason"] is None

    [case] = [c for c in api.call("GET", "/api/cases", "ana").json() if c["pseudonym"] == pseudonym]
    files = api.call("GET", f"/api/cases/{case['id']}/files", "ana").json()
    assert [(f["path"], f["sha256"]) for f in files] == [
        (f["path"], f["sha256"]) for f in manifest["files"]
    ]
    got = api.call("GET", f"/api/cases/{case['id']}/files/{files[0]['id']}", "adm")
    assert got.status_code == 200 and got.content == data0
    # one stored copy per content, named by its hash; the staging area is gone
    assert [p.name for p in stored_blobs(api)] == sorted(f["sha256"] for f in manifest["files"])
    assert staging_left(api) == []
    # another site sees neither the case nor its files
    assert api.call("GET", f"/api/cases/{case['id']}/files", "ben").status_code == 404
    actions = [e["action"] for e in api.call("GET", "/api/audit", "adm").json()]
    assert {"upload.open", "case.add", "upload.store", "file.read"} <= set(actions)


def test_duplicates_recognised_by_hash(api, tmp_path):
    first = send(api, "ana", make_export(tmp_path, "e1", [1, 2]))
    assert first["state"] == "stored"
    # a later export holding the same two images and a new one: only the new one is sent
    export = make_export(tmp_path, "e2", [1, 2, 3])
    manifest = (export / "manifest.json").read_bytes()
    opened = api.call("POST", "/api/uploads", "ana", content=manifest).json()
    assert [f["status"] for f in opened["files"]] == ["duplicate", "duplicate", "needed"]
    sent = api.call("PUT", f"/api/uploads/{opened['id']}/files/0?offset=0", "ana", content=b"x")
    assert sent.status_code == 409 and "duplicate" in sent.json()["detail"]
    second = send(api, "ana", export)
    assert second["id"] == opened["id"] and second["state"] == "stored"
    assert len(stored_blobs(api)) == 3
    # the same manifest again: recognised, nothing stored twice
    third = api.call("POST", "/api/uploads", "ana", content=manifest)
    assert third.status_code == 200 and third.json()["id"] == opened["id"]
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(CaseFile)) == 3
        assert session.scalar(select(func.count()).select_from(Upload)) == 2
    # another site's identical content is not a duplicate of it (hashes do not cross sites)
    other = api.call("POST", "/api/uploads", "ben", content=manifest.replace(b"KYOTO", b"OSAKA"))
    assert other.status_code == 201, other.text
    assert {f["status"] for f in other.json()["files"]} == {"needed"}


def _png_with_text(path: Path, text: str | None) -> None:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("Comment", text)
    Image.new("RGB", (32, 32), "white").save(path, pnginfo=info)


def _hand_export(root: Path, texts: list[str | None], site: str = "KYOTO") -> Path:
    case = f"{site}-ABCDEFGHIJ"
    (root / case).mkdir(parents=True)
    files = []
    for i, text in enumerate(texts, start=1):
        path = root / case / f"image-{i:04d}.png"
        _png_with_text(path, text)
        data = path.read_bytes()
        files.append(
            {
                "path": f"{case}/{path.name}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "case": case,
                "modality": "OT",
            }
        )
    manifest = {"format": "shindan-deid-export", "version": 1, "site": site, "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_check_failure_refuses_and_keeps_nothing(api, tmp_path):
    export = _hand_export(tmp_path / "bad", [None, "call 03-1234-5678 about this"])
    result = send(api, "ana", export)
    assert result["state"] == "refused"
    assert "image-0002.png" in result["reason"] and "phone number" in result["reason"]
    assert stored_blobs(api) == [] and staging_left(api) == []
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 0
        assert session.scalar(select(func.count()).select_from(CaseFile)) == 0
    # a refused upload is final; the same manifest starts a new one (after the site fixed it)
    again = api.call("POST", "/api/uploads", "ana", content=(export / "manifest.json").read_bytes())
    assert again.status_code == 201 and again.json()["id"] != result["id"]
    # a clean hand-made export passes the same check
    assert send(api, "ana", _hand_export(tmp_path / "good", [None]))["state"] == "stored"


@pytest.mark.parametrize(
    "path",
    [
        "../KYOTO-ABCDEFGHIJ/image-0001.png",
        "/etc/passwd",
        "KYOTO-ABCDEFGHIJ/../../image-0001.png",
        "KYOTO-ABCDEFGHIJ\\image-0001.png",
        "KYOTO-ABCDEFGHIJ/./image-0001.png",
        "KYOTO-ABCDEFGHIJ//image-0001.png",
        "KYOTO-ABCDEFGHIJ/run.sh",
        "KYOTO-ABCDEFGHIJ/Yamada Taro.png",
        "KYOTO-ABCDEFGHIJ/image-0001.png\x00.txt",
        "manifest.json",
    ],
)
def test_hostile_paths_refused(api, tmp_path, path):
    export = _hand_export(tmp_path / "e", [None])
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["files"][0]["path"] = path
    answer = api.call("POST", "/api/uploads", "ana", content=json.dumps(manifest).encode())
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "not a file name shindan deid writes" in detail or "NUL characters" in detail
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Upload)) == 0


def test_bad_manifests_chunks_and_sizes(api, tmp_path):
    export = _hand_export(tmp_path / "e", [None])
    good = json.loads((export / "manifest.json").read_text())

    def post(body: bytes, user: str = "ana"):
        return api.call("POST", "/api/uploads", user, content=body)

    def changed(**entry) -> bytes:
        m = json.loads(json.dumps(good))
        m["files"][0].update(entry)
        return json.dumps(m).encode()

    for body, status, words in (
        (b"{not json", 422, "not JSON"),
        (b"[]", 422, "not a shindan deid manifest"),
        (json.dumps({**good, "format": "other"}).encode(), 422, "not a shindan deid manifest"),
        (json.dumps({**good, "version": 2}).encode(), 422, "version 2"),
        (json.dumps({**good, "files": []}).encode(), 422, "no files"),
        (json.dumps({**good, "files": good["files"] * 2}).encode(), 422, "path twice"),
        (changed(sha256="0" * 63), 422, "64 lowercase hex"),
        (changed(bytes=-1), 422, "bytes must be"),
        (changed(bytes=10**7), 413, "over the limit"),
        (changed(case=""), 422, "names no case"),
        (changed(case="Yamada Taro"), 422, "pseudonym"),
        (b" " * (64 * 1024 + 1), 413, ""),
    ):
        answer = post(body)
        assert answer.status_code == status, (body[:60], answer.text)
        assert words in answer.text, answer.text
    # an export made for another site
    answer = post(json.dumps(good).encode(), user="ben")
    assert answer.status_code == 422 and "made for site 'KYOTO'" in answer.json()["detail"]
    # roles that do not upload
    assert post(json.dumps(good).encode(), user="pat").status_code == 403

    upload = post(json.dumps(good).encode()).json()
    url = f"/api/uploads/{upload['id']}/files/0"
    data = (export / good["files"][0]["path"]).read_bytes()
    too_long = api.call("PUT", f"{url}?offset=0", "ana", content=data + b"extra")
    assert too_long.status_code == 422 and "past its size" in too_long.json()["detail"]
    assert api.call("PUT", f"{url}?offset=0", "ana", content=b"x" * 8193).status_code == 413
    assert (
        api.call("PUT", f"/api/uploads/{upload['id']}/files/9", "ana", content=b"x").status_code
        == 422
    )
    # a complete file with other bytes than its SHA-256 says is discarded, to be sent again
    wrong = bytearray(data)
    wrong[-1] ^= 0xFF
    bad = api.call("PUT", f"{url}?offset=0", "ana", content=bytes(wrong))
    assert bad.status_code == 422 and "SHA-256 differs" in bad.json()["detail"]
    state = api.call("GET", f"/api/uploads/{upload['id']}", "ana").json()
    assert state["files"][0]["received"] == 0
    assert api.call("PUT", f"{url}?offset=0", "ana", content=data).json()["status"] == "received"
    done = api.call("POST", f"/api/uploads/{upload['id']}/complete", "ana").json()
    assert done["state"] == "stored"
    # a stored upload takes no more chunks; completing again changes nothing
    assert api.call("PUT", f"{url}?offset=0", "ana", content=data).status_code == 409
    assert api.call("POST", f"/api/uploads/{upload['id']}/complete", "ana").json() == done


def test_other_sites_uploads_are_404_on_every_upload_route(api, tmp_path):
    export = _hand_export(tmp_path / "e", [None])
    upload = api.call(
        "POST", "/api/uploads", "ana", content=(export / "manifest.json").read_bytes()
    )
    upload_id = upload.json()["id"]
    spec = api.client.get("/openapi.json").json()
    routes = [(p, m) for p, m, _ in _operations(spec) if "{upload_id}" in p]
    assert len(routes) == 3
    for path, method in routes:
        url = _fill(path, "x").replace("/x", f"/{upload_id}", 1)
        for user in ("ben", "oad"):
            answer = api.call(method, url, user, content=b"x")
            assert answer.status_code == 404, (user, method, path, answer.text)
        assert api.call(method, url, "pat", content=b"x").status_code == 403
    assert api.call("GET", "/api/uploads", "ben").json() == []
    assert [u["id"] for u in api.call("GET", "/api/uploads", "adm").json()] == [upload_id]


def test_abandoned_uploads_pruned(api, tmp_path):
    from typer.testing import CliRunner

    from shindan.service.cli import app as admin_app

    export = _hand_export(tmp_path / "e", [None])
    upload = api.call(
        "POST", "/api/uploads", "ana", content=(export / "manifest.json").read_bytes()
    )
    upload_id = upload.json()["id"]
    url = f"/api/uploads/{upload_id}/files/0?offset=0"
    assert api.call("PUT", url, "ana", content=b"\x89PNG").status_code == 200
    assert staging_left(api) != []
    data = ["--data", str(api.database.settings.data)]
    recent = CliRunner().invoke(admin_app, ["uploads", "prune", *data])
    assert recent.exit_code == 0 and "0 open upload(s) ended" in recent.output
    done = CliRunner().invoke(admin_app, ["uploads", "prune", "--older-than-hours", "0", *data])
    assert done.exit_code == 0 and "1 open upload(s) ended" in done.output
    state = api.call("GET", f"/api/uploads/{upload_id}", "ana").json()
    assert state["state"] == "refused" and state["reason"].startswith("abandoned")
    assert staging_left(api) == []
