"""A real headless Chromium (Debian's, driven by Playwright) clicks through the example
frontend in examples/browser, in both session transports, against a real uvicorn process.

The page is served from its own origin (``http://localhost:PAGE``) and calls the API on
``http://localhost:API``: cross-origin, same-site, as a real SPA on app.example.com calling
api.example.com. Screenshots go to the test's tmp dir, and to docs/img/ with
``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.appserver import AppServer, run_app
from tests.support.localauth import LocalAuth

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "browser"
DOCS_IMG = ROOT / "docs" / "img"
COOKIE = "__Secure-sg-refresh"
AUTH = "/api/v1/auth"
WAIT_MS = 15_000


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def api(
    localauth: LocalAuth, redis_url: str, prefix: str, log_dir: Path, page_port: int, **extra: Any
) -> Iterator[AppServer]:
    options: dict[str, Any] = {
        "cors_origins": f"http://localhost:{page_port}",
        "session_transport": "both",
        "rate_limit_enabled": "false",
        **extra,
    }
    env = app_env(localauth, redis_url, prefix, **options)
    with run_app(env, log_dir) as server:
        yield server


def api_url(server: AppServer) -> str:
    return f"http://localhost:{server.port}"


def open_app(
    context: BrowserContext, page_port: int, server: AppServer, mode: str, mailbox: str = ""
) -> Page:
    page = context.new_page()
    extra = f"&mailbox={mailbox}" if mailbox else ""
    page.goto(f"http://localhost:{page_port}/?api={api_url(server)}&mode={mode}{extra}")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    return page


def shot(page: Page, tmp_path: Path, name: str) -> None:
    target = tmp_path / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 5_000, "the screenshot is blank"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS_IMG / target.name)


def text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text(timeout=WAIT_MS).strip()


def refresh_cookie(context: BrowserContext) -> Any:
    found = [c for c in context.cookies() if c["name"] == COOKIE]
    assert len(found) <= 1
    return found[0] if found else None


def register_and_sign_in(page: Page, email: str, tmp_path: Path, prefix: str) -> None:
    page.click("#to-register")
    page.fill("#register-name", "Ada")
    page.fill("#register-email", email)
    page.fill("#register-password", "short")
    page.click("#register-submit")
    error = page.locator("#register-status .error")
    assert error.get_attribute("data-code", timeout=WAIT_MS) == "weak_password"
    if prefix == "cookie":
        shot(page, tmp_path, "register-error")
    page.fill("#register-password", TEST_PASSWORD)
    page.click("#register-submit")
    page.wait_for_selector("#me-email", timeout=WAIT_MS)
    assert text(page, "#me-email") == email
    page.wait_for_selector("#sessions tr.current", timeout=WAIT_MS)


SPY = """(() => {
  const real = window.fetch;
  window.fetch = async (...args) => {
    const response = await real(...args);
    response.clone().text().then((body) => window.__record(body));
    return response;
  };
})();"""


@pytest.mark.parametrize("mode", ["cookie", "bearer"])
def test_every_flow_in_the_example_frontend(
    mode: str,
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """register (a refused weak password first) → /me and sessions → refresh → reload keeps
    the session → another device appears and is revoked → sign out; in cookie mode the
    refresh token is only ever in an HttpOnly, Secure, SameSite=Strict cookie on /refresh."""
    bodies: list[str] = []

    # Every response body the page's own scripts get to see, across reloads.
    def record(body: str) -> None:
        bodies.append(body)

    context.expose_function("__record", record)
    context.add_init_script(SPY)
    with api(localauth, redis_url, redis_prefix, tmp_path / "app", page_port) as server:
        page = open_app(context, page_port, server, mode)
        assert page.locator("body").get_attribute("data-view") == "signin"
        if mode == "cookie":
            page.fill("#signin-email", "nobody@example.com")
            page.fill("#signin-password", "Wrong-password-1")
            page.click("#signin-submit")
            error = page.locator("#signin-status .error")
            assert error.get_attribute("data-code", timeout=WAIT_MS) == "invalid_credentials"
            shot(page, tmp_path, "signin-error")
        email = new_email()
        register_and_sign_in(page, email, tmp_path, mode)
        page.wait_for_selector("#sessions tr.current", timeout=WAIT_MS)
        assert text(page, "#sessions").count("this browser") == 1
        first_access = page.evaluate("window.supaguard.session.access_token")

        cookie = refresh_cookie(context)
        if mode == "cookie":
            assert cookie is not None
            assert cookie["httpOnly"] is True
            assert cookie["secure"] is True
            assert cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/api/v1/auth/refresh"
            assert cookie["domain"] == "localhost"
            assert page.evaluate("document.cookie") == ""
            storage = page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
            assert cookie["value"] not in storage
            assert "in an HttpOnly cookie" in text(page, "#refresh-token")
        else:
            assert cookie is None
            assert page.evaluate("sessionStorage.getItem('supaguard.refresh_token')")
        shot(page, tmp_path, f"account-{mode}")

        page.click("#refresh-now")
        page.wait_for_function(
            "document.querySelector('#refresh-count')?.textContent === '1'", timeout=WAIT_MS
        )
        assert page.evaluate("window.supaguard.session.access_token") != first_access
        if mode == "cookie":
            rotated = refresh_cookie(context)
            assert rotated["value"] != cookie["value"]
            cookie = rotated

        # A reload forgets the in-memory access token; the session comes back by refresh.
        page.reload()
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == email

        # Another device signs in; it shows up, and this page revokes it.
        other = httpx.post(
            server.url + f"{AUTH}/login",
            json={"email": email, "password": TEST_PASSWORD},
            headers={"User-Agent": "Other-Device/1.0"},
        ).json()
        page.click("#reload-data")
        page.wait_for_selector("#sessions tr:nth-child(2)", timeout=WAIT_MS)
        page.click("#sessions tr:not(.current) [data-revoke]")
        page.wait_for_function(
            "document.querySelectorAll('#sessions tr').length === 1", timeout=WAIT_MS
        )
        gone = httpx.get(
            server.url + f"{AUTH}/me", headers={"Authorization": f"Bearer {other['access_token']}"}
        )
        assert gone.json()["code"] == "session_revoked"

        access = page.evaluate("window.supaguard.session.access_token")
        if mode == "cookie":
            cookie = refresh_cookie(context)  # the reload's refresh rotated it again
        page.click("#signout")
        page.wait_for_selector("body[data-view=signin] #notice", timeout=WAIT_MS)
        assert text(page, "#notice") == "You are signed out."
        assert refresh_cookie(context) is None
        assert page.evaluate("sessionStorage.getItem('supaguard.refresh_token')") is None
        after = httpx.get(server.url + f"{AUTH}/me", headers={"Authorization": f"Bearer {access}"})
        assert after.status_code == 401
        if mode == "cookie":
            stale = httpx.post(
                server.url + f"{AUTH}/refresh",
                headers={
                    "Cookie": f"{COOKIE}={cookie['value']}",
                    "X-Session-Transport": "cookie",
                    "Origin": f"http://localhost:{page_port}",
                },
            )
            assert stale.status_code == 401
            # No response the page's scripts could read ever held a refresh token.
            assert len(bodies) >= 8
            assert not [b for b in bodies if cookie["value"] in b or '"refresh_token":' in b]
        else:
            assert any('"refresh_token":' in b for b in bodies)

        # Sign in through the form, then "sign out everywhere" ends every session.
        page.fill("#signin-email", email)
        page.fill("#signin-password", TEST_PASSWORD)
        page.click("#signin-submit")
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == email
        assert (refresh_cookie(context) is not None) is (mode == "cookie")
        elsewhere = httpx.post(
            server.url + f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
        ).json()
        page.click("#signout-global")
        page.wait_for_selector("body[data-view=signin] #notice", timeout=WAIT_MS)
        assert refresh_cookie(context) is None
        ended = httpx.get(
            server.url + f"{AUTH}/me",
            headers={"Authorization": f"Bearer {elsewhere['access_token']}"},
        )
        assert ended.status_code == 401
        page.close()


@pytest.mark.parametrize("mode", ["cookie", "bearer"])
def test_the_page_refreshes_before_the_access_token_expires(
    mode: str,
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """With the page's clock moved to a minute before expiry, its timer refreshes by
    itself, and the new token works."""
    with api(localauth, redis_url, redis_prefix, tmp_path / "app", page_port) as server:
        page = context.new_page()
        page.clock.install()
        page.goto(f"http://localhost:{page_port}/?api={api_url(server)}&mode={mode}")
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        register_and_sign_in(page, new_email(), tmp_path, "")
        session = page.evaluate("window.supaguard.session")
        refresh_at = page.evaluate("window.supaguard.refreshAt")
        assert 0 < page.evaluate("window.supaguard.expiresAt") - refresh_at <= 60_000
        page.clock.run_for(max(0, refresh_at - page.evaluate("Date.now()")) + 1_000)
        # Polled from here: the page's own timers (and Playwright's rAF polling) run on the
        # fake clock.
        deadline = time.monotonic() + WAIT_MS / 1000
        while page.evaluate("window.supaguard.refreshes") < 1:
            assert time.monotonic() < deadline, "the page never refreshed by itself"
            page.wait_for_timeout(50)
        assert text(page, "#refresh-count") == "1"
        # The page's clock is now ~59 min ahead of the server's: the next refresh is still
        # a token lifetime away (counted from arrival), not an immediate loop.
        ahead = page.evaluate("window.supaguard.refreshAt - Date.now()")
        assert ahead > 3_000_000
        fresh = page.evaluate("window.supaguard.session.access_token")
        assert fresh != session["access_token"]
        me = httpx.get(server.url + f"{AUTH}/me", headers={"Authorization": f"Bearer {fresh}"})
        assert me.status_code == 200


def test_tabs_refreshing_at_once_keep_the_cookie_session(
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """Four tabs share one refresh cookie and all refresh at the same instant: every tab
    gets a working access token and the session is not taken for stolen."""
    with api(localauth, redis_url, redis_prefix, tmp_path / "app", page_port) as server:
        first = open_app(context, page_port, server, "cookie")
        register_and_sign_in(first, new_email(), tmp_path, "")
        tabs = [first] + [open_app(context, page_port, server, "cookie") for _ in range(3)]
        outcome = """window.supaguard.refresh().then(
              (s) => ({ ok: true, token: s.access_token }), (e) => ({ ok: false, code: e.code }))"""
        for tab in tabs[1:]:
            tab.wait_for_selector("#me-email", timeout=WAIT_MS)
            tab.evaluate(
                f"""() => {{ const channel = new BroadcastChannel('go');
                     window.__result = new Promise((done) => {{
                       channel.onmessage = () => {{ channel.close(); done({outcome}); }};
                     }}); }}"""
            )
        # The first tab fires the others and refreshes itself in the same instant.
        own = first.evaluate(
            f"() => {{ new BroadcastChannel('go').postMessage('now'); return {outcome}; }}"
        )
        results = [own, *(tab.evaluate("window.__result") for tab in tabs[1:])]
        assert all(r["ok"] for r in results), results
        for tab in tabs:
            tab.click("#reload-data")
        for r in results:
            me = httpx.get(
                server.url + f"{AUTH}/me", headers={"Authorization": f"Bearer {r['token']}"}
            )
            assert me.status_code == 200, me.text
        again = first.evaluate("window.supaguard.refresh().then(() => true, (e) => e.code)")
        assert again is True
        # The session ends elsewhere: the next call in a tab says so and shows sign-in.
        ended = httpx.post(
            server.url + f"{AUTH}/logout",
            json={"scope": "global"},
            headers={"Authorization": f"Bearer {results[1]['token']}"},
        )
        assert ended.status_code == 204
        tabs[2].click("#reload-data")
        tabs[2].wait_for_selector("body[data-view=signin] #notice", timeout=WAIT_MS)
        assert "ended elsewhere" in text(tabs[2], "#notice")


FORGERY = """<!doctype html><meta charset="utf-8"><title>a page on another origin</title>
<body><h1>Win a prize!</h1>
<form id="f" method="POST" action="{target}" enctype="text/plain">
<input type="hidden" name='{{"x":"' value='"}}'></form>
<script>document.getElementById('f').submit();</script></body>"""


def test_forged_cross_site_posts_are_refused(
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """A signed-in user opens pages on other origins that POST to /refresh: a form from
    another site (127.0.0.1) and from a sibling origin of the same site (localhost on another
    port, which the SameSite cookie does reach) are both 403 csrf_rejected, a fetch with the
    transport header is stopped by CORS, and the real session is untouched."""
    with api(
        localauth,
        redis_url,
        redis_prefix,
        tmp_path / "app",
        page_port,
        session_transport="cookie",
        refresh_grace_seconds="0",
    ) as server:
        page = open_app(context, page_port, server, "cookie")
        register_and_sign_in(page, new_email(), tmp_path, "")
        before = refresh_cookie(context)["value"]
        target = f"{api_url(server)}{AUTH}/refresh"

        class Evil(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = FORGERY if self.path == "/form" else "<!doctype html><p>another site"
                body = page.format(target=target).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with serve(Evil) as evil_port:
            for host in ("127.0.0.1", "localhost"):
                evil = context.new_page()
                evil.goto(f"http://{host}:{evil_port}/")
                fetched = evil.evaluate(
                    """(url) => fetch(url, { method: 'POST', credentials: 'include',
                         headers: { 'X-Session-Transport': 'cookie' } })
                       .then((r) => 'answered ' + r.status, (e) => 'blocked: ' + e.name)""",
                    target,
                )
                assert fetched.startswith("blocked"), fetched
                evil.goto(f"http://{host}:{evil_port}/form")
                evil.wait_for_url(target, timeout=WAIT_MS)
                assert '"code":"csrf_rejected"' in evil.content(), (host, evil.content())
                if host == "localhost":
                    shot(evil, tmp_path, "csrf-refused")
                evil.close()
        assert refresh_cookie(context)["value"] == before
        # Grace 0: had a forgery rotated the token, this would be refresh_token_reused.
        result = page.evaluate("window.supaguard.refresh().then(() => 'ok', (e) => e.code)")
        assert result == "ok"
