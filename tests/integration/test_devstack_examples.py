"""``scripts/dev`` serves the example frontend, prints its URL, and configures the app for it."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from scripts.devstack import stop_process
from tests.support.localauth import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def test_dev_stack_serves_the_example_frontend(redis_url: str, redis_prefix: str) -> None:
    api_port, auth_port, page_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "devstack.py"),
            "--port",
            str(api_port),
            "--localauth-port",
            str(auth_port),
            "--examples-port",
            str(page_port),
        ],
        env={**os.environ, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        url = None
        seen: list[str] = []
        while url is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no frontend URL printed:\n" + "".join(seen[-40:])
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            seen.append(line)
            found = re.search(r"example frontend at (http://\S+)", line)
            if found:
                url = found.group(1)
        assert url == (
            f"http://localhost:{page_port}/?api=http://localhost:{api_port}"
            f"&mailbox=http://127.0.0.1:{auth_port}"
        )
        mailbox = httpx.get(f"http://127.0.0.1:{auth_port}/mailbox/messages", timeout=5)
        assert mailbox.status_code == 200
        origin = f"http://localhost:{page_port}"
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200
        assert "supaguard example" in page.text
        script = httpx.get(f"{origin}/client.js", timeout=5)
        assert script.headers["content-type"].startswith("text/javascript")
        api = f"http://127.0.0.1:{api_port}"
        preflight = httpx.options(
            f"{api}/api/v1/auth/login",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-session-transport",
            },
            timeout=5,
        )
        assert preflight.headers["access-control-allow-origin"] == origin
        login = httpx.post(
            f"{api}/api/v1/auth/login",
            json={"email": "demo@example.com", "password": "Demo-password-1"},
            headers={"Origin": origin, "X-Session-Transport": "cookie"},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        assert "refresh_token" not in login.json()
        assert "HttpOnly" in login.headers["set-cookie"]
    finally:
        stop_process(process, 30)
        reader.join(timeout=10)
        stdout.close()
