"""CORS for exact configured origins, credentials allowed; other origins get nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.settings import Settings
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.anyio

ALLOWED = "https://app.example.com"


async def test_preflight_from_allowed_origin_allows_credentials(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A preflight from a configured origin echoes that origin and allows credentials."""
    client = await running_apps(make_settings(cors_origins=f"{ALLOWED},https://admin.example.com"))
    response = await client.options(
        "/api/v1/auth/login",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    simple = await client.get("/health/live", headers={"Origin": ALLOWED})
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    assert "X-Request-ID" in simple.headers["access-control-expose-headers"]


async def test_disallowed_origin_gets_no_cors_headers(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """Another origin (even a sibling subdomain) gets no Access-Control-Allow-Origin at all."""
    client = await running_apps(make_settings(cors_origins=ALLOWED))
    for origin in ("https://evil.example.com", "https://app.example.com.evil.test", "null"):
        preflight = await client.options(
            "/api/v1/auth/login",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        simple = await client.get("/health/live", headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers


async def test_no_cors_when_no_origins_are_configured(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """Without CORS_ORIGINS the app sends no CORS headers to anyone."""
    client = await running_apps(make_settings())
    response = await client.get("/health/live", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers


async def test_a_refusal_carries_the_cors_headers_so_the_browser_can_read_it(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A 401 problem reaches an allowed origin with its CORS headers: without them the
    browser hides the answer and the frontend sees a network error, not "sign in again"."""
    client = await running_apps(make_settings(cors_origins=ALLOWED))
    response = await client.get("/api/v1/auth/me", headers={"Origin": ALLOWED})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    missing = await client.get("/api/v1/auth/nowhere", headers={"Origin": ALLOWED})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == ALLOWED
