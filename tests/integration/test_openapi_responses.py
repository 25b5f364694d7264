"""What every route really answers matches what /openapi.json says it answers: status,
media type and body schema, for the success paths schemathesis cannot reach (signed-in
users, admins, other services) and for their refusals, whose `code` is in the enum."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import pytest

from app.openapi import security_for
from app.settings import Settings
from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.security.conftest import EVENTS_SECRET, sign_event
from tests.support.authz import admin_token, bearer, login, seeded_user
from tests.support.localauth import LocalAuth

SECRET = "svc-secret-abcdefghijklmnop"


class Checker:
    def __init__(self, client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
        self.client = client
        self.spec = spec
        self.seen: set[tuple[str, str, str]] = set()

    async def call(
        self, method: str, template: str, path: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = await self.client.request(method, path or template, **kwargs)
        operation = self.spec["paths"][template][method.lower()]
        documented = operation["responses"]
        status = str(response.status_code)
        assert status in documented, (method, path, status, response.text)
        self.seen.add((template, method.lower(), status))
        content = documented[status].get("content")
        if content is None:
            assert response.content == b"", (method, path)
            return response
        media = response.headers["content-type"].split(";")[0]
        assert media in content, (method, path, media)
        schema = {**content[media]["schema"], "components": self.spec["components"]}
        jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
        return response


@pytest.mark.anyio
async def test_every_route_answers_as_documented(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    client: httpx.AsyncClient = await running_apps(
        make_settings(
            service_credentials=f"billing:{SECRET}",
            supabase_events_secret="v1," + EVENTS_SECRET,
            rate_limit_enabled="false",
        )
    )
    spec = (await client.get("/openapi.json")).json()
    check = Checker(client, spec)
    email = new_email()
    body = {"email": email, "password": TEST_PASSWORD}

    registered = await check.call("POST", "/api/v1/auth/register", json=body)
    user_id = registered.json()["user"]["id"]
    await check.call("POST", "/api/v1/auth/register", json={**body, "password": "Other-pass-9"})
    await check.call("POST", "/api/v1/auth/register", json={"email": new_email(), "password": "x"})
    await check.call("POST", "/api/v1/auth/login", json={**body, "password": "Wrong-pass-9"})
    tokens = (await check.call("POST", "/api/v1/auth/login", json=body)).json()
    me = bearer(tokens["access_token"])
    refreshed = await check.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    await check.call("POST", "/api/v1/auth/refresh", json={"refresh_token": "nope"})
    await check.call("GET", "/api/v1/auth/me", headers=me)
    await check.call("GET", "/api/v1/auth/me", headers=bearer("not-a-token"))
    sessions = (await check.call("GET", "/api/v1/auth/sessions", headers=me)).json()
    other = next(s["id"] for s in sessions["sessions"] if not s["current"])
    session = "/api/v1/auth/sessions/{session_id}"
    await check.call("DELETE", session, f"/api/v1/auth/sessions/{other}", headers=me)
    await check.call("DELETE", session, "/api/v1/auth/sessions/nope", headers=me)
    own = "/api/v1/users/{user_id}/sessions"
    await check.call("GET", own, f"/api/v1/users/{user_id}/sessions", headers=me)
    stranger, stranger_email = await seeded_user(localauth)
    await check.call("GET", own, f"/api/v1/users/{stranger}/sessions", headers=me)

    relogged = (await login(client, email)).json()
    await check.call(
        "POST",
        "/api/v1/auth/logout",
        json={"scope": "global"},
        headers=bearer(relogged["access_token"]),
    )
    await check.call(
        "POST", "/api/v1/auth/logout", headers=bearer(refreshed.json()["access_token"])
    )
    outsider = bearer((await login(client, stranger_email)).json()["access_token"])

    ops = bearer(await admin_token(localauth, client))
    users = "/api/v1/admin/users"
    page = await check.call("GET", users, params={"page": 1, "per_page": 2}, headers=ops)
    assert len(page.json()["users"]) <= 2
    await check.call("GET", users, params={"per_page": 0}, headers=ops)
    await check.call("GET", users, headers=outsider)
    await check.call("GET", users)
    user = "/api/v1/admin/users/{user_id}"
    at = f"/api/v1/admin/users/{user_id}"
    await check.call("GET", user, at, headers=ops)
    await check.call("GET", user, "/api/v1/admin/users/not-a-uuid", headers=ops)
    await check.call("PUT", user + "/roles", at + "/roles", json={"roles": ["a"]}, headers=ops)
    await check.call("PUT", user + "/roles", at + "/roles", json={"roles": "a"}, headers=ops)
    await check.call("POST", user + "/ban", at + "/ban", headers=ops)
    banned = await check.call("POST", "/api/v1/auth/login", json=body)
    assert banned.json()["code"] == "invalid_credentials"  # a ban is not told to the client
    await check.call("POST", user + "/unban", at + "/unban", headers=ops)
    await check.call("POST", user + "/unlock", at + "/unlock", headers=ops)
    await check.call("POST", user + "/sessions/revoke", at + "/sessions/revoke", headers=ops)

    internal = "/api/v1/internal/users/{user_id}/status"
    service = {"X-Service-ID": "billing", "X-Service-Secret": SECRET}
    answer = await check.call(
        "GET", internal, f"/api/v1/internal/users/{user_id}/status", headers=service
    )
    assert answer.json()["not_before"] > 0  # the admin ended every session
    events = "/api/v1/internal/supabase-events"
    event = json.dumps(
        {"type": "user.updated", "data": {"user_id": user_id, "changes": ["email"]}}
    ).encode()
    await check.call("POST", events, content=event, headers=sign_event(event))
    unsigned = {"content-type": "application/json", "webhook-id": "msg_x"}
    await check.call("POST", events, content=event, headers=unsigned)
    wrong = {**service, "X-Service-Secret": "wrong"}
    await check.call("GET", internal, f"/api/v1/internal/users/{user_id}/status", headers=wrong)

    await check.call("GET", "/health/live")
    await check.call("GET", "/health/ready")

    # The account lifecycle's routes are called, and checked against this document, by
    # tests/integration/lifecycle (test_lifecycle_openapi.py).
    operations = {
        (p, m)
        for p, methods in spec["paths"].items()
        for m, op in methods.items()
        if not set(op["tags"]) & {"account", "mfa"}
    }
    reached = {(p, m) for p, m, s in check.seen if s.startswith("2")}
    assert operations - reached <= {("/metrics", "get"), ("/openapi.json", "get")}
    # Every secured operation, called without credentials: a documented 401 problem.
    secured = sorted((p, m) for p, m in operations if spec["paths"][p][m]["security"])
    assert len(secured) == 13  # 4 auth, 1 users, 7 admin, 1 internal
    for template, method in secured:
        path = template.replace("{user_id}", user_id).replace("{session_id}", other)
        refused = await check.call(method.upper(), template, path)
        assert refused.status_code == 401, (template, refused.text)


def test_each_route_documents_the_scheme_its_policy_demands(make_settings: SettingsFactory) -> None:
    from app.main import create_app
    from app.openapi import all_operations, build_openapi, iter_routes

    app = create_app(make_settings(), configure_logs=False)
    spec = build_openapi(list(app.routes))
    for path, name, methods in iter_routes(list(app.routes)):
        assert name in all_operations(), f"{name} has no typed description in app.openapi"
        for method in methods:
            documented = spec["paths"][path][method.lower()]["security"]
            assert documented == security_for(name)
            if path.startswith(("/api/v1/admin", "/api/v1/users")) or name.startswith("auth:s"):
                assert documented == [{"bearer": []}], path
            if name == "internal:user_status":
                assert documented == [{"serviceId": [], "serviceSecret": []}], path
            if name in ("auth:login", "auth:register", "auth:refresh", "health:live"):
                assert documented == [], path
    assert "invalid_service_credentials" in spec["components"]["schemas"]["ErrorCode"]["enum"]
