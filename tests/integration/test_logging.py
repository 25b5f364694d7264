"""Logs of a real uvicorn process through real failures: JSON, request ids, stable event
names, and never a password, token or key."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import app_env, new_email
from tests.support.appserver import run_app
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth, forged_service_role_key
from tests.support.redis_server import RedisServer


def lines(log: Path) -> list[dict[str, Any]]:
    parsed = []
    for raw in log.read_text().splitlines():
        if raw.strip():
            parsed.append(json.loads(raw))  # every line is JSON
    return parsed


def until(check: Any, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_failure_logs_name_each_class_and_leak_no_secret(
    localauth: LocalAuth, redis_prefix: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    """Wrong service key, dead, resetting and hanging upstream, Redis down and password logins
    log upstream_rejected_service_key, upstream_unreachable, upstream_timeout, breaker
    opened/closed and redis_unavailable, each with the request id, and no secret at all."""
    password = f"Pw-{uuid.uuid4().hex}-9Z"
    secrets = {localauth.anon_key, localauth.service_role_key, localauth.jwt_secret, password}
    with FaultProxy("127.0.0.1", localauth.port) as proxy:
        env = app_env(
            localauth,
            own_redis.url,
            redis_prefix,
            supabase_url=proxy.url,
            jwt_issuer=localauth.url + "/auth/v1",  # tokens name the real server
            log_level="debug",
            upstream_deadline_seconds=1.0,
            upstream_connect_timeout_seconds=0.3,
            upstream_read_timeout_seconds=0.6,
            breaker_failure_threshold=2,
            breaker_open_seconds=0.5,
            # One client here: let one caller's resets open the breaker.
            breaker_min_callers=1,
            rate_limit_enabled="false",
            lockout_enabled="false",
        )
        with (
            run_app(env, tmp_path / "main") as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            email = new_email()
            body = {"email": email, "password": password}
            assert client.post("/api/v1/auth/register", json=body).status_code == 201
            tokens = client.post("/api/v1/auth/login", json=body).json()
            secrets |= {tokens["access_token"], tokens["refresh_token"]}
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}
            assert client.get("/api/v1/auth/me", headers=auth).status_code == 200
            refreshed = client.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ).json()
            secrets |= {refreshed["access_token"], refreshed["refresh_token"]}
            wrong = client.post(
                "/api/v1/auth/login", json={"email": email, "password": password + "x"}
            )
            assert wrong.status_code == 401

            proxy.set_mode(Mode.RESET)
            for _ in range(2):
                failed = client.post(
                    "/api/v1/auth/login", json=body, headers={"X-Kong-Request-Id": "kong-reset-1"}
                )
                assert failed.status_code == 503
            proxy.set_mode(Mode.HANG)
            until(
                lambda: (
                    client.post("/api/v1/auth/login", json=body).json().get("code")
                    == "upstream_timeout"
                )
            )
            proxy.set_mode(Mode.PASS)
            until(lambda: client.post("/api/v1/auth/login", json=body).status_code == 200)

            own_redis.stop()
            down = client.post(
                "/api/v1/auth/login", json=body, headers={"X-Request-ID": "req-redis-down"}
            )
            assert down.status_code == 503
            own_redis.start()
        main_log = lines(server.log)

    env = app_env(
        localauth, own_redis.url, redis_prefix, supabase_service_role_key=forged_service_role_key()
    )
    with (
        run_app(env, tmp_path / "badkey") as bad,
        httpx.Client(base_url=bad.url, timeout=10) as client,
    ):
        response = client.post(
            "/api/v1/auth/register", json={"email": new_email(), "password": password}
        )
        assert response.status_code == 503
        assert response.json()["code"] == "upstream_misconfigured"
    bad_log = lines(bad.log)

    events = {line["event"] for line in main_log + bad_log}
    for name in (
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_breaker_opened",
        "upstream_breaker_closed",
        "redis_unavailable",
        "upstream_rejected_service_key",
    ):
        assert name in events, name
    by_event = {line["event"]: line for line in main_log + bad_log}
    assert by_event["upstream_rejected_service_key"]["request_id"]
    assert any(
        line["event"] == "upstream_unreachable" and line.get("request_id") == "kong-reset-1"
        for line in main_log
    )
    assert any(
        line["event"] == "redis_unavailable" and line.get("request_id") == "req-redis-down"
        for line in main_log
    )
    text = server.log.read_text() + bad.log.read_text()
    for secret in secrets:
        assert secret not in text
