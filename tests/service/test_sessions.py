"""Browser sessions: password login, HttpOnly SameSite=Strict cookie, CSRF token on every
change, logout and expiry; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from shindan.service import accounts
from shindan.service.models import BrowserSession, utcnow

PASSWORD = "correct horse battery staple"


def log_in(api, name: str, password: str = PASSWORD):
    api.client.cookies.clear()
    return api.client.post("/auth/login", json={"name": name, "password": password})


def test_login_cookie_and_csrf(api):
    with api.database.session() as session:
        accounts.set_password(session, "ana", PASSWORD)
        accounts.set_password(session, "ben", PASSWORD)
    answer = log_in(api, "ana")
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert (me["name"], me["site"], me["role"]) == ("ana", "kyoto", "uploader")
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    csrf = me["csrf_token"]

    # reads need the cookie only; changes need the CSRF token too
    assert api.client.get("/api/cases").status_code == 200
    assert api.client.get("/api/me").json()["csrf_token"] == csrf  # a reloaded page gets it
    body = {"pseudonym": "K1"}
    assert api.client.post("/api/cases", json=body).status_code == 403
    bad = api.client.post("/api/cases", json=body, headers={"X-CSRF-Token": "x" * 64})
    assert bad.status_code == 403 and "CSRF" in bad.json()["detail"]
    made = api.client.post("/api/cases", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text

    # another site's session sees nothing of it, and ana's CSRF token is not ben's
    assert log_in(api, "ben").status_code == 200
    assert api.client.get(f"/api/cases/{made.json()['id']}").status_code == 404
    assert (
        api.client.post("/api/cases", json=body, headers={"X-CSRF-Token": csrf}).status_code == 403
    )

    # logout ends the session at once
    ana = log_in(api, "ana")
    secret = api.client.cookies.get("shindan_session")
    assert api.client.post("/auth/logout").status_code == 403  # CSRF needed here too
    out = api.client.post("/auth/logout", headers={"X-CSRF-Token": ana.json()["csrf_token"]})
    assert out.status_code == 204
    api.client.cookies.set("shindan_session", secret)
    assert api.client.get("/api/cases").status_code == 401

    actions = [e["action"] for e in api.call("GET", "/api/audit", "adm").json()]
    assert actions.count("session.login") == 3 and "session.logout" in actions


def test_login_failures_look_alike(api):
    with api.database.session() as session:
        accounts.set_password(session, "ana", PASSWORD)
        accounts.set_password(session, "rui", PASSWORD)
        accounts.set_active(session, "rui", False)
    for name, password in (
        ("ana", "wrong password"),
        ("nobody", PASSWORD),
        ("ben", PASSWORD),  # no password set: tokens only
        ("rui", PASSWORD),  # disabled
        ("ana", ""),
    ):
        answer = log_in(api, name, password)
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json() == {"detail": "wrong name or password"}
        assert "set-cookie" not in answer.headers
    assert api.client.post("/auth/login", json={}).status_code == 422
    failed = [
        e
        for e in api.call("GET", "/api/audit", "adm").json()
        if e["action"] == "session.login-failed"
    ]
    assert len(failed) == 5


def test_expired_and_reset_sessions_end(api):
    with api.database.session() as session:
        accounts.set_password(session, "ana", PASSWORD)
    assert log_in(api, "ana").status_code == 200
    assert api.client.get("/api/me").status_code == 200
    with api.database.session() as session:
        session.execute(update(BrowserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert api.client.get("/api/me").status_code == 401

    assert log_in(api, "ana").status_code == 200
    with api.database.session() as session:
        accounts.set_password(session, "ana", "another long password")
        assert (
            session.scalar(select(BrowserSession).where(BrowserSession.ended_at.is_(None))) is None
        )
    assert api.client.get("/api/me").status_code == 401
    # a bearer token is used when both are sent
    assert log_in(api, "ana", "another long password").status_code == 200
    assert api.call("GET", "/api/me", "ben").json()["name"] == "ben"
