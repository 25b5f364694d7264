"""One listener for both IP families: Railway's private names resolve to IPv6 only in older
environments and to IPv4 and IPv6 in newer ones, and Kong may connect over either."""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support import appserver
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth

ROOT = Path(__file__).resolve().parents[2]


def session_ip(base: str) -> str:
    """Register and log in over ``base``; the address the app recorded for the session."""
    body = {"email": new_email(), "password": TEST_PASSWORD}
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/api/v1/auth/register", json=body).status_code == 201
        login = client.post("/api/v1/auth/login", json=body)
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        sessions = client.get("/api/v1/auth/sessions", headers=auth).json()["sessions"]
    (current,) = [s for s in sessions if s["current"]]
    ip: str = current["ip"]
    return ip


def refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.timeout(90)
def test_railway_start_command_accepts_ipv4_and_ipv6_on_one_port(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The exact start command of railway.json serves 127.0.0.1 and ::1 on PORT, and the
    session records each client's own address (IPv4 not as ::ffff:127.0.0.1)."""
    command = shlex.split(json.loads((ROOT / "railway.json").read_text())["deploy"]["startCommand"])
    assert command[:3] == ["python", "-m", "app"]
    env = app_env(localauth, redis_url, redis_prefix)
    # run_app sets HOST=127.0.0.1; the command's own --host must win over it.
    with run_app(env, tmp_path, argv=command[3:]) as server:
        assert httpx.get(f"http://[::1]:{server.port}/health/live").status_code == 200
        assert session_ip(f"http://127.0.0.1:{server.port}") == "127.0.0.1"
        assert session_ip(f"http://[::1]:{server.port}") == "::1"


@pytest.mark.timeout(90)
def test_host_setting_alone_is_dual_stack_and_ipv4_host_stays_ipv4(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """HOST=:: (no flag) listens on both families; HOST=127.0.0.1 on IPv4 only."""
    env = app_env(localauth, redis_url, redis_prefix)
    with run_app(env, tmp_path, host="::") as server:
        for base in (f"http://127.0.0.1:{server.port}", f"http://[::1]:{server.port}"):
            assert httpx.get(base + "/health/live").json()["status"] == "ok"
    with run_app(env, tmp_path / "v4") as server:
        assert refuses("::1", server.port)


@pytest.mark.timeout(90)
def test_a_port_taken_on_ipv6_before_the_app_binds_it_is_replaced(
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite's servers pick free ports and bind them later: a port another process
    takes on IPv6 in between (free for IPv4 alone) made a dual-stack app exit with
    "Address already in use" and a test error. It is replaced by a fresh port."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        occupied = taken.getsockname()[1]
        picks = iter([occupied])
        real = appserver._free_port
        monkeypatch.setattr(appserver, "_free_port", lambda host: next(picks, None) or real(host))
        with run_app(app_env(localauth, redis_url, redis_prefix), tmp_path, host="::") as server:
            assert server.port != occupied
            assert httpx.get(f"http://[::1]:{server.port}/health/live").status_code == 200
        assert "Address already in use" in (tmp_path / f"app-{occupied}.log").read_text()
