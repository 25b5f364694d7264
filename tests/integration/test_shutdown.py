"""Graceful shutdown of a real uvicorn process: SIGTERM lets in-flight logins finish."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.appserver import run_app
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth

LOGINS = 6


def pool_gauges(url: str) -> tuple[float, float]:
    """(slots in use, waiters) of the Supabase thread pool, from /metrics."""
    values = {"sg_upstream_pool_in_use": -1.0, "sg_upstream_pool_waiting": -1.0}
    text = httpx.get(url + "/metrics", timeout=2).text
    for family in text_string_to_metric_families(text):
        if family.name in values:
            values[family.name] = family.samples[0].value
    return values["sg_upstream_pool_in_use"], values["sg_upstream_pool_waiting"]


def test_sigterm_drains_in_flight_logins_then_exits_zero(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Logins in flight at SIGTERM (some still queued for the 2-slot Supabase pool) all get
    200; new connections are refused at once; the process then exits 0."""
    with FaultProxy("127.0.0.1", localauth.port) as proxy:
        env = app_env(
            localauth,
            redis_url,
            redis_prefix,
            supabase_url=proxy.url,
            upstream_pool_size=2,
            # The deadline covers the queueing: 6 logins of ~2 s on 2 slots need ~6 s.
            upstream_deadline_seconds=10,
            shutdown_drain_seconds=15,
            rate_limit_enabled="false",
            log_level="info",
        )
        with run_app(env, tmp_path) as server:
            emails = [new_email() for _ in range(LOGINS)]
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for email in emails:
                    body = {"email": email, "password": TEST_PASSWORD}
                    assert client.post("/api/v1/auth/register", json=body).status_code == 201
            proxy.set_mode(Mode.LATENCY, latency=1.0)

            def login(email: str) -> int:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    body = {"email": email, "password": TEST_PASSWORD}
                    return c.post("/api/v1/auth/login", json=body).status_code

            with ThreadPoolExecutor(LOGINS) as pool:
                futures = [pool.submit(login, email) for email in emails]
                deadline = time.monotonic() + 10
                # Every login is inside the app: two hold the pool's slots, four wait.
                while pool_gauges(server.url) != (2.0, LOGINS - 2.0):
                    assert time.monotonic() < deadline, "the logins never filled the pool"
                    time.sleep(0.02)
                server.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 5
                while True:  # the listener closes while the logins are still running
                    try:
                        httpx.get(server.url + "/health/live", timeout=0.5)
                    # Refused, or reset when it raced the listener closing: not served either
                    # way (a connection that is accepted and then hangs would still fail).
                    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                        break
                    assert time.monotonic() < deadline, "still accepting after SIGTERM"
                    time.sleep(0.05)
                assert not all(f.done() for f in futures)
                statuses = [f.result(timeout=30) for f in futures]
            assert statuses == [200] * LOGINS
            assert server.process.wait(timeout=20) == 0
            log = server.log.read_text()
            assert (
                "Waiting for application shutdown" in log or "Application shutdown complete" in log
            )
