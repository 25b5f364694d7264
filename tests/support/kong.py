"""Reading kong/kong.yml and kong/kong.conf for the tests that check them against the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KONG_YML = ROOT / "kong" / "kong.yml"
KONG_CONF = ROOT / "kong" / "kong.conf"


def kong_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(KONG_YML.read_text())
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
