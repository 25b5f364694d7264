"""Prometheus metrics: every metric of services.metrics is exported and fed by real traffic."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_PASSWORD, new_email

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


async def test_metrics_exports_every_metric_fed_by_a_login_flow(client: httpx.AsyncClient) -> None:
    """After register/login/me/refresh/logout, /metrics shows requests, outcomes, upstream calls,
    pool and breaker gauges and token-cache lookups, by route template (never a raw path)."""
    email = new_email()
    assert (
        await client.post("/api/v1/auth/register", json={"email": email, "password": TEST_PASSWORD})
    ).status_code == 201
    tokens = (
        await client.post("/api/v1/auth/login", json={"email": email, "password": TEST_PASSWORD})
    ).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=auth)).status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=auth)).status_code == 200
    assert (await client.delete("/api/v1/auth/sessions/nope", headers=auth)).status_code == 404
    bad = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-1"}
    )
    assert bad.status_code == 401
    assert (await client.post("/api/v1/auth/logout", headers=auth)).status_code == 204

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert (
        value(
            found, "sg_http_requests_total", route="/api/v1/auth/login", method="POST", status="200"
        )
        >= 1
    )
    assert (
        value(
            found,
            "sg_http_requests_total",
            route="/api/v1/auth/sessions/{session_id}",
            status="404",
        )
        >= 1
    )
    assert not any("nope" in lab.get("route", "") for lab, _ in found["sg_http_requests_total"])
    assert value(found, "sg_http_request_duration_seconds_count", route="/api/v1/auth/me") >= 2
    assert value(found, "sg_auth_outcomes_total", action="login", outcome="ok") >= 1
    assert value(found, "sg_auth_outcomes_total", action="login", outcome="invalid") >= 1
    assert value(found, "sg_auth_outcomes_total", action="logout", outcome="local") >= 1
    assert value(found, "sg_upstream_calls_total", operation="sign_in", outcome="ok") >= 1
    assert value(found, "sg_upstream_call_duration_seconds_count", operation="sign_in") >= 1
    assert value(found, "sg_token_cache_total", result="hit") >= 1
    assert found["sg_upstream_pool_size"][0][1] == 128
    assert found["sg_upstream_pool_in_use"][0][1] == 0
    assert found["sg_upstream_pool_waiting"][0][1] == 0
    assert found["sg_upstream_breaker_state"][0][1] == 0
    # Declared even before their first event, so dashboards and alerts never see "no data".
    for name in ("sg_upstream_retries", "sg_redis_errors", "sg_rejections"):
        assert any(family.name == name for family in text_string_to_metric_families(response.text))


async def test_body_too_large_counts_as_a_rejection(client: httpx.AsyncClient) -> None:
    """A refused oversized body is a 413 problem and increments sg_rejections_total."""
    before = value(
        samples((await client.get("/metrics")).text),
        "sg_rejections_total",
        kind="shed:payload_too_large",
    )
    response = await client.post(
        "/api/v1/auth/login",
        content=b"{" + b" " * 20000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    after = value(
        samples((await client.get("/metrics")).text),
        "sg_rejections_total",
        kind="shed:payload_too_large",
    )
    assert after == before + 1
