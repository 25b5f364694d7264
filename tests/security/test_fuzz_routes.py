"""Property-based fuzzing of every route's body, query, path and headers.

Whatever arrives, the answer is a 4xx problem (never a 5xx), nothing reaches Supabase that
it would choke on (the breaker stays closed), and a legitimate sign-in still works after
the whole run.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.conftest import TEST_PASSWORD
from tests.security.conftest import (
    SERVICE_ID,
    SERVICE_SECRET,
    Target,
    assert_not_5xx,
    fuzz,
    sign_event,
    still_healthy,
)
from tests.security.strategies import bodies
from tests.support.authz import admin_token, bearer, signed_in, unverified

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

AUTH = "/api/v1/auth"
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "APPLICATION/JSON"]
)


async def test_every_json_body_route_refuses_hostile_bodies(target: Target, localauth: Any) -> None:
    """NaN/Infinity, 1e999, huge integers, lone surrogates, NUL, duplicate keys, thousands
    of unclosed brackets, non-objects, wrong types and unknown fields, on every route that
    reads a body (admin and the signed events endpoint included): always a 4xx problem."""
    user = await signed_in(target.client)
    email = user["user"]["email"]
    uid = unverified(user["access_token"])["sub"]
    admin = await admin_token(localauth, target.client)
    state = {"user_token": user["access_token"]}

    routes: list[tuple[str, str, list[str]]] = [
        ("POST", f"{AUTH}/login", ["email", "password"]),
        ("POST", f"{AUTH}/register", ["email", "password", "data"]),
        ("POST", f"{AUTH}/refresh", ["refresh_token"]),
        ("POST", f"{AUTH}/logout", ["scope"]),
        ("PUT", f"/api/v1/admin/users/{uid}/roles", ["roles"]),
        ("POST", "/api/v1/internal/supabase-events", ["type", "data", "timestamp"]),
    ]
    cases = st.sampled_from(range(len(routes))).flatmap(
        lambda i: st.tuples(st.just(i), bodies(routes[i][2]), CONTENT_TYPES)
    )

    seen = {"examples": 0}

    async def example(case: tuple[int, bytes, str]) -> None:
        seen["examples"] += 1
        index, body, content_type = case
        method, path, _ = routes[index]
        headers = {"content-type": content_type} if content_type else {}
        if path.endswith("/logout"):
            headers.update(bearer(state["user_token"]))
        elif "/admin/" in path:
            headers.update(bearer(admin))
        elif path.endswith("supabase-events"):
            headers.update(sign_event(body.decode("utf-8", "replace").encode()))
            body = body.decode("utf-8", "replace").encode()
            if content_type:
                headers["content-type"] = content_type
        response = await target.client.request(method, path, content=body, headers=headers)
        assert_not_5xx(response)
        if response.status_code == 204 and path.endswith("/logout"):
            again = await target.client.post(
                f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
            )
            state["user_token"] = again.json()["access_token"]

    await fuzz(cases, example, max_examples=120)
    assert seen["examples"] >= 100  # the run really happened
    await still_healthy(target, email, TEST_PASSWORD)


# Digits of other scripts, superscripts, signs, spaces, huge numbers, UUID look-alikes.
ODD_TEXT = st.one_of(
    st.text(st.characters(categories=["Nd", "No", "Zs", "Pd"]), min_size=1, max_size=8),
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.uuids().map(lambda u: "{" + str(u).upper() + "}"),
    st.uuids().map(lambda u: u.hex),
    st.just("0"),
    st.just("1" * 5000),
)


async def test_every_query_and_path_parameter_is_parsed_strictly(
    target: Target, localauth: Any
) -> None:
    """page/per_page and every {id} in a path (admin, owner, session and service routes),
    with non-ASCII digits, superscripts, signs, huge numbers and odd UUID spellings."""
    user = await signed_in(target.client)
    admin = await admin_token(localauth, target.client)
    service = {"x-service-id": SERVICE_ID, "x-service-secret": SERVICE_SECRET}

    def requests(value: str) -> list[tuple[str, str, dict[str, str]]]:
        q = urllib.parse.quote(value, safe="")
        return [
            ("GET", f"/api/v1/admin/users?page={q}", bearer(admin)),
            ("GET", f"/api/v1/admin/users?per_page={q}&page=1", bearer(admin)),
            ("GET", f"/api/v1/admin/users/{q}", bearer(admin)),
            ("POST", f"/api/v1/admin/users/{q}/unlock", bearer(admin)),
            ("POST", f"/api/v1/admin/users/{q}/sessions/revoke", bearer(admin)),
            ("GET", f"/api/v1/users/{q}/sessions", bearer(user["access_token"])),
            ("DELETE", f"{AUTH}/sessions/{q}", bearer(user["access_token"])),
            ("GET", f"/api/v1/internal/users/{q}/status", service),
        ]

    async def example(value: str) -> None:
        for method, path, headers in requests(value):
            response = await target.client.request(method, path, headers=headers)
            assert_not_5xx(response)

    await fuzz(ODD_TEXT, example, max_examples=40)
    for digits in ("١", "５", "²", "1٠", "-1", "+1", " 1", "1e3", "99999999999999999999"):
        response = await target.client.get(
            f"/api/v1/admin/users?page={urllib.parse.quote(digits)}", headers=bearer(admin)
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    await still_healthy(target, user["user"]["email"], TEST_PASSWORD)


HEADER_NAMES = st.sampled_from(
    [
        "authorization",
        "content-type",
        "content-length",
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "x-request-id",
        "kong-request-id",
        "x-service-id",
        "x-service-secret",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
        "origin",
        "cookie",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")),
    st.sampled_from(["Bearer ", "Bearer a.b.c", "bearer " + "x" * 9000, "-1", "v1,===="]),
).map(lambda v: v.encode("latin-1"))


async def test_every_route_survives_hostile_headers(target: Target, localauth: Any) -> None:
    """Random values for the headers the service reads, on every route."""
    user = await signed_in(target.client)
    uid = unverified(user["access_token"])["sub"]
    paths = [
        ("GET", f"{AUTH}/me"),
        ("GET", f"{AUTH}/sessions"),
        ("POST", f"{AUTH}/login"),
        ("POST", f"{AUTH}/register"),
        ("POST", f"{AUTH}/refresh"),
        ("POST", f"{AUTH}/logout"),
        ("GET", "/api/v1/admin/users"),
        ("GET", f"/api/v1/users/{uid}/sessions"),
        ("GET", f"/api/v1/internal/users/{uid}/status"),
        ("POST", "/api/v1/internal/supabase-events"),
        ("GET", "/openapi.json"),
        ("GET", "/health/live"),
    ]
    cases = st.tuples(
        st.sampled_from(paths),
        st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=5),
    )

    async def example(case: tuple[tuple[str, str], dict[str, bytes]]) -> None:
        (method, path), headers = case
        body = b'{"email": "a@example.com", "password": "x"}' if method == "POST" else b""
        raw = [(name.encode(), value) for name, value in headers.items()]
        response = await target.client.request(method, path, content=body, headers=raw)
        assert_not_5xx(response)

    await fuzz(cases, example, max_examples=80)
    await still_healthy(target, user["user"]["email"], TEST_PASSWORD)


# Addresses the edge's email rule lets through, however odd: the upstream must never
# answer them with a 5xx (that would count against the breaker for everyone).
ODD_EMAILS = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(
        st.characters(exclude_characters="@ \t\r\n\x00", exclude_categories=["Cs", "Cc", "Zs"]),
        min_size=1,
        max_size=20,
    ),
    st.text(
        st.characters(exclude_characters="@ \t\r\n\x00", exclude_categories=["Cs", "Cc", "Zs"]),
        min_size=1,
        max_size=20,
    ),
    st.text(
        st.characters(exclude_characters="@ \t\r\n\x00", exclude_categories=["Cs", "Cc", "Zs"]),
        min_size=1,
        max_size=8,
    ),
)


async def test_odd_but_accepted_addresses_never_reach_supabase_as_a_5xx(
    target: Target,
) -> None:
    """Registration and sign-in with unusual addresses that pass the edge: a 2xx or 4xx."""
    user = await signed_in(target.client)

    async def example(email: str) -> None:
        for path in (f"{AUTH}/register", f"{AUTH}/login"):
            response = await target.client.post(
                path, json={"email": email, "password": TEST_PASSWORD}
            )
            assert_not_5xx(response)

    await fuzz(ODD_EMAILS, example, max_examples=25)
    await still_healthy(target, user["user"]["email"], TEST_PASSWORD)
