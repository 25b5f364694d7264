"""The suite catches the original bug: the same storm and checks fail against ``badapp``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.regression.harness import Limits, fault_violations, run_storm
from tests.support.appserver import AppServer
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.regression, pytest.mark.timeout(180)]


@contextmanager
def run_badapp(mode: str, proxy: FaultProxy, auth: LocalAuth, log_dir: Path) -> Iterator[AppServer]:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"badapp-{port}.log"
    env = {
        **os.environ,
        "BADAPP_MODE": mode,
        "PORT": str(port),
        "SUPABASE_URL": proxy.url,
        "SUPABASE_ANON_KEY": auth.anon_key,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.regression.badapp"], env=env, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/health/live", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield AppServer(url=url, pid=process.pid, port=port, log=log, process=process)
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("mode", ["executor", "onloop"])
async def test_the_checks_catch_the_bad_pattern(
    localauth: LocalAuth,
    proxy: FaultProxy,
    users: list[tuple[str, str]],
    tmp_path: Path,
    mode: str,
) -> None:
    limits = Limits()
    with run_badapp(mode, proxy, localauth, tmp_path) as app:
        proxy.set_mode(Mode.HANG)
        # Fewer clients, one login each: the bad app needs no more to break every bound.
        storm = await run_storm(app.url, app.pid, users, clients=40, duration=0, once=True)
        proxy.set_mode(Mode.PASS)
    violations = fault_violations(storm, limits)
    print(f"bad {mode}: {storm.summary()}\n  {violations}")
    assert any("T + 1 s" in v for v in violations)
    if mode == "onloop":
        assert any("/health/live" in v for v in violations)
