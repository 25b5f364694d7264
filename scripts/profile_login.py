"""Where a login's time goes inside the app, span by span, without the HTTP server.

    uv run python -m scripts.profile_login [--requests 400] [--users 50]

Starts a private redis-server and localauth (bcrypt cost 4), builds the app in this process
(its lifespan runs), and calls the ASGI app directly for ``POST /api/v1/auth/login``,
interleaved with the same login sent straight to localauth. Each span is timed by wrapping
the method that is its boundary (the wrapping is this script's; the app is unchanged), and
the p50 of each is printed: the rate limit and lockout check (one round trip), the
gateway's call (thread hop, admission and breaker around the SDK), the SDK's sign-in inside
the thread, its HTTP exchange, and the session writes. ``scripts.bench_login`` measures
the same over real HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from scripts.bench_login import PASSWORD
from scripts.devstack import public_key, seed_users
from scripts.profile_hotpath import profiling_stack, scope_for

Spans = collections.defaultdict[str, list[float]]


def timed_async(spans: Spans, owner: Any, name: str, label: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            spans[label].append((time.perf_counter() - started) * 1e6)

    setattr(owner, name, wrapper)


def timed_sync(spans: Spans, owner: Any, name: str, label: str, *, workers_only: bool) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if workers_only and threading.current_thread() is threading.main_thread():
            return original(*args, **kwargs)
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans[label].append((time.perf_counter() - started) * 1e6)

    setattr(owner, name, wrapper)


def timed_thread_hop(spans: Spans) -> None:
    """The two crossings of a ``to_thread`` call: from the await to the thread's first
    line, and from its last line back to the awaiting task."""
    import anyio.to_thread

    original = anyio.to_thread.run_sync

    async def run_sync(fn: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
        marks: list[float] = []

        def work() -> Any:
            marks.append(time.perf_counter())
            try:
                return fn()
            finally:
                marks.append(time.perf_counter())

        submitted = time.perf_counter()
        result = await original(work, *args, **kwargs)
        if len(marks) == 2:
            spans["to the thread (wake-up)"].append((marks[0] - submitted) * 1e6)
            spans["back to the loop (wake-up)"].append((time.perf_counter() - marks[1]) * 1e6)
        return result

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


def instrument(spans: Spans) -> None:
    from supabase_auth import SyncGoTrueClient

    from services.admission import AdmissionController
    from services.auth import AuthService
    from services.gateway import SupabaseGateway
    from services.lockout import LoginLockout
    from services.ratelimit import RateLimiter
    from services.sessions import SessionStore

    # A login sends its rate limit with the lockout check (one round trip); a limiter hit
    # on its own would be another route's.
    timed_async(spans, RateLimiter, "hit", "rate limit alone (one Redis script)")
    timed_async(spans, LoginLockout, "before_attempt", "rate limit + lockout (one round trip)")
    timed_async(spans, SupabaseGateway, "sign_in", "gateway sign_in (await side)")
    timed_sync(spans, SyncGoTrueClient, "sign_in_with_password", "SDK sign_in", workers_only=True)
    timed_sync(spans, httpx.Client, "send", "SDK's HTTP exchange", workers_only=True)
    timed_async(spans, AdmissionController, "acquire", "admission")
    timed_thread_hop(spans)
    timed_async(spans, SessionStore, "create", "session writes (one pipeline)")
    timed_async(spans, AuthService, "login", "AuthService.login")


def login_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"user-agent", b"profile-login"),
    ]


async def run(env: Mapping[str, str], emails: Sequence[str], count: int) -> None:
    from app.main import create_app
    from app.settings import Settings

    spans: Spans = collections.defaultdict(list)
    instrument(spans)
    app = create_app(Settings.from_environ(dict(env)), heads_bounded=True)
    direct_url = env["SUPABASE_URL"] + "/auth/v1/token?grant_type=password"
    headers = {"apikey": public_key(env), "content-type": "application/json"}
    statuses: list[int] = []
    async with app.router.lifespan_context(app):
        with httpx.Client() as direct:

            async def login(email: str) -> tuple[float, float]:
                body = json.dumps({"email": email, "password": PASSWORD}).encode()

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(message: Mapping[str, Any]) -> None:
                    if message["type"] == "http.response.start":
                        statuses.append(message["status"])

                started = time.perf_counter()
                scope = scope_for("/api/v1/auth/login", login_headers(body), app, "POST")
                await app(scope, receive, send)
                through = time.perf_counter() - started
                started = time.perf_counter()
                # Blocking on purpose: nothing else runs on this loop meanwhile, and the SDK's
                # own exchange is this same sync httpx call.
                response = direct.post(direct_url, content=body, headers=headers)  # noqa: ASYNC212
                response.raise_for_status()
                return through * 1e6, (time.perf_counter() - started) * 1e6

            for email in emails[:20]:  # warm: connections, JWKS, code paths
                await login(email)
            spans.clear()
            whole: list[float] = []
            alone: list[float] = []
            for index in range(count):
                through, straight = await login(emails[index % len(emails)])
                whole.append(through)
                alone.append(straight)
    if set(statuses) != {200}:
        raise RuntimeError(f"logins answered {sorted(set(statuses))}")
    report(whole, alone, spans, count, len(emails))


def report(whole: list[float], alone: list[float], spans: Spans, count: int, accounts: int) -> None:
    p50 = {label: statistics.median(values) for label, values in spans.items()}
    app, direct = statistics.median(whole), statistics.median(alone)
    print(f"{count} logins over {accounts} accounts, in process (no HTTP server); p50 µs")
    print(f"  {'login through the ASGI app':40s} {app:7.0f}")
    print(f"  {'the same login straight to localauth':40s} {direct:7.0f}")
    print(f"  {'added by the app':40s} {app - direct:7.0f}")
    for label, value in p50.items():
        print(f"    {label:38s} {value:7.0f}")
    gateway, sdk = p50["gateway sign_in (await side)"], p50["SDK sign_in"]
    exchange = p50["SDK's HTTP exchange"]
    print(f"    {'= thread hop, admission, breaker':38s} {gateway - sdk:7.0f}")
    print(f"    {'= the SDK around its HTTP exchange':38s} {sdk - exchange:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with profiling_stack() as (supabase, env):
        emails = seed_users(supabase, args.users, "profile-login", PASSWORD)
        limits = {"RATE_LIMITS": "login=1000000/60"}
        asyncio.run(run({**env, **limits}, emails, args.requests))


if __name__ == "__main__":
    main()
