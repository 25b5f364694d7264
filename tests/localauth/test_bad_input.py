"""Bad input gets GoTrue's 4xx answers: never a 500, never a traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.localauth.conftest import PASSWORD
from tests.support.localauth import LocalAuth

V2024 = {"X-Supabase-Api-Version": "2024-01-01"}


def _admin(server: LocalAuth) -> dict[str, str]:
    return {**V2024, "Authorization": f"Bearer {server.service_role_key}"}


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/signup", b"{not json"),
        ("/signup", b""),
        ("/signup", b"[1, 2]"),
        ("/token?grant_type=password", b'{"email": '),
        ("/token?grant_type=refresh_token", b"\xff\xfe"),
        ("/admin/users", b"{{}"),
        ("/admin/generate_link", b"42"),
    ],
)
def test_malformed_json_is_bad_json(
    server: LocalAuth, http: httpx.Client, path: str, content: bytes
) -> None:
    response = http.post(server.url + path, content=content, headers=_admin(server))
    assert response.status_code == 400
    assert response.json()["code"] == "bad_json"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/signup", {"email": 5, "password": PASSWORD}),
        ("/signup", {"email": "a@example.com", "password": ["x"]}),
        ("/signup", {"email": "a@example.com", "password": PASSWORD, "data": "str"}),
        ("/token?grant_type=password", {"email": True, "password": PASSWORD}),
        ("/token?grant_type=refresh_token", {"refresh_token": 123456789012}),
        ("/admin/users", {"email": "a@example.com", "email_confirm": "yes"}),
        ("/admin/users", {"email": "a@example.com", "user_metadata": [1]}),
        ("/admin/generate_link", {"type": 1, "email": "a@example.com"}),
    ],
)
def test_wrong_json_types_are_bad_json(
    server: LocalAuth, http: httpx.Client, path: str, body: dict[str, object]
) -> None:
    response = http.post(server.url + path, json=body, headers=_admin(server))
    assert response.status_code == 400
    assert response.json()["code"] == "bad_json"


def test_missing_fields_and_nulls(server: LocalAuth, http: httpx.Client) -> None:
    missing = http.post(server.url + "/token?grant_type=password", json={}, headers=V2024)
    assert (missing.status_code, missing.json()["code"]) == (400, "validation_failed")
    assert missing.json()["message"] == "missing email or phone"
    nulls = http.post(
        server.url + "/signup",
        json={
            "email": None,
            "phone": None,
            "password": None,
            "data": None,
            "gotrue_meta_security": None,
            "channel": None,
            "unknown_field": {"x": 1},
        },
        headers=V2024,
    )
    # No email and no phone means an anonymous signup, which is off by default.
    assert (nulls.status_code, nulls.json()["code"]) == (422, "anonymous_provider_disabled")
    empty_refresh = http.post(
        server.url + "/token?grant_type=refresh_token", json={}, headers=V2024
    )
    assert (empty_refresh.status_code, empty_refresh.json()["code"]) == (400, "validation_failed")


def test_oversized_body_is_refused(server: LocalAuth, http: httpx.Client) -> None:
    huge = b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = http.post(server.url + "/signup", content=huge, headers=V2024)
    assert response.status_code == 413
    chunked = http.post(
        server.url + "/admin/users",
        content=iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)]),
        headers=_admin(server),
    )
    assert chunked.status_code == 413


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Basic abc",
        "Bearer two tokens",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "Bearer a.b.c",
    ],
)
def test_bad_authorization_headers(
    server: LocalAuth, http: httpx.Client, authorization: str
) -> None:
    for method, path in (
        ("GET", "/user"),
        ("PUT", "/user"),
        ("POST", "/logout"),
        ("GET", "/admin/users"),
    ):
        response = http.request(
            method,
            server.url + path,
            headers={**V2024, "Authorization": authorization},
            json={},
        )
        assert response.status_code in {401, 403}, (method, path)
        assert response.json()["code"] in {"no_authorization", "bad_jwt"}


def test_bad_query_parameters(server: LocalAuth, http: httpx.Client) -> None:
    response = http.get(server.url + "/admin/users?page=-5&per_page=0", headers=_admin(server))
    assert response.status_code == 200
    assert isinstance(response.json()["users"], list)
    missing_grant = http.post(server.url + "/token", json={}, headers=V2024)
    assert missing_grant.status_code == 400
    wrong_method = http.delete(server.url + "/signup")
    assert wrong_method.status_code == 405
