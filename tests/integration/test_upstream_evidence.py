"""The breaker measures the upstream, not the caller; stored data cannot poison shared views.

Through the real app (in process, real Redis) and the real SDK against a real localauth:
hostile registrations from a few addresses never open the breaker, and a user record the
SDK cannot read (written to localauth directly) degrades only itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from app.main import create_app
from services.breaker import BreakerState
from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.support.authz import admin_token, bearer, login, seeded_user
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio

REGISTER = "/api/v1/auth/register"
ATTACKERS = ("198.51.100.7", "198.51.100.8")
DEPTH = 400  # beyond the SDK's JSON parser (its limit is about 200), within localauth's


def nested(depth: int) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


Clients = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def app(make_settings: SettingsFactory) -> AsyncIterator[Starlette]:
    # Rate limits off: the worst case is an attacker the limits do not slow down.
    application = create_app(
        make_settings(RATE_LIMIT_ENABLED="false", LOCKOUT_ENABLED="false"), configure_logs=False
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def from_address(app: Starlette) -> AsyncIterator[Clients]:
    """An HTTP client of the app per client address."""
    async with contextlib.AsyncExitStack() as stack:

        def client(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 50000))
            http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            stack.push_async_callback(http.aclose)
            return http

        yield client


@pytest.fixture
async def poisoned(localauth: LocalAuth) -> AsyncIterator[set[str]]:
    """E-mails of the unreadable users a test stores; deleted afterwards, so the shared
    localauth never poisons another suite (which is the very point of these tests)."""
    emails: set[str] = set()
    yield emails
    key = localauth.service_role_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=localauth.url, headers=headers) as upstream:
        listing = await upstream.get("/auth/v1/admin/users", params={"per_page": 10_000})
        for user in json.loads(listing.content)["users"]:
            if user.get("email") in emails:
                await upstream.delete(f"/auth/v1/admin/users/{user['id']}")


def breaker_state(app: Starlette) -> BreakerState:
    state: BreakerState = app.state.services.gateway.breaker.state
    return state


async def register_raw(client: httpx.AsyncClient, data: str, emails: set[str]) -> httpx.Response:
    email = new_email()
    emails.add(email)
    body = f'{{"email": "{email}", "password": "{TEST_PASSWORD}", "data": {data}}}'
    return await client.post(REGISTER, content=body, headers={"Content-Type": "application/json"})


async def test_hostile_registrations_from_a_few_addresses_never_open_the_breaker(
    app: Starlette, from_address: Clients, localauth: LocalAuth, poisoned: set[str]
) -> None:
    """NaN / Infinity in ``data`` (Python's json accepts them, the SDK cannot send them)
    and metadata nested deeper than the SDK can read, many times from two addresses: each
    is a 4xx or a 502 naming the cause, never a 503 that counts, and the breaker stays
    closed; a legitimate login from elsewhere still works."""
    threshold = app.state.services.settings.breaker_failure_threshold
    answers: list[tuple[int, str]] = []
    for round_ in range(4 * threshold):
        client = from_address(ATTACKERS[round_ % len(ATTACKERS)])
        for data in ('{"n": NaN}', '{"n": -Infinity}', nested(DEPTH)):
            response = await register_raw(client, data, poisoned)
            answers.append((response.status_code, response.json()["code"]))
    codes = {code for _, code in answers}
    assert all(status < 500 or status == 502 for status, _ in answers), answers
    # The strict JSON edge refuses most of them (malformed_json) before the gateway.
    assert codes <= {"malformed_json", "validation_failed", "upstream_bad_record"}, codes
    assert breaker_state(app) is BreakerState.CLOSED
    _, email = await seeded_user(localauth)
    legit = await login(from_address("192.0.2.10"), email)
    assert legit.status_code == 200, legit.text


async def test_an_unreadable_stored_record_degrades_only_itself(
    app: Starlette, from_address: Clients, localauth: LocalAuth, poisoned: set[str]
) -> None:
    """A user whose metadata is nested too deep for the SDK, created in localauth directly:
    the admin list answers the rest and names the skipped id, again and again without
    opening the breaker; that user's own calls are 502 upstream_bad_record; everyone
    else's work."""
    admin_client = from_address("192.0.2.20")
    admin = await admin_token(localauth, admin_client)
    key = localauth.service_role_key
    poisoned_email = new_email()
    poisoned.add(poisoned_email)
    async with httpx.AsyncClient(base_url=localauth.url) as upstream:
        created = await upstream.post(
            "/auth/v1/admin/users",
            content=(
                f'{{"email": "{poisoned_email}", "password": "{TEST_PASSWORD}", '
                f'"email_confirm": true, "user_metadata": {nested(DEPTH)}}}'
            ),
            headers={
                "apikey": key,
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
            },
        )
    assert created.status_code == 200, created.text
    poisoned_id = created.json()["id"]
    healthy_id, healthy_email = await seeded_user(localauth)

    for _ in range(3 * app.state.services.settings.breaker_failure_threshold):
        page = await admin_client.get("/api/v1/admin/users?per_page=1000", headers=bearer(admin))
        assert page.status_code == 200, page.text
        body: dict[str, Any] = page.json()
        assert poisoned_id in body["skipped"]
        ids = {user["id"] for user in body["users"]}
        assert healthy_id in ids
        assert poisoned_id not in ids
    one = await admin_client.get(f"/api/v1/admin/users/{poisoned_id}", headers=bearer(admin))
    assert (one.status_code, one.json()["code"]) == (502, "upstream_bad_record"), one.text
    assert one.headers["content-type"].startswith("application/problem+json")
    own = await login(from_address("192.0.2.21"), poisoned_email)
    assert (own.status_code, own.json()["code"]) == (502, "upstream_bad_record"), own.text
    assert breaker_state(app) is BreakerState.CLOSED
    other = await login(from_address("192.0.2.22"), healthy_email)
    assert other.status_code == 200, other.text
