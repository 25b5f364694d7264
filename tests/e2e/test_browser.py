"""A real headless Chromium on another origin logs in, calls /me, refreshes and logs out
through fetch against a real uvicorn process, CORS and all."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth

PAGE = Path(__file__).parent / "static" / "flow.html"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is not installed: run `apt-get install -y chromium` (Debian)")
    return found


@contextmanager
def page_server() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    """Serves flow.html and receives the page's result as a POST to /result."""
    results: queue.Queue[dict[str, Any]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            results.put(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}", results
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_cross_origin_page_walks_the_whole_flow(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """register → login → /me → refresh → logout from another origin all succeed in Chromium,
    X-Request-ID is readable by the page, and /me after logout is 401."""
    binary = chromium()
    with page_server() as (origin, results):
        env = app_env(
            localauth, redis_url, redis_prefix, cors_origins=origin, rate_limit_enabled="false"
        )
        with run_app(env, tmp_path / "app") as server:
            email = new_email()
            query = urllib.parse.urlencode(
                {"api": server.url, "email": email, "password": TEST_PASSWORD}
            )
            browser = subprocess.Popen(
                [
                    binary,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={tmp_path / 'profile'}",
                    f"{origin}/?{query}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                result = results.get(timeout=60)
            except queue.Empty:
                pytest.fail("the page never reported a result (did Chromium start?)")
            finally:
                browser.terminate()
                try:
                    browser.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    browser.kill()
                    browser.wait()
    assert result["ok"] is True, result
    statuses = {step["name"]: step["status"] for step in result["steps"]}
    assert statuses == {
        "register": 201,
        "login": 200,
        "me": 200,
        "refresh": 200,
        "logout": 204,
        "me_after_logout": 401,
    }
    assert result["me_email"] == email
    assert result["rotated"] is True
    assert all(step["request_id"] for step in result["steps"])
