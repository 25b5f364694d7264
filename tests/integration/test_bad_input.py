"""Hostile and malformed requests get a clear 4xx problem, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, new_email

pytestmark = pytest.mark.anyio

LOGIN = "/api/v1/auth/login"
JSON = {"Content-Type": "application/json"}


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    """Broken JSON is a 400 that says so."""
    response = await client.post(LOGIN, content=b'{"email": "a@b.co", "password": ', headers=JSON)
    assert_problem(response, 400, "malformed_json")


async def test_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    """Bytes that are not UTF-8 are malformed JSON, not a crash."""
    response = await client.post(LOGIN, content=b'{"email": "\xff\xfe"}', headers=JSON)
    assert_problem(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "body",
    [
        {"email": 42, "password": TEST_PASSWORD},
        {"email": ["a@b.co"], "password": TEST_PASSWORD},
        {"email": "a@b.co", "password": None},
        {"email": "a@b.co", "password": True},
        {"email": "not-an-email", "password": TEST_PASSWORD},
        {"password": TEST_PASSWORD},
        {},
    ],
)
async def test_wrong_types_and_missing_fields_are_422(
    client: httpx.AsyncClient, body: object
) -> None:
    """Each bad field is named in `errors`."""
    response = await client.post(LOGIN, json=body)
    assert_problem(response, 422, "validation_failed")
    assert response.json()["errors"]
    assert all("field" in error for error in response.json()["errors"])


@pytest.mark.parametrize("body", [[], "text", 12, None])
async def test_non_object_json_is_422(client: httpx.AsyncClient, body: object) -> None:
    """JSON that is not an object cannot be a login."""
    response = await client.post(LOGIN, json=body)
    assert_problem(response, 422, "validation_failed")


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    """A misspelt or injected field is refused rather than silently ignored."""
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "email": new_email(),
            "password": TEST_PASSWORD,
            "app_metadata": {"roles": ["admin"]},
        },
    )
    assert_problem(response, 422, "validation_failed")
    assert response.json()["errors"][0]["field"] == "app_metadata"


async def test_huge_body_is_413(client: httpx.AsyncClient) -> None:
    """Bodies over the limit are refused before they are parsed."""
    response = await client.post(LOGIN, json={"email": "a@b.co", "password": "x" * 100_000})
    assert_problem(response, 413, "payload_too_large")


async def test_huge_body_without_length_is_413(client: httpx.AsyncClient) -> None:
    """A chunked body cannot sneak past the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    response = await client.post(LOGIN, content=chunks(), headers=JSON)
    assert_problem(response, 413, "payload_too_large")


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    """Form posts are not accepted where JSON is expected."""
    response = await client.post(LOGIN, data={"email": "a@b.co", "password": TEST_PASSWORD})
    assert_problem(response, 415, "unsupported_media_type")


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    """An empty login body is a validation error."""
    response = await client.post(LOGIN)
    assert_problem(response, 422, "validation_failed")


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    """Routing failures use the same envelope as everything else."""
    assert_problem(await client.get("/api/v1/auth/nope"), 404, "not_found")
    assert_problem(await client.get(LOGIN), 405, "method_not_allowed")


async def test_oversized_and_garbage_bearer_tokens_are_401(client: httpx.AsyncClient) -> None:
    """Forged or absurd tokens are refused as unauthenticated."""
    for token in ("a" * 20_000, "x.y.z", "e30.e30.e30", "\u00e9" * 10):
        response = await client.get(
            "/api/v1/auth/me", headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        assert response.status_code == 401, token[:20]


async def test_request_id_is_taken_from_the_gateway(client: httpx.AsyncClient) -> None:
    """Kong's request id comes back in the body and the header."""
    response = await client.post(
        LOGIN, content=b"{", headers={**JSON, "X-Kong-Request-Id": "kong-abc-123"}
    )
    assert response.headers["x-request-id"] == "kong-abc-123"
    assert response.json()["request_id"] == "kong-abc-123"
