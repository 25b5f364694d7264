"""Every credential check is rate limited before it can succeed (service secrets, event
signatures), and signed Supabase-side events end sessions at once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.security.conftest import (
    SERVICE_ID,
    SERVICE_SECRET,
    Target,
    hardened,
    sign_event,
)
from tests.support.authz import bearer, signed_in, unverified

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

EVENTS = "/api/v1/internal/supabase-events"
ME = "/api/v1/auth/me"


def _status_path(uid: str) -> str:
    return f"/api/v1/internal/users/{uid}/status"


async def test_failed_service_secrets_lock_the_source_out(
    start_target: Any, make_settings: SettingsFactory
) -> None:
    """After LOCKOUT_IP_THRESHOLD wrong secrets from one address, that address is refused
    with 429 even with the right secret; another address that holds it is still served."""
    settings = hardened(make_settings, lockout_enabled="true", lockout_ip_threshold=3)
    attacker: Target = await start_target(settings, client_ip="198.51.100.9")
    other: Target = await start_target(settings, client_ip="198.51.100.10")
    uid = "00000000-0000-4000-8000-000000000001"
    right = {"x-service-id": SERVICE_ID, "x-service-secret": SERVICE_SECRET}
    assert (await other.client.get(_status_path(uid), headers=right)).status_code == 200
    for guess in range(3):
        wrong = {"x-service-id": SERVICE_ID, "x-service-secret": f"guess-{guess}"}
        refused = await attacker.client.get(_status_path(uid), headers=wrong)
        assert (refused.status_code, refused.json()["code"]) == (
            401,
            "invalid_service_credentials",
        )
    locked = await attacker.client.get(_status_path(uid), headers=right)
    assert (locked.status_code, locked.json()["code"]) == (429, "locked_out")
    assert int(locked.headers["retry-after"]) >= 1
    # Other ids do not reset it: the count is per source, not per id.
    spray = await attacker.client.get(
        _status_path(uid), headers={"x-service-id": "x", "x-service-secret": "y"}
    )
    assert spray.status_code == 429
    assert (await other.client.get(_status_path(uid), headers=right)).status_code == 200
    # The legitimate caller's success elsewhere does not lift the attacker's lock.
    assert (await attacker.client.get(_status_path(uid), headers=right)).status_code == 429


def _event(uid: str, kind: str = "user.updated", changes: list[str] | None = None) -> bytes:
    data: dict[str, Any] = {"user_id": uid}
    if changes is not None:
        data["changes"] = changes
    return json.dumps({"type": kind, "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()


async def _post_event(target: Target, body: bytes, **sign: Any) -> Any:
    return await target.client.post(EVENTS, content=body, headers=sign_event(body, **sign))


@pytest.mark.parametrize(
    ("kind", "changes", "banned"),
    [
        ("user.updated", ["password"], False),
        ("user.updated", ["banned"], True),
        ("user.updated", ["roles_removed"], False),
        ("user.updated", ["email"], False),
        ("user.deleted", None, False),
    ],
)
async def test_a_signed_event_ends_the_users_sessions_at_once(
    target: Target, kind: str, changes: list[str] | None, banned: bool
) -> None:
    """Password change, ban, removed role, email change or deletion in Supabase: the next
    request with the user's token is refused, and the user status route says so."""
    user = await signed_in(target.client)
    uid = unverified(user["access_token"])["sub"]
    assert (await target.client.get(ME, headers=bearer(user["access_token"]))).status_code == 200
    applied = await _post_event(target, _event(uid, kind, changes))
    assert applied.status_code == 200, applied.text
    # Two: registration's session and the sign-in's.
    assert applied.json() == {"status": "applied", "sessions_ended": 2}
    refused = await target.client.get(ME, headers=bearer(user["access_token"]))
    assert refused.status_code in (401, 403)
    assert refused.json()["code"] == ("user_banned" if banned else "session_revoked")
    status = await target.client.get(
        _status_path(uid),
        headers={"x-service-id": SERVICE_ID, "x-service-secret": SERVICE_SECRET},
    )
    assert status.json()["banned"] is banned
    assert status.json()["not_before"] >= int(time.time())


async def test_an_added_role_or_unban_keeps_sessions(target: Target) -> None:
    """Changes that take nothing away do not sign the user out."""
    user = await signed_in(target.client)
    uid = unverified(user["access_token"])["sub"]
    for changes in (["roles_added"], ["unbanned"], ["something_new"]):
        applied = await _post_event(target, _event(uid, changes=changes))
        assert applied.json() == {"status": "applied", "sessions_ended": 0}, changes
    assert (await target.client.get(ME, headers=bearer(user["access_token"]))).status_code == 200


async def test_events_must_be_signed_fresh_and_new(target: Target) -> None:
    """A wrong secret, a tampered body, a stale or future timestamp, missing or garbage
    headers: 401 and nothing happens; a replayed delivery id is not applied twice."""
    user = await signed_in(target.client)
    uid = unverified(user["access_token"])["sub"]
    body = _event(uid, changes=["password"])
    other_secret = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    bad: list[dict[str, str]] = [
        sign_event(body, secret=other_secret),
        sign_event(body, at=time.time() - 3600),
        sign_event(body, at=time.time() + 3600),
        {"content-type": "application/json"},
        {**sign_event(body), "webhook-signature": "v1"},
        {**sign_event(body), "webhook-signature": "v1,***"},
        {**sign_event(body), "webhook-timestamp": "nan"},
        {**sign_event(body), "webhook-timestamp": "1e999"},
    ]
    for headers in bad:
        response = await target.client.post(EVENTS, content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    tampered = sign_event(body)
    response = await target.client.post(EVENTS, content=body + b" ", headers=tampered)
    assert response.status_code == 401
    assert (await target.client.get(ME, headers=bearer(user["access_token"]))).status_code == 200

    headers = sign_event(body)
    first = await target.client.post(EVENTS, content=body, headers=headers)
    assert first.json()["status"] == "applied"
    again = await target.client.post(EVENTS, content=body, headers=headers)
    assert again.json() == {"status": "duplicate", "sessions_ended": 0}


async def test_failed_signatures_lock_the_source_out(
    start_target: Any, make_settings: SettingsFactory
) -> None:
    """Guessing signatures is a credential check like any other: after the threshold the
    source is refused (429) even with a correctly signed event."""
    settings = hardened(make_settings, lockout_enabled="true", lockout_ip_threshold=3)
    target: Target = await start_target(settings, client_ip="198.51.100.20")
    body = _event("00000000-0000-4000-8000-000000000002", changes=["password"])
    for _ in range(3):
        response = await target.client.post(
            EVENTS, content=body, headers={**sign_event(body), "webhook-signature": "v1,AAAA"}
        )
        assert response.status_code == 401
    locked = await _post_event(target, body)
    assert (locked.status_code, locked.json()["code"]) == (429, "locked_out")


async def test_events_endpoint_is_absent_without_a_secret(
    start_target: Any, make_settings: SettingsFactory
) -> None:
    """Without SUPABASE_EVENTS_SECRET nothing can be posted there."""
    target: Target = await start_target(make_settings())
    body = _event("00000000-0000-4000-8000-000000000003")
    response = await _post_event(target, body)
    assert response.status_code == 404


async def test_a_signed_event_with_a_hostile_body_is_a_4xx(target: Target) -> None:
    """Signed, but not an event this service knows: refused, never a 5xx."""
    for body in (b"[1]", b'{"type": "user.updated"}', b'{"type": "x", "data": {}}', b"[" * 4000):
        response = await _post_event(target, body)
        assert response.status_code in (400, 422), response.text
    assert target.breaker_closed()
