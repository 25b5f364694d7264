"""`uvicorn --factory app.main:create_app` serves the same app as `python -m app`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.localauth import LocalAuth, free_port


@pytest.mark.timeout(60)
def test_uvicorn_factory_serves_the_app(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The factory reads its settings from the environment and serves a full login."""
    port = free_port()
    env = {**os.environ, **app_env(localauth, redis_url, redis_prefix)}
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "uvicorn.log").read_text()
            try:
                if httpx.get(base + "/health/live", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "uvicorn --factory did not come up"
            time.sleep(0.05)
        body = {"email": new_email(), "password": TEST_PASSWORD}
        assert httpx.post(base + "/api/v1/auth/register", json=body).status_code == 201
        login = httpx.post(base + "/api/v1/auth/login", json=body)
        assert login.status_code == 200
        me = httpx.get(
            base + "/api/v1/auth/me",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        assert me.json()["email"] == body["email"]
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
