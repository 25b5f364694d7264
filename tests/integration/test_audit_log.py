"""The access log and the audit log of a real uvicorn process, read line by line: one access
line per request with the route template and the user, one audit line per security event
under its stable name, and never a password, token, secret or email address in clear."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import httpx

from services.audit import ACCOUNT_EVENTS, EVENTS
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.integration.test_logging import lines
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth
from tests.support.users import create_user

SERVICE_SECRET = "svc-secret-0123456789abcdef"
# A whole JWT short enough to pass as a request id (at most 128 characters are kept).
SHORT_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def email_hash(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


def login(client: httpx.Client, email: str, password: str = TEST_PASSWORD) -> httpx.Response:
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def test_access_and_audit_lines_name_each_event_and_leak_nothing(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env = app_env(
        localauth,
        redis_url,
        redis_prefix,
        log_level="info",
        refresh_grace_seconds=0,
        lockout_ip_threshold=2,
        rate_limits="internal=3/60",
        service_credentials=f"billing:{SERVICE_SECRET}",
    )
    secrets: set[str] = {SERVICE_SECRET, SHORT_JWT, TEST_PASSWORD, localauth.service_role_key}
    user_email, victim_email, admin_email = new_email(), new_email(), new_email()
    admin_id = create_user(localauth, admin_email, TEST_PASSWORD, app_metadata={"roles": ["admin"]})
    victim_id = create_user(localauth, victim_email, TEST_PASSWORD)
    with (
        run_app(env, tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        body = {"email": user_email, "password": TEST_PASSWORD}
        registered = client.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["user"]["id"]
        first = login(client, user_email).json()
        second = login(client, user_email).json()
        admin = login(client, admin_email).json()
        for tokens in (first, second, admin, registered.json()["session"]):
            secrets |= {tokens["access_token"], tokens["refresh_token"]}

        me = client.get(
            "/api/v1/auth/me", headers={**bearer(first["access_token"]), "X-Request-ID": "me-1"}
        )
        assert me.status_code == 200
        # A client that sends a token as its request id does not get it logged.
        echoed = {**bearer(first["access_token"]), "X-Request-ID": SHORT_JWT}
        assert client.get("/api/v1/auth/me", headers=echoed).status_code == 200
        assert (
            client.get("/api/v1/admin/users", headers=bearer(first["access_token"])).status_code
            == 403
        )
        assert client.get("/api/v1/admin/users").status_code == 401
        assert client.get("/health/live").status_code == 200

        # Wrong passwords until the address is locked out of the victim's account.
        wrong = "Wrong-password-1"
        secrets.add(wrong)
        assert login(client, victim_email, wrong).status_code == 401
        assert login(client, victim_email, wrong).status_code == 401
        locked = login(client, victim_email)
        assert locked.status_code == 429
        assert locked.json()["code"] == "locked_out"

        # A refresh token presented twice: the second time is theft.
        rotated = client.post(
            "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert rotated.status_code == 200
        secrets |= {rotated.json()["access_token"], rotated.json()["refresh_token"]}
        reused = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.json()["code"] == "refresh_token_reused"

        # The user ends another session, then signs out the others.
        third = login(client, user_email).json()
        secrets |= {third["access_token"], third["refresh_token"]}
        sessions = client.get("/api/v1/auth/sessions", headers=bearer(third["access_token"]))
        other = next(s["id"] for s in sessions.json()["sessions"] if not s["current"])
        deleted = client.delete(
            f"/api/v1/auth/sessions/{other}", headers=bearer(third["access_token"])
        )
        assert deleted.status_code == 204
        out = client.post(
            "/api/v1/auth/logout", json={"scope": "others"}, headers=bearer(third["access_token"])
        )
        assert out.status_code == 204

        # An operator's actions.
        ops = bearer(admin["access_token"])
        base = f"/api/v1/admin/users/{user_id}"
        roles = client.put(f"{base}/roles", json={"roles": ["support"]}, headers=ops)
        assert roles.status_code == 200, roles.text
        assert client.post(f"{base}/sessions/revoke", headers=ops).status_code == 200
        assert client.post(f"{base}/ban", headers=ops).status_code == 200
        banned = login(client, user_email)
        assert banned.json()["code"] == "invalid_credentials"  # a ban is not told to the client
        assert client.post(f"{base}/unban", headers=ops).status_code == 200
        unlock = client.post(f"/api/v1/admin/users/{victim_id}/unlock", headers=ops)
        assert unlock.status_code == 204

        # Another service: its own rate limit, then a wrong secret and an unknown id.
        status_url = f"/api/v1/internal/users/{user_id}/status"
        good = {"X-Service-ID": "billing", "X-Service-Secret": SERVICE_SECRET}
        statuses = [client.get(status_url, headers=good).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        for service_id, secret in (("billing", "not-the-secret"), ("nobody", SERVICE_SECRET)):
            refused = client.get(
                status_url, headers={"X-Service-ID": service_id, "X-Service-Secret": secret}
            )
            assert refused.status_code == 401
        metrics = client.get("/metrics").text
    # Read once the process has exited: every line is written by then.
    log = lines(server.log)
    text = server.log.read_text()

    audit = [line for line in log if line.get("audit") is True]
    names = {line["event"] for line in audit}
    # The account lifecycle's own events are proven by the lifecycle suites.
    assert names == EVENTS - ACCOUNT_EVENTS, (EVENTS - ACCOUNT_EVENTS) ^ names
    for line in audit:
        assert line["request_id"], line
        assert line["level"] in ("info", "warning")

    def one(event: str, **match: Any) -> dict[str, Any]:
        found = [
            line
            for line in audit
            if line["event"] == event and all(line.get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, (event, match, [line for line in audit if line["event"] == event])
        return found[0]

    failed = [line for line in audit if line["event"] == "auth.sign_in_failed"]
    assert [line["reason"] for line in failed] == ["invalid_credentials"] * 2 + ["user_banned"]
    assert failed[0]["email_hash"] == email_hash(victim_email)
    assert failed[0]["ip"] == "127.0.0.1"
    assert failed[2]["email_hash"] == email_hash(user_email)
    lockout = one("auth.lockout")
    assert lockout["scope"] == "ip"
    assert lockout["email_hash"] == email_hash(victim_email)
    assert lockout["retry_after_s"] > 0
    assert one("refresh.reuse_detected")["user_id"] == user_id
    assert one("auth.logout")["scope"] == "others"
    assert one("session.revoked", by="user")["session_ids"] == [other]
    assert one("session.revoked", by="admin")["actor"] == admin_id
    changed = one("user.role_changed")
    assert (changed["user_id"], changed["actor"], changed["roles"]) == (
        user_id,
        admin_id,
        ["support"],
    )
    assert changed["roles_before"] == []
    assert one("user.banned")["actor"] == admin_id
    assert one("user.unbanned")["user_id"] == user_id
    assert one("user.unlocked")["user_id"] == victim_id
    assert one("service_credential.failed", reason="wrong_secret")["service_id"] == "billing"
    assert one("service_credential.failed", reason="unknown_service")["service_id"] == "nobody"
    limited = one("auth.rate_limited")
    assert (limited["rule"], limited["subject"]) == ("internal", "service:billing")
    signed_in = [line for line in audit if line["event"] == "auth.signed_in"]
    assert {line["user_id"] for line in signed_in} == {user_id, admin_id}

    access = [line for line in log if line["event"] == "http_request"]
    me_line = next(line for line in access if line.get("request_id") == "me-1")
    assert me_line["method"] == "GET"
    assert me_line["route"] == "/api/v1/auth/me"
    assert me_line["status"] == 200
    assert me_line["user_id"] == user_id
    assert me_line["client_ip"] == "127.0.0.1"
    assert 0 < me_line["duration_ms"] < 10_000
    assert me_line["level"] == "info"
    routes = [(line["route"], line["status"], line["user_id"]) for line in access]
    assert ("/api/v1/admin/users", 403, user_id) in routes  # refused, yet attributed
    assert ("/api/v1/admin/users", 401, None) in routes
    assert ("/api/v1/admin/users/{user_id}/ban", 200, admin_id) in routes
    assert ("/api/v1/internal/users/{user_id}/status", 429, None) in routes
    assert ("/api/v1/internal/users/{user_id}/status", 401, None) in routes
    assert not any(route == "/health/live" for route, _, _ in routes)  # debug level only
    # One access line per request that reached the app (the /metrics scrape included).
    assert sum(1 for line in access if line["route"] == "/api/v1/auth/login") == 8

    assert 'sg_audit_events_total{event="auth.lockout"} 1.0' in metrics
    assert 'sg_audit_events_total{event="service_credential.failed"} 2.0' in metrics

    for secret in secrets:
        assert secret not in text
    for email in (user_email, victim_email, admin_email):
        assert email not in text
    assert not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.", text)
    assert any(line.get("request_id") == "[redacted]" for line in access)
