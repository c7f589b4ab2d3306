"""The API's security, walked from its own OpenAPI spec: every route answers 401 without a
valid token, and a user never reaches another site's case (404, the same as a missing case)
unless it was shared. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select

from shindan.service import accounts
from shindan.service.models import ApiToken, Case

OPEN = {"/api/health", "/auth/login"}  # login checks a password instead


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method.upper(), op


def _example(schema: dict, spec: dict) -> object:
    """A small valid instance of a request body schema (required fields only)."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("type") == "object":
        return {k: _example(schema["properties"][k], spec) for k in schema.get("required", [])}
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": True}.get(
        schema.get("type"), "x"
    )


def _fill(path: str, case_id: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: case_id if m[1] == "case_id" else "1", path)


def _body(op: dict, spec: dict) -> dict:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return {}
    return {"json": _example(content["application/json"]["schema"], spec)}


def test_every_route_needs_a_valid_token(api):
    case_id = api.add_case("ana", "K1")
    spec = api.client.get("/openapi.json").json()
    operations = list(_operations(spec))
    assert len(operations) >= 8
    # a revoked token and a disabled user's token are refused like no token
    with api.database.session() as session:
        accounts.issue_token(session, "ben")
        revoked = session.scalar(select(ApiToken).where(ApiToken.user_id == 3)).prefix
        accounts.revoke_token(session, revoked)
        accounts.set_active(session, "rui", False)
    bad = {
        "none": {},
        "garbage": {"Authorization": "Bearer shd_not-a-token"},
        "basic": {"Authorization": "Basic YW5hOmFuYQ=="},
        "revoked": {"Authorization": f"Bearer {api.tokens['ben']}"},
        "disabled": {"Authorization": f"Bearer {api.tokens['rui']}"},
        "cookie": {"Cookie": "shindan_session=not-a-session"},
    }
    checked = 0
    for path, method, op in operations:
        if path in OPEN:
            assert "security" not in op
            continue
        token_or_cookie = [{"HTTPBearer": []}, {"APIKeyCookie": []}]
        assert op.get("security") == (
            token_or_cookie if path.startswith("/api/") else token_or_cookie[1:]
        ), path
        for why, headers in bad.items():
            api.client.cookies.clear()
            answer = api.client.request(
                method, _fill(path, case_id), headers=headers, **_body(op, spec)
            )
            assert answer.status_code == 401, (method, path, why, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked == len(bad) * (len(operations) - len(OPEN))
    # unknown paths under /api/ too: nothing about the API is told without a token
    assert api.client.get("/api/no-such-route").status_code == 401
    assert api.client.get("/api/health").status_code == 200
    assert api.client.get("/openapi.json").status_code == 200


def test_other_sites_cases_are_404_on_every_case_route(api):
    kyoto_case = api.add_case("ana", "K1")
    spec = api.client.get("/openapi.json").json()
    case_routes = [(p, m, op) for p, m, op in _operations(spec) if "{case_id}" in p]
    assert len(case_routes) >= 4
    for user in ("ben", "pat", "rui", "oad"):  # every role at osaka
        for path, method, op in case_routes:
            for case_id, why in ((kyoto_case, "other site"), ("0" * 32, "missing")):
                answer = api.call(method, _fill(path, case_id), user, **_body(op, spec))
                assert answer.status_code == 404, (user, method, path, why, answer.text)
                # the same answer for another site's case and a missing one
                assert answer.json() == {"detail": f"no case {case_id}"}
    # and kyoto's own users reach it
    assert api.call("GET", f"/api/cases/{kyoto_case}", "adm").status_code == 200
    assert api.call("GET", f"/api/cases/{kyoto_case}/shares", "ana").json() == []


def test_cases_listed_by_site_and_shares(api):
    k1 = api.add_case("ana", "K1")
    api.add_case("ana", "K2")
    api.add_case("ben", "O1")
    assert api.cases("ana") == ["K1", "K2"] and api.cases("adm") == ["K1", "K2"]
    assert api.cases("ben") == api.cases("pat") == ["O1"]

    # one case shared with one pathologist of osaka
    answer = api.call("POST", f"/api/cases/{k1}/shares", "ana", json={"user": "pat"})
    assert answer.status_code == 201, answer.text
    share = answer.json()
    assert share["user"] == "pat" and share["site"] is None
    assert api.cases("pat") == ["K1", "O1"] and api.cases("ben") == ["O1"]
    assert api.call("GET", f"/api/cases/{k1}", "pat").json()["site"] == "kyoto"
    # who may see a case is managed by the case's own site only
    assert api.call("GET", f"/api/cases/{k1}/shares", "pat").status_code == 403
    assert (
        api.call("POST", f"/api/cases/{k1}/shares", "pat", json={"site": "osaka"}).status_code
        == 403
    )
    assert api.call("POST", f"/api/cases/{k1}/shares", "ana", json={}).status_code == 422
    assert (
        api.call("POST", f"/api/cases/{k1}/shares", "ana", json={"site": "nara"}).status_code == 422
    )
    answer = api.call("DELETE", f"/api/cases/{k1}/shares/{share['id']}", "ana")
    assert answer.status_code == 204
    assert api.cases("pat") == ["O1"]
    assert api.call("GET", f"/api/cases/{k1}", "pat").status_code == 404

    # a case shared with a whole site
    api.call("POST", f"/api/cases/{k1}/shares", "adm", json={"site": "osaka"})
    assert api.cases("ben") == api.cases("rui") == ["K1", "O1"]

    # a site-wide grant (shindan admin site grant) to one researcher: all kyoto cases
    with api.database.session() as session:
        accounts.grant_site(session, "kyoto", to_user="rui")
    assert api.cases("rui") == ["K1", "K2", "O1"] and api.cases("pat") == ["K1", "O1"]


def test_roles_and_case_input(api):
    for user in ("pat", "rui"):
        answer = api.call("POST", "/api/cases", user, json={"pseudonym": "X1"})
        assert answer.status_code == 403, answer.text
    case = api.call("POST", "/api/cases", "oad", json={"pseudonym": "X1"}).json()
    assert case["site"] == "osaka" and re.fullmatch(r"[0-9a-f]{32}", case["id"])
    assert case["created_at"].endswith("+00:00")
    assert api.call("POST", "/api/cases", "ben", json={"pseudonym": "X1"}).status_code == 409
    # the same pseudonym at another site is another patient
    assert api.call("POST", "/api/cases", "ana", json={"pseudonym": "X1"}).status_code == 201
    for bad in ("", "../etc", "a b", "x" * 129, "名前"):
        answer = api.call("POST", "/api/cases", "ben", json={"pseudonym": bad})
        assert answer.status_code == 422, bad
    assert api.call("POST", "/api/cases", "ben", content=b"{not json").status_code == 422
    assert api.call("GET", "/api/cases?limit=0", "ben").status_code == 422
    me = api.call("GET", "/api/me", "pat").json()
    assert me == {"name": "pat", "site": "osaka", "role": "pathologist", "csrf_token": None}
    with api.database.session() as session:
        assert session.scalar(select(Case).where(Case.pseudonym == "")) is None


def test_reads_are_audited(api):
    o1 = api.add_case("ben", "O1")
    api.cases("pat")
    api.call("GET", f"/api/cases/{o1}", "pat")
    assert api.call("GET", "/api/audit", "pat").status_code == 403
    entries = api.call("GET", "/api/audit", "oad").json()
    reads = [(e["actor"], e["action"], e["target"]) for e in entries if e["actor"] == "pat"]
    assert reads == [("pat", "case.list", None), ("pat", "case.read", f"case:{o1}")]
    assert all(e["client"] == "testclient" for e in entries if e["actor"] == "pat")
    since = entries[-1]["id"]
    answer = api.call("GET", f"/api/audit?format=csv&since={since}", "adm")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    # the reading of the log is itself logged
    assert [(r["actor"], r["action"]) for r in rows] == [("oad", "audit.read")]
    # the token's last use is recorded
    with api.database.session() as session:
        used = session.scalar(select(ApiToken).where(ApiToken.prefix == api.tokens["pat"][:12]))
        assert used.last_used_at is not None


def test_health_and_page(api):
    health = api.client.get("/api/health").json()
    assert health["status"] == "ok" and health["database"] in ("sqlite", "postgresql")
    page = api.client.get("/")
    assert page.status_code == 200 and "<title>shindan service</title>" in page.text
    assert api.client.get("/docs").status_code == 404  # no CDN-loaded pages
    for answer in (page, api.call("GET", "/api/cases", "ana")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    assert api.call("GET", "/api/cases", "ana").headers["cache-control"] == "no-store"


def test_values_the_databases_cannot_hold_are_refused(api):
    # found by the fuzz test: integers past 64 bits and NUL characters made 500s
    huge = 2**63
    for url in (f"/api/cases?offset={huge}", f"/api/audit?since={huge}"):
        assert api.call("GET", url, "adm").status_code == 422, url
    assert api.call("GET", "/api/cases/%00", "adm").status_code == 400
    assert api.call("GET", "/api/cases?limit=1%00", "adm").status_code == 400
    assert api.client.get("/api/cases/%00").status_code == 401  # credentials come first
    answer = api.client.post("/auth/login", json={"name": "\x00", "password": "x"})
    assert answer.status_code == 422
    case = api.add_case("ana", "K1")
    for body in ({"site": "os\x00aka"}, {"user": "\x00"}):
        assert api.call("POST", f"/api/cases/{case}/shares", "ana", json=body).status_code == 422
    assert api.call("POST", "/api/cases", "ana", json={"pseudonym": "a\x00"}).status_code == 422
    manifest = b'{"format": "shindan-deid-export", "version": 1, "site": "k\\u0000", "files": []}'
    answer = api.call("POST", "/api/uploads", "ana", content=manifest)
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"]
