"""/openapi.json describes every endpoint, and schemathesis finds no 5xx and no violation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.openapi import iter_routes
from app.schemas import LoginBody, RegisterBody
from app.settings import Settings
from tests.conftest import SettingsFactory, app_env
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.anyio
async def test_document_covers_every_route_body_and_problem(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """Every app route and method is in the document; bodies come from app.schemas and
    failures are problem+json."""
    client: httpx.AsyncClient = await running_apps(make_settings())
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    for path, _, methods in iter_routes(list(transport.app.routes)):  # type: ignore[attr-defined]
        for method in methods:
            assert method.lower() in spec["paths"][path], (path, method)
    login = spec["paths"]["/api/v1/auth/login"]["post"]
    assert login["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LoginBody"
    }
    schemas = spec["components"]["schemas"]
    assert set(schemas["LoginBody"]["properties"]) == set(
        LoginBody.model_json_schema()["properties"]
    )
    assert set(schemas["RegisterBody"]["required"]) == set(
        RegisterBody.model_json_schema()["required"]
    )
    assert login["responses"]["401"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert spec["paths"]["/api/v1/auth/me"]["get"]["security"] == [{"bearer": []}]


def test_schemathesis_finds_no_server_error_or_schema_violation(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Generated requests for every operation never get a 5xx, an undocumented status, a wrong
    content type or a body that violates the documented schema."""
    env = app_env(
        localauth, redis_url, redis_prefix, rate_limit_enabled="false", lockout_enabled="false"
    )
    with run_app(env, tmp_path) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        failures: list[str] = []
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 11
        for operation in operations:
            if operation.path == "/health/ready":
                continue  # 503 is a documented answer, but not a fuzzing target
            strategy = operation.as_strategy()

            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def check(case: Any) -> None:
                try:
                    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)
                except Exception as exc:  # Collected so one run reports every operation.
                    failures.append(f"{case.method} {case.path}: {str(exc)[:400]}")
                    raise

            with contextlib.suppress(Exception):  # Already recorded in failures.
                check()
        assert failures == []
