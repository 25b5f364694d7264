"""kong/kong.yml and kong/kong.conf agree with the app: routes, methods, timeouts, retries."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Match

from app.health import READY_CAP_SECONDS
from app.main import create_app
from app.middleware import REQUEST_ID_HEADERS
from app.openapi import iter_routes
from app.settings import Settings
from tests.support.kong import kong_config, kong_keepalive_idle_timeout, kong_services

ENV = {
    "SUPABASE_URL": "http://127.0.0.1:1",
    "SUPABASE_ANON_KEY": "a",
    "SUPABASE_SERVICE_ROLE_KEY": "b",
}
NON_IDEMPOTENT = {"POST", "PATCH"}


def defaults() -> Settings:
    return Settings.from_environ(ENV)


def kong_routes() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(service, route) for service in kong_services() for route in service["routes"]]


def sample_path(kong_path: str) -> str:
    """A concrete request path a Kong path (prefix or ~regex) matches."""
    path = kong_path[1:] if kong_path.startswith("~") else kong_path
    return path.rstrip("$").replace("[^/]+", "some-id")


def app_matches(path: str, method: str) -> bool:
    app = create_app(defaults(), configure_logs=False)
    scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes) and not path.endswith(
        "/"
    )


def test_every_kong_route_exists_in_the_app_with_its_methods() -> None:
    """Each path and method Kong forwards is a real app route (OPTIONS is Kong's cors)."""
    for _, route in kong_routes():
        assert route["strip_path"] is False or all(not p.startswith("~") for p in route["paths"])
        for path in route["paths"]:
            for method in set(route["methods"]) - {"OPTIONS"}:
                assert app_matches(sample_path(path), method), (route["name"], path, method)


def test_every_public_api_route_is_published_by_kong() -> None:
    """Every /api/v1/auth endpoint of the app is reachable through some Kong route."""
    app = create_app(defaults(), configure_logs=False)
    for template, _, methods in iter_routes(list(app.routes)):
        if not template.startswith("/api/v1/auth/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "some-id", template)
        for method in methods:
            assert any(
                method in route["methods"]
                and any(
                    re.fullmatch(p[1:] if p.startswith("~") else re.escape(p) + ".*", concrete)
                    for p in route["paths"]
                )
                for _, route in kong_routes()
            ), (template, method)


def test_non_idempotent_routes_are_never_retried() -> None:
    """A service that carries POST routes has retries 0 (Kong would replay logins)."""
    for service, route in kong_routes():
        if NON_IDEMPOTENT & set(route["methods"]):
            assert service["retries"] == 0, service["name"]
        assert service["retries"] <= 1


def test_timeouts_exceed_the_app_deadline_and_keepalive_fits() -> None:
    """Kong waits longer than the app's worst case, and the app keeps idle sockets longer."""
    settings = defaults()
    worst = settings.worst_case_request_seconds + 6 * settings.redis_timeout_seconds
    for service in kong_services():
        assert service["read_timeout"] / 1000 > worst, service["name"]
        assert service["write_timeout"] / 1000 > worst
    assert settings.keepalive_seconds > kong_keepalive_idle_timeout()


def test_upstream_health_checks_use_readiness() -> None:
    """Active checks poll /health/ready with a timeout above its own cap; passive checks on."""
    (upstream,) = kong_config()["upstreams"]
    active = upstream["healthchecks"]["active"]
    assert active["http_path"] == "/health/ready"
    assert active["timeout"] > READY_CAP_SECONDS
    assert active["healthy"]["interval"] > 0
    assert active["unhealthy"]["interval"] > 0
    assert 503 in active["unhealthy"]["http_statuses"]
    passive = upstream["healthchecks"]["passive"]["unhealthy"]
    assert passive["tcp_failures"] > 0
    assert 502 in passive["http_statuses"]
    hosts = {service["host"] for service in kong_services()}
    assert hosts == {upstream["name"]}


def test_plugins_match_the_app() -> None:
    """correlation-id uses a header the app reads; cors uses exact origins with credentials;
    rate-limiting and request-size-limiting agree with the app's limits."""
    plugins = {p["name"]: p["config"] for p in kong_config()["plugins"]}
    assert plugins["correlation-id"]["header_name"].lower().encode() in REQUEST_ID_HEADERS
    assert plugins["correlation-id"]["echo_downstream"] is True
    cors = plugins["cors"]
    assert cors["credentials"] is True
    assert all("*" not in origin and origin.startswith("https://") for origin in cors["origins"])
    assert "X-Request-ID" in cors["exposed_headers"]
    size = plugins["request-size-limiting"]
    assert size["size_unit"] == "kilobytes"
    assert size["allowed_payload_size"] * 1024 == defaults().max_body_bytes
    for service in kong_services():
        limits = [p for p in service.get("plugins", []) if p["name"] == "rate-limiting"]
        assert limits
        assert limits[0]["config"]["policy"] in ("local", "redis")
    assert kong_config()["_format_version"] == "3.0"
