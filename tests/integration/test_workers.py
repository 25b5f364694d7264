"""Several worker processes per instance (``python -m app --workers 2``): every worker serves,
and a revocation published once reaches each worker's cache."""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.timeout(90)
CONNECTIONS = 16


def worker_pids(parent: int) -> list[int]:
    text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    return [int(pid) for pid in text.split()]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def peer_ports_by_worker(pids: list[int], port: int) -> dict[int, set[int]]:
    """For each worker, the client ports of the connections it holds on ``port``."""
    owned: dict[int, set[int]] = {pid: set() for pid in pids}
    inodes = {pid: _socket_inodes(pid) for pid in pids}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            for pid in pids:
                if inode in inodes[pid]:
                    owned[pid].add(int(remote.rsplit(":", 1)[1], 16))
    return owned


def me(conn: http.client.HTTPConnection, token: str) -> int:
    conn.request("GET", "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    return response.status


def test_logout_reaches_every_worker(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Two workers each serve some of 16 keep-alive connections and cache the token's
    session; one logout (served by one worker) makes every connection get 401, so the
    other worker's cache was invalidated too. SIGTERM stops both workers and exits 0."""
    env = app_env(localauth, redis_url, redis_prefix, rate_limit_enabled="false")
    with run_app(env, tmp_path, argv=["--workers", "2"]) as server:
        deadline = time.monotonic() + 15
        while len(pids := worker_pids(server.pid)) < 2:
            assert time.monotonic() < deadline, "two workers never started"
            time.sleep(0.05)
        email = new_email()
        body = {"email": email, "password": TEST_PASSWORD}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/api/v1/auth/register", json=body).status_code == 201
            tokens = client.post("/api/v1/auth/login", json=body).json()
        token = tokens["access_token"]
        conns: list[http.client.HTTPConnection] = []
        owners: dict[int, set[int]] = {}
        # Both workers must hold connections; the kernel picks the accepting worker, so
        # open connections (bounded) until each worker has some.
        while not owners or not all(owners.values()):
            assert len(conns) < 200, f"one worker never accepted: {owners}"
            for _ in range(CONNECTIONS):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                assert me(conn, token) == 200  # connected, served, the session now cached
                conns.append(conn)
            owners = peer_ports_by_worker(pids, server.port)
        for conn in conns:
            assert me(conn, token) == 200
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
        deadline = time.monotonic() + 5
        for conn in conns:
            while (status := me(conn, token)) != 401:
                assert status == 200
                assert time.monotonic() < deadline, "a worker kept serving a revoked session"
                time.sleep(0.02)
        for conn in conns:
            conn.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_dead_worker_takes_the_instance_down_for_a_restart(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """A worker killed from outside: the supervisor stops the other one and exits non-zero,
    so the platform restarts the whole instance instead of running it at half capacity."""
    env = app_env(localauth, redis_url, redis_prefix)
    with run_app(env, tmp_path, argv=["--workers", "2"]) as server:
        deadline = time.monotonic() + 15
        while len(pids := worker_pids(server.pid)) < 2:
            assert time.monotonic() < deadline, "two workers never started"
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        code = server.process.wait(timeout=30)
        assert code != 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
