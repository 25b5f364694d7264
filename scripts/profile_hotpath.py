"""Where an authenticated request's time goes, without the HTTP server or the load generator.

    uv run python -m scripts.profile_hotpath [--requests 20000] [--profile]

Starts a private redis-server and localauth, builds the app in this process (its lifespan
runs: JWKS, the invalidation subscription), signs a user in, then calls the ASGI app directly
for ``GET /api/v1/auth/me`` and, for scale, a bare Starlette JSON endpoint: the CPU per
request each spends above the server. ``--profile`` prints the top of a cProfile of /me.
Interleaved rounds, so machine load hits both alike; the numbers are µs of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scripts.devstack import DEMO_EMAIL, DEMO_PASSWORD, Stack, free_port, seed_demo_user
from scripts.privateredis import private_redis

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _hello(request: Request) -> JSONResponse:
    return JSONResponse({"id": "00000000-0000-0000-0000-000000000000", "email": "a@b.c"})


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/hello", _hello)])


def scope_for(
    path: str, headers: list[tuple[bytes, bytes]], app: Any, method: str = "GET"
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "app": app,
    }


async def call_many(app: ASGI, path: str, headers: list[tuple[bytes, bytes]], n: int) -> float:
    """µs per request of ``n`` sequential ASGI calls (a fresh scope each, as a server does)."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(n):
        await app(scope_for(path, headers, app), receive, send)
    elapsed = time.perf_counter() - started
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"{path}: non-200 answers {set(statuses)}")
    return elapsed / n * 1e6


async def breakdown(app: Starlette, headers: list[tuple[bytes, bytes]], n: int) -> None:
    """µs of each part of the /me path, peeled from the outside in (same scope each time)."""
    from app.authz.base import AuthContext
    from app.policy import POLICIES

    route = next(r for r in app.routes if isinstance(r, Route) and r.name == "auth:me")
    assert isinstance(route, Route)
    services = app.state.services
    parts: dict[str, Callable[[], Awaitable[Any]]] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    def scope() -> dict[str, Any]:
        s = scope_for("/api/v1/auth/me", headers, app)
        s["state"] = {}
        return s

    parts["whole app"] = lambda: app(scope(), receive, send)
    stack = app.middleware_stack
    assert stack is not None
    inner = stack
    names = []
    while hasattr(inner, "app") and not hasattr(inner, "routes"):
        names.append(type(inner).__name__)
        inner = inner.app
        label = "inside " + names[-1]
        parts[label] = (lambda a: lambda: a(scope(), receive, send))(inner)
    parts["route (policy + endpoint)"] = lambda: route.app(scope(), receive, send)
    endpoint = route.endpoint

    async def endpoint_only() -> None:
        s = scope()
        ctx = AuthContext(s, services, "127.0.0.1")
        ctx.claims = await services.verifier.verify(token_of(headers))
        s["state"]["auth"] = ctx
        await endpoint(s, receive, send)

    parts["endpoint (+ a cached verify)"] = endpoint_only
    for layer in POLICIES["auth:me"]:

        async def one(layer: Any = layer) -> None:
            s = scope()
            ctx = AuthContext(s, services, "127.0.0.1")
            ctx.token = token_of(headers)
            ctx.claims = await services.verifier.verify(ctx.token)
            await layer.check(ctx)

        parts[f"layer {type(layer).__name__} (+ a cached verify)"] = one
    parts["(building the scope: in every row)"] = _scope_only(scope)
    timings: dict[str, list[float]] = {label: [] for label in parts}
    for call in parts.values():
        for _ in range(200):
            await call()
    for _ in range(7):  # interleaved rounds; the fastest of each part is printed
        for label, call in parts.items():
            started = time.perf_counter()
            for _ in range(n // 7):
                await call()
            timings[label].append((time.perf_counter() - started) / (n // 7) * 1e6)
    print("where /me's time goes (in-process µs per call, fastest of 7 interleaved rounds):")
    for label, values in timings.items():
        print(f"  {label:45s} {min(values):6.1f} µs")


def _scope_only(build: Callable[[], dict[str, Any]]) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        build()

    return call


def token_of(headers: list[tuple[bytes, bytes]]) -> str:
    return dict(headers)[b"authorization"].decode().removeprefix("Bearer ")


async def measure(
    app: Starlette, token: str, requests: int, rounds: int, profile: bool
) -> dict[str, float]:
    bare = bare_app()
    me_headers = [(b"authorization", f"Bearer {token}".encode()), (b"user-agent", b"bench")]
    await call_many(app, "/api/v1/auth/me", me_headers, 500)  # warm caches
    await call_many(bare, "/hello", [], 500)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        theirs.append(await call_many(bare, "/hello", [], requests // rounds))
        ours.append(await call_many(app, "/api/v1/auth/me", me_headers, requests // rounds))
    result = {"me_us": statistics.median(ours), "bare_us": statistics.median(theirs)}
    await breakdown(app, me_headers, requests // rounds)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await call_many(app, "/api/v1/auth/me", me_headers, requests // 2)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
    return result


async def run(settings_env: dict[str, str], requests: int, rounds: int, profile: bool) -> None:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings.from_environ(settings_env)
    # Logging and head checks as `python -m app` configures them.
    app = create_app(settings, heads_bounded=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            body = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
            response = await c.post("/api/v1/auth/login", json=body)
            response.raise_for_status()
            token = response.json()["access_token"]
        result = await measure(app, token, requests, rounds, profile)
    me, bare = result["me_us"], result["bare_us"]
    print(f"in-process CPU per request (median of {rounds} interleaved rounds, {requests} each)")
    print(f"  bare Starlette JSON      : {bare:7.1f} µs")
    print(f"  GET /api/v1/auth/me      : {me:7.1f} µs")
    print(f"  added by the policy/app  : {me - bare:7.1f} µs")


@contextlib.contextmanager
def profiling_stack() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """A private redis-server and localauth (bcrypt cost 4) for an app built in process:
    localauth's settings, and the app's environment over them."""
    with tempfile.TemporaryDirectory(prefix="sg-prof-") as tmp, private_redis(Path(tmp)) as url:
        stack = Stack(Path(tmp))
        try:
            supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "4"})
            env = {
                **supabase,
                "REDIS_URL": url,
                "REDIS_KEY_PREFIX": "prof:",
                "LOG_LEVEL": "warning",
            }
            yield supabase, env
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with profiling_stack() as (supabase, env):
        seed_demo_user(supabase)
        tuning = {k: v for k, v in os.environ.items() if k.startswith("PROFILE_")}
        asyncio.run(run({**tuning, **env}, args.requests, args.rounds, args.profile))


if __name__ == "__main__":
    main()
