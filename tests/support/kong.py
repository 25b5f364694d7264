"""Kong's files as the container uses them: kong/kong.yml.tmpl rendered by
kong/render-config.sh (the script the image runs at start) and kong/kong.conf, read for the
tests that check them against the app."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KONG_DIR = ROOT / "kong"
KONG_TEMPLATE = KONG_DIR / "kong.yml.tmpl"
KONG_CONF = KONG_DIR / "kong.conf"
RENDER = KONG_DIR / "render-config.sh"

# What an operator sets on the Kong service (README, deployment section).
DEPLOY_ENV = {
    "UPSTREAM_TARGET": "supaguard.railway.internal:8080",
    "CORS_ORIGINS": "https://app.example.com,https://admin.example.com",
    "KONG_TRUSTED_IPS": "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fc00::/7",
}


def render(env: Mapping[str, str], output: Path) -> subprocess.CompletedProcess[str]:
    """Run render-config.sh with only ``env`` (plus PATH) set; never raises on failure."""
    return subprocess.run(
        ["sh", str(RENDER), str(KONG_TEMPLATE), str(output)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@functools.cache
def rendered_text() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "kong.yml"
        result = render(DEPLOY_ENV, output)
        if result.returncode != 0:
            raise RuntimeError(f"render-config.sh failed: {result.stderr}")
        return output.read_text()


def kong_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(rendered_text())
    return data


def kong_services() -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = kong_config()["services"]
    return services


def kong_conf() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in KONG_CONF.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def kong_keepalive_idle_timeout() -> float:
    return float(kong_conf().get("upstream_keepalive_idle_timeout", "60"))
