"""Fit behind Kong: trusted forwarded headers, prefix, request ids, keep-alive, deadlines."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, SettingsFactory, app_env, new_email
from tests.support.appserver import run_app
from tests.support.kong import kong_keepalive_idle_timeout, kong_services
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio

# running_apps' ASGI client connects from 203.0.113.7.
KONG = "203.0.113.0/24"
FORWARDED = {
    "X-Forwarded-For": "198.51.100.23, 203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "auth.example.com",
    "X-Forwarded-Prefix": "/identity",
    "Host": "auth.example.com",
}


async def session_ip(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    email = new_email()
    body = {"email": email, "password": TEST_PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    login = await client.post("/api/v1/auth/login", json=body, headers=headers)
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    sessions = (await client.get("/api/v1/auth/sessions", headers=auth)).json()["sessions"]
    current = [s for s in sessions if s["current"]]
    ip: str = current[0]["ip"]
    return ip


async def test_forwarded_headers_are_honoured_from_a_trusted_proxy(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """From Kong's address, the client IP, scheme and prefix come from X-Forwarded-*."""
    client = await running_apps(make_settings(trusted_proxies=KONG, forwarded_prefixes="/identity"))
    assert await session_ip(client, FORWARDED) == "198.51.100.23"
    spec = (await client.get("/openapi.json", headers=FORWARDED)).json()
    # Relative: the prefix from the proxy, never the (forgeable) Host.
    assert spec["servers"][0]["url"] == "/identity"
    # Routing is unchanged by the prefix: Kong already stripped it.
    assert (await client.get("/health/live", headers=FORWARDED)).status_code == 200
    # A prefix not in FORWARDED_PREFIXES is ignored, even from Kong (which passes on what
    # its trusted edge passed on, a client's own header included).
    forged = {**FORWARDED, "X-Forwarded-Prefix": "/evil"}
    spec = (await client.get("/openapi.json", headers=forged)).json()
    assert spec["servers"][0]["url"] == "/"


async def test_forwarded_headers_are_ignored_from_an_untrusted_peer(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """From any other address, spoofed X-Forwarded-* change neither IP, scheme nor prefix."""
    client = await running_apps(make_settings(trusted_proxies="10.0.0.0/8"))
    assert await session_ip(client, FORWARDED) == "203.0.113.7"
    spec = (await client.get("/openapi.json", headers=FORWARDED)).json()
    assert spec["servers"][0]["url"] == "/"


async def test_request_id_is_kongs_own_or_generated(client: httpx.AsyncClient) -> None:
    """Kong's X-Kong-Request-Id (the id in Kong's own logs) is echoed as X-Request-ID and in
    problem bodies, ahead of any X-Request-ID; the correlation-id plugin's Kong-Request-ID
    (which keeps a client's value) is not read; without either one is made."""
    both = {"X-Kong-Request-Id": "k3-id", "X-Request-ID": "client-id"}
    response = await client.get("/api/v1/auth/me", headers=both)
    assert response.headers["x-request-id"] == "k3-id"
    assert response.json()["request_id"] == "k3-id"
    plugin = await client.get("/health/live", headers={"Kong-Request-ID": "kong-abc#1"})
    assert plugin.headers["x-request-id"] != "kong-abc#1"
    made = await client.get("/health/live")
    assert len(made.headers["x-request-id"]) == 32


def test_keepalive_outlasts_kong_and_reaches_uvicorn(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The default keep-alive exceeds Kong's idle timeout, and the setting reaches uvicorn:
    with KEEPALIVE_SECONDS=1 the server closes an idle connection after about a second."""
    defaults = Settings.from_environ(app_env(localauth, redis_url, redis_prefix))
    assert defaults.keepalive_seconds > kong_keepalive_idle_timeout()
    env = app_env(localauth, redis_url, redis_prefix, keepalive_seconds=1)
    with (
        run_app(env, tmp_path) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):  # the JSON body of /health/live
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(4096) == b""  # blocks until the server closes (socket timeout 5 s)
        assert 0.5 < time.monotonic() - started < 4


def test_worst_case_request_fits_inside_kong_read_timeout(
    localauth: LocalAuth, redis_url: str, redis_prefix: str
) -> None:
    """Pool wait + upstream deadline + Redis round trips stay well inside Kong's read timeout."""
    settings = Settings.from_environ(app_env(localauth, redis_url, redis_prefix))
    worst = settings.worst_case_request_seconds + 6 * settings.redis_timeout_seconds
    for service in kong_services():
        assert service["read_timeout"] / 1000 >= worst + 3, service["name"]
        assert service["connect_timeout"] / 1000 < settings.upstream_deadline_seconds
