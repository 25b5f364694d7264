"""railway.json agrees with the app's settings and entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.__main__ import DUAL_STACK_HOSTS
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "SUPABASE_URL": "http://127.0.0.1:1",
    "SUPABASE_ANON_KEY": "a",
    "SUPABASE_SERVICE_ROLE_KEY": "b",
}


def deploy() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((ROOT / "railway.json").read_text())
    assert config["$schema"] == "https://railway.com/railway.schema.json"
    section: dict[str, Any] = config["deploy"]
    return section


def test_start_command_serves_the_app_dual_stack_on_the_injected_port() -> None:
    """`python -m app --host ::`: PORT comes from Railway; :: is one dual-stack listener
    (tests/integration/test_dual_stack.py runs this command over 127.0.0.1 and ::1)."""
    command = deploy()["startCommand"].split()
    assert command[:3] == ["python", "-m", "app"]
    assert command[command.index("--host") + 1] in DUAL_STACK_HOSTS
    assert "--port" not in command


def test_healthcheck_and_restart_policy() -> None:
    """Deploys are gated on readiness; crashes restart a bounded number of times; 2 replicas."""
    section = deploy()
    assert section["healthcheckPath"] == "/health/ready"
    assert 30 <= section["healthcheckTimeout"] <= 300
    assert section["restartPolicyType"] == "ON_FAILURE"
    assert section["restartPolicyMaxRetries"] >= 1
    assert section["numReplicas"] >= 2


def test_draining_window_covers_the_shutdown_drain() -> None:
    """SIGKILL comes only after uvicorn's drain and the worst-case request have had time."""
    settings = Settings.from_environ(ENV)
    draining = deploy()["drainingSeconds"]
    assert settings.shutdown_drain_seconds >= settings.worst_case_request_seconds
    assert settings.shutdown_drain_seconds < draining <= settings.shutdown_drain_seconds + 10
