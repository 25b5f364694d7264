"""Kong's files (kong/) agree with the app and deploy safely: routes, methods, timeouts,
retries, health checks, request ids, trusted ranges, the image and its start scripts."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match

from app.health import READY_CAP_SECONDS
from app.main import create_app
from app.middleware import REQUEST_ID_HEADERS
from app.openapi import iter_routes
from app.settings import Settings
from services import errors
from tests.support.kong import (
    DEPLOY_ENV,
    KONG_DIR,
    KONG_TEMPLATE,
    kong_conf,
    kong_config,
    kong_keepalive_idle_timeout,
    kong_services,
    render,
    rendered_text,
)

ENV = {
    "SUPABASE_URL": "http://127.0.0.1:1",
    "SUPABASE_ANON_KEY": "a",
    "SUPABASE_SERVICE_ROLE_KEY": "b",
}
NON_IDEMPOTENT = {"POST", "PATCH", "PUT"}


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


def app_statuses() -> set[int]:
    """Every status the app itself can answer with (its error tree, plus 500)."""
    statuses = {500}
    pending: list[type[errors.AuthServiceError]] = [errors.AuthServiceError]
    while pending:
        cls = pending.pop()
        statuses.add(cls.status)
        pending.extend(cls.__subclasses__())
    return statuses


def test_upstream_health_checks_use_readiness() -> None:
    """Active checks poll /health/ready with a timeout above its own cap and eject on its
    503 (instance-local failures) or a hang."""
    (upstream,) = kong_config()["upstreams"]
    active = upstream["healthchecks"]["active"]
    assert active["http_path"] == "/health/ready"
    assert active["timeout"] > READY_CAP_SECONDS
    assert active["healthy"]["interval"] > 0
    assert active["unhealthy"]["interval"] > 0
    assert 503 in active["unhealthy"]["http_statuses"]
    assert active["unhealthy"]["timeouts"] > 0
    hosts = {service["host"] for service in kong_services()}
    assert hosts == {upstream["name"]}


def test_passive_checks_count_transport_failures_only() -> None:
    """Kong reports every proxied status to the passive checker and counts any 504 as a
    timeout: no status the app answers with (its shared-outage 503s, its own 504) may count,
    or one Supabase outage ejects every instance."""
    (upstream,) = kong_config()["upstreams"]
    passive = upstream["healthchecks"]["passive"]["unhealthy"]
    assert {503, 504} <= app_statuses()
    assert passive["timeouts"] == 0
    assert passive["tcp_failures"] > 0
    counted = set(passive.get("http_statuses", [])) if passive["http_failures"] else set()
    assert not counted & app_statuses(), counted


def test_one_request_id_across_kong_and_the_app() -> None:
    """Kong sends its own id (the one in its logs) upstream under the header the app reads
    first, and to the client; no correlation-id plugin (it keeps a client's value)."""
    conf = kong_conf()
    upstream = [h.strip().lower() for h in conf["headers_upstream"].split(",")]
    assert upstream == [REQUEST_ID_HEADERS[0].decode()]
    assert "x-kong-request-id" in conf["headers"].lower()
    names = {p["name"] for p in kong_config()["plugins"]}
    for service in kong_services():
        names |= {p["name"] for p in service.get("plugins", [])}
    assert "correlation-id" not in names


def test_plugins_match_the_app() -> None:
    """cors uses the exact origins from the environment with credentials; rate-limiting and
    request-size-limiting agree with the app's limits."""
    plugins = {p["name"]: p["config"] for p in kong_config()["plugins"]}
    cors = plugins["cors"]
    assert cors["credentials"] is True
    assert cors["origins"] == DEPLOY_ENV["CORS_ORIGINS"].split(",")
    assert "X-Request-ID" in cors["exposed_headers"]
    assert "Retry-After" in cors["exposed_headers"]
    size = plugins["request-size-limiting"]
    assert size["size_unit"] == "kilobytes"
    assert size["allowed_payload_size"] * 1024 == defaults().max_body_bytes
    for service in kong_services():
        limits = [p for p in service.get("plugins", []) if p["name"] == "rate-limiting"]
        assert limits
        assert limits[0]["config"]["policy"] in ("local", "redis")
        assert limits[0]["config"]["limit_by"] == "ip"
    assert kong_config()["_format_version"] == "3.0"


def test_gateway_health_route_is_answered_by_kong() -> None:
    """Railway's deploy gate for Kong (kong/railway.json) is a Kong-only route that
    terminates in Kong, over plain http too (the gate does not come through the edge)."""
    deploy = json.loads((KONG_DIR / "railway.json").read_text())["deploy"]
    (route,) = kong_config()["routes"]
    assert sample_path(route["paths"][0]) == deploy["healthcheckPath"]
    assert "http" in route["protocols"]
    (plugin,) = route["plugins"]
    assert plugin["name"] == "request-termination"
    assert plugin["config"]["status_code"] == 200
    assert not app_matches(deploy["healthcheckPath"], "GET")


@pytest.mark.timeout(60)
def test_deck_validates_the_rendered_config(tmp_path: Path) -> None:
    """decK (Debian's package) accepts what the container renders, and rejects a broken
    copy of it (so the check can fail)."""
    deck = shutil.which("deck")
    if deck is None:
        pytest.fail("deck is not installed (scripts/test installs it with apt-get)")
    good = tmp_path / "kong.yml"
    good.write_text(rendered_text())
    result = subprocess.run(
        [deck, "validate", "-s", str(good)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(rendered_text().replace("    retries: 0", "    retries: 0\n    retry: 0", 1))
    result = subprocess.run(
        [deck, "validate", "-s", str(broken)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode != 0


def test_template_has_no_placeholders_and_renders_every_marker() -> None:
    """No example value is shipped: the origins and the target come from the environment."""
    template = KONG_TEMPLATE.read_text()
    code = [line for line in template.splitlines() if not line.lstrip().startswith("#")]
    assert not any("example" in line for line in code)
    assert any("${CORS_ORIGINS}" in line for line in code)
    assert any("${UPSTREAM_TARGET}" in line for line in code)
    rendered = [line for line in rendered_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("${" in line for line in rendered)
    (upstream,) = kong_config()["upstreams"]
    assert upstream["targets"][0]["target"] == DEPLOY_ENV["UPSTREAM_TARGET"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPSTREAM_TARGET", ""),
        ("UPSTREAM_TARGET", "supaguard.railway.internal"),
        ("UPSTREAM_TARGET", "x:1|s/a/b/"),
        ("CORS_ORIGINS", ""),
        ("CORS_ORIGINS", "*"),
        ("CORS_ORIGINS", "http://app.example.com"),
        ("CORS_ORIGINS", "https://app.example.com/path"),
        ("CORS_ORIGINS", "https://app.example.com,https://*.example.com"),
        ("KONG_TRUSTED_IPS", ""),
        ("KONG_TRUSTED_IPS", "0.0.0.0/0"),
        ("KONG_TRUSTED_IPS", "10.0.0.0/8,::/0"),
        ("KONG_TRUSTED_IPS", "not-a-range"),
    ],
)
def test_render_refuses_missing_or_unsafe_values(name: str, value: str, tmp_path: Path) -> None:
    """The container will not start on an open or unusable setting, and says which."""
    env = {**DEPLOY_ENV, name: value}
    if not value:
        del env[name]
    result = render(env, tmp_path / "kong.yml")
    assert result.returncode == 64, result
    assert name in result.stderr
    assert not (tmp_path / "kong.yml").exists()


def test_node_settings_resolve_ipv6_and_trust_only_the_edge() -> None:
    """dns_order asks for AAAA (Railway's older private networks are IPv6 only); the real
    client address comes from X-Forwarded-For recursively, trusting only KONG_TRUSTED_IPS,
    whose shipped default is not everyone."""
    conf = kong_conf()
    assert "AAAA" in conf["dns_order"].split(",")
    assert "AAAA" in conf["resolver_family"].split(",")
    assert conf["real_ip_header"].lower() == "x-forwarded-for"
    assert conf["real_ip_recursive"] == "on"
    assert "trusted_ips" not in conf  # from the environment, checked by render-config.sh
    dockerfile = (KONG_DIR / "Dockerfile").read_text()
    (default,) = re.findall(r"KONG_TRUSTED_IPS=(\S+)", dockerfile)
    networks = [ipaddress.ip_network(item) for item in default.split(",")]
    assert all(not network.is_global and network.prefixlen > 0 for network in networks)
    assert default == DEPLOY_ENV["KONG_TRUSTED_IPS"]


def test_image_pins_a_kong_release_with_the_needed_features() -> None:
    """FROM kong:X.Y.Z with X.Y >= 3.5 (headers_upstream = X-Kong-Request-Id), every file
    the image copies exists, and the start script is its entry point."""
    dockerfile = (KONG_DIR / "Dockerfile").read_text()
    (major, minor) = re.findall(r"^FROM kong:(\d+)\.(\d+)\.\d+", dockerfile, re.M)[0]
    assert (int(major), int(minor)) >= (3, 5)
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for name in line.split()[1:-1]:
                if not name.startswith("--"):
                    assert (KONG_DIR / name).is_file(), name
    assert 'ENTRYPOINT ["/kong/docker-start.sh"]' in dockerfile
    railway = json.loads((KONG_DIR / "railway.json").read_text())
    assert railway["$schema"] == "https://railway.com/railway.schema.json"
    assert railway["build"]["builder"] == "DOCKERFILE"
    assert (KONG_DIR / railway["build"]["dockerfilePath"]).is_file()
    assert railway["deploy"]["numReplicas"] >= 2
    shutdown = re.findall(r"WORKER_SHUTDOWN_TIMEOUT=(\d+)s", dockerfile)
    assert railway["deploy"]["drainingSeconds"] > int(shutdown[0])


@pytest.mark.timeout(30)
def test_start_script_listens_on_port_for_both_families_and_stops_gracefully(
    tmp_path: Path,
) -> None:
    """docker-start.sh sets Kong's listeners from PORT (IPv4 and IPv6), renders the config
    Kong is pointed at, and turns SIGTERM into nginx's graceful SIGQUIT."""
    for name in ("render-config.sh", "docker-start.sh", "kong.yml.tmpl"):
        shutil.copy(KONG_DIR / name, tmp_path / name)
    # Stands in for Kong's entry point: like nginx, it installs its own SIGQUIT handler.
    kong = tmp_path / "kong-entrypoint.py"
    kong.write_text(
        f"#!{sys.executable}\n"
        "import os, pathlib, signal, sys, time\n"
        "files = pathlib.Path(os.environ['KONG_FILES'])\n"
        "def quit(*_):\n"
        "    (files / 'signal').write_text('quit')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGQUIT, quit)\n"
        "listen, config = os.environ['KONG_PROXY_LISTEN'], os.environ['KONG_DECLARATIVE_CONFIG']\n"
        "(files / 'env').write_text(listen + '\\n' + config + '\\n')\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    kong.chmod(0o755)
    env = {
        **DEPLOY_ENV,
        "PATH": os.environ["PATH"],
        "PORT": "8123",
        "KONG_FILES": str(tmp_path),
        "KONG_ENTRYPOINT": str(kong),
    }
    process = subprocess.Popen(["sh", str(tmp_path / "docker-start.sh")], env=env)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "env").exists():
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        listen, config = (tmp_path / "env").read_text().splitlines()
        assert "0.0.0.0:8123" in listen
        assert "[::]:8123" in listen
        assert "${" not in Path(config).read_text().split("_format_version")[1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "signal").read_text().strip() == "quit"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
