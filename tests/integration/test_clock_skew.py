"""An app whose clock runs 120 s slow (libfaketime, the Debian ``faketime`` package): every
token looks issued in the future, so /me is 401; the skew is now logged (``clock_skew``),
exported (``sg_clock_skew_seconds``, alerted on by monitoring/alerts.yml) and the refusals
are in the access log."""

from __future__ import annotations

import glob
import re
from pathlib import Path

import httpx

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.integration.test_logging import lines
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: apt-get install faketime (scripts/test does it)"
    return found[0]


def test_a_slow_clock_is_logged_exported_and_visible_in_the_access_log(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env = {
        **app_env(localauth, redis_url, redis_prefix, log_level="info"),
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": "-120s",
        # Timers and timeouts keep the real monotonic clock; only the wall clock is off.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    with (
        run_app(env, tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        body = {"email": new_email(), "password": TEST_PASSWORD}
        assert client.post("/api/v1/auth/register", json=body).status_code == 201
        tokens = client.post("/api/v1/auth/login", json=body).json()
        me = client.get(
            "/api/v1/auth/me",
            headers={"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": "skew"},
        )
        assert me.status_code == 401
        assert me.json()["code"] == "invalid_token"
        ready = client.get("/health/ready").json()
        assert ready["checks"]["clock"]["state"] == "skewed"
        exported = client.get("/metrics").text
    for reference in ("supabase_auth", "redis"):
        series = rf'^sg_clock_skew_seconds{{reference="{reference}"}} (\S+)$'
        match = re.search(series, exported, flags=re.M)
        assert match, exported
        assert -125 < float(match.group(1)) < -115, reference
    log = lines(server.log)
    skews = [
        line
        for line in log
        if line["event"] == "clock_skew" and line.get("against") == "supabase_auth_token_iat"
    ]
    assert len(skews) == 2  # the registration's sign-in and the login
    assert all(-125 < line["skew_s"] < -115 and line["level"] == "warning" for line in skews)
    assert all(line["request_id"] for line in skews)
    refused = [line for line in log if line.get("request_id") == "skew"]
    assert [(line["route"], line["status"]) for line in refused] == [("/api/v1/auth/me", 401)]
