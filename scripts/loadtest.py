"""Load test: N concurrent virtual users run the full auth flow against the service.

    uv run python -m scripts.loadtest [--users 1000] [--duration S] [--url URL] [--register]

Each virtual user runs: login → ``/me`` ``--me`` times → refresh → ``/me`` → logout, pausing
a random think time before each request (mean ``--think``, 2 s: people click, they do not
fire requests back to back; with no pause, 1,000 users always waiting on a request measure
only queueing, latency = users / throughput). The accounts are created through the API
before the timed run, as a live system already has them; ``--register`` instead starts
each flow with a registration (a sign-up storm). With ``--duration`` every user repeats the
flow until the time is up; without it each user runs the flow once. The HTTP client is
aiohttp, whose per-request cost is a fraction of httpx's, so the load generator does not
take the CPU the service is meant to be measured on.

Without ``--url`` the script starts its own stack as subprocesses, the way ``scripts/dev``
does: Redis (the local one on 6379 if it answers, else a private redis-server), localauth
(``LOCALAUTH_BCRYPT_COST=4``, a fresh database) and the app, tuned for a load test:
``RATE_LIMIT_ENABLED=false`` and ``LOCKOUT_ENABLED=false`` (every virtual user comes from
127.0.0.1, so per-IP limits would be the only thing measured), a bigger Redis pool, and a
bulkhead wait long enough that a burst of registrations queues instead of being shed.

It reports per-endpoint count, p50/p95/p99/max latency, throughput and every non-2xx
answer by endpoint and status, and exits 1 if any unexpected error happened (anything
other than a 409 on register, which is the deliberate "user exists, log in instead").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from scripts.benchkit import pinned
from scripts.devstack import Stack, free_port, wait_http

PASSWORD = "Load-test-Pa55"
ENDPOINTS = ("register", "login", "me", "refresh", "logout")
# Statuses that are part of the flow, not failures: register 409 means "log in instead".
EXPECTED = {("register", 409)}


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    # Transport failures (timeouts, resets) by endpoint and exception name.
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    flows_done: int = 0
    flows_failed: int = 0

    def unexpected(self) -> int:
        bad = sum(
            n
            for (ep, code), n in self.statuses.items()
            if code >= 300 and (ep, code) not in EXPECTED
        )
        return bad + sum(self.failures.values())


class FlowFailed(Exception):
    pass


class VirtualUser:
    def __init__(
        self, client: aiohttp.ClientSession, email: str, stats: Stats, me_calls: int, think: float
    ) -> None:
        self.think = think
        self.client = client
        self.email = email
        self.stats = stats
        self.me_calls = me_calls
        self.registered = False

    async def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if self.think > 0:
            await asyncio.sleep(random.uniform(0, 2 * self.think))
        started = time.perf_counter()
        try:
            async with self.client.request(method, path, json=json, headers=headers) as response:
                status = response.status
                body = await response.json() if response.content_type.endswith("json") else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.failures[(endpoint, type(exc).__name__)] += 1
            raise FlowFailed(endpoint) from exc
        self.stats.latencies[endpoint].append(time.perf_counter() - started)
        self.stats.statuses[(endpoint, status)] += 1
        return status, body

    async def _session(self) -> dict[str, Any]:
        credentials = {"email": self.email, "password": PASSWORD}
        if not self.registered:
            status, body = await self._send(
                "register", "POST", "/api/v1/auth/register", json=credentials
            )
            self.registered = status in (201, 409)
            if status == 201 and body.get("session"):
                return dict(body["session"])
            if status not in (201, 409):
                raise FlowFailed("register")
        status, body = await self._send("login", "POST", "/api/v1/auth/login", json=credentials)
        if status != 200:
            raise FlowFailed("login")
        return body

    async def _me(self, access: str) -> None:
        status, _ = await self._send("me", "GET", "/api/v1/auth/me", token=access)
        if status != 200:
            raise FlowFailed("me")

    async def flow(self) -> None:
        session = await self._session()
        for _ in range(self.me_calls):
            await self._me(session["access_token"])
        status, body = await self._send(
            "refresh",
            "POST",
            "/api/v1/auth/refresh",
            json={"refresh_token": session["refresh_token"]},
        )
        if status != 200:
            raise FlowFailed("refresh")
        access = body["access_token"]
        await self._me(access)
        status, _ = await self._send("logout", "POST", "/api/v1/auth/logout", token=access)
        if status != 204:
            raise FlowFailed("logout")


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


@dataclass(frozen=True)
class LoadPlan:
    users: int
    me_calls: int = 5
    duration: float | None = None
    users_per_client: int = 50
    think: float = 2.0
    ramp: float = 10.0
    register: bool = False


async def run_load(url: str, plan: LoadPlan) -> tuple[Stats, float]:
    users, users_per_client, duration = plan.users, plan.users_per_client, plan.duration
    stats = Stats()
    run_id = secrets.token_hex(4)
    n_clients = max(1, math.ceil(users / users_per_client))

    # Generous: the service bounds its own answers (pool wait + deadline); a client-side
    # timeout here would only hide a hang the test is meant to show.
    timeout = aiohttp.ClientTimeout(total=60.0, connect=10.0)
    clients = [
        aiohttp.ClientSession(
            base_url=url,
            connector=aiohttp.TCPConnector(limit=users_per_client),
            timeout=timeout,
        )
        for _ in range(n_clients)
    ]
    emails = [f"load-{run_id}-{index}@example.com" for index in range(users)]
    if not plan.register:
        await seed_accounts(clients[0], emails)
    stop_at = None if duration is None else time.monotonic() + duration

    async def one_user(index: int) -> None:
        if plan.ramp > 0:
            await asyncio.sleep(plan.ramp * index / users)
        user = VirtualUser(
            clients[index % n_clients], emails[index], stats, plan.me_calls, plan.think
        )
        user.registered = not plan.register
        while True:
            try:
                await user.flow()
                stats.flows_done += 1
            except FlowFailed:
                stats.flows_failed += 1
            if stop_at is None or time.monotonic() >= stop_at:
                return

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for index in range(users):
                group.create_task(one_user(index))
    finally:
        for client in clients:
            await client.close()
    return stats, time.perf_counter() - started


async def seed_accounts(
    client: aiohttp.ClientSession, emails: list[str], parallel: int = 16
) -> None:
    """Create the accounts before the timed run, as a real system already has them."""
    gate = asyncio.Semaphore(parallel)

    async def one(email: str) -> None:
        async with gate:
            status = 0
            for _ in range(20):
                async with client.post(
                    "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
                ) as response:
                    status = response.status
                if status in (201, 409):
                    return
                await asyncio.sleep(0.5)  # shed by a busy stack: try again shortly
            raise RuntimeError(f"could not create {email}: {status}")

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for email in emails:
            group.create_task(one(email))
    print(
        f"loadtest: {len(emails)} accounts created in {time.monotonic() - started:.1f}s "
        "(not timed)",
        flush=True,
    )


def report(stats: Stats, elapsed: float, users: int) -> None:
    total = sum(len(v) for v in stats.latencies.values())
    print(
        f"\n{users} virtual users, {stats.flows_done} flows completed, "
        f"{stats.flows_failed} failed, in {elapsed:.1f}s"
    )
    print(f"{total} requests, {total / elapsed:.0f} req/s overall\n")
    print(
        f"{'endpoint':<10}{'count':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}"
    )
    for endpoint in ENDPOINTS:
        values = sorted(stats.latencies.get(endpoint, []))
        if not values:
            continue
        row = [percentile(values, p) * 1000 for p in (50, 95, 99, 100)]
        print(
            f"{endpoint:<10}{len(values):>8}{len(values) / elapsed:>8.0f}"
            + "".join(f"{v:>9.1f}" for v in row)
        )
    non_2xx = sorted((k, n) for k, n in stats.statuses.items() if k[1] >= 300)
    print("\nnon-2xx answers:" + ("" if non_2xx or stats.failures else " none"))
    for (endpoint, status), n in non_2xx:
        note = (
            " (expected: user exists, logged in instead)" if (endpoint, status) in EXPECTED else ""
        )
        print(f"  {endpoint:<10} {status}  x{n}{note}")
    for (endpoint, name), n in sorted(stats.failures.items()):
        print(f"  {endpoint:<10} {name}  x{n}")
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(
            f"\nmachine: {os.cpu_count()} CPUs, load average {' '.join(load)} "
            "(other work on the machine shares these cores)"
        )
    except OSError:
        pass


def start_stack(
    workdir: Path,
    pool_size: int,
    redis_connections: int,
    *,
    bcrypt_cost: int = 4,
    cpus: str | None = None,
) -> tuple[Stack, str]:
    """Redis (if started here), localauth and the app; on ``cpus`` when given (taskset)."""
    stack = Stack(workdir, prefix=pinned([], cpus))
    redis_url = stack.redis_url()
    supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": str(bcrypt_cost)})
    port = free_port()
    env = {
        **supabase,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": stack.scratch_prefix(redis_url, "loadtest"),
        "REDIS_MAX_CONNECTIONS": str(redis_connections),
        "REDIS_TIMEOUT_SECONDS": "2",
        "PORT": str(port),
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "warning",
        "LOG_JSON": "true",
        "RATE_LIMIT_ENABLED": "false",
        "LOCKOUT_ENABLED": "false",
        "UPSTREAM_POOL_SIZE": str(pool_size),
    }
    app: subprocess.Popen[bytes] = stack.spawn([sys.executable, "-m", "app"], env, quiet=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/live", app, "the app")
    return stack, url


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (as uvicorn uses it): the generator must not be the bottleneck."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000, help="concurrent virtual users")
    parser.add_argument("--url", help="a running service; without it a local stack is started")
    parser.add_argument("--duration", type=float, help="repeat the flow for S seconds")
    parser.add_argument("--me", type=int, default=5, help="/me calls per flow (default 5)")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=128,
        help="UPSTREAM_POOL_SIZE, the thread bound (default 128, the service's own; "
        "the adaptive limit below it decides how many calls run)",
    )
    parser.add_argument("--redis-connections", type=int, default=256)
    parser.add_argument(
        "--users-per-client",
        type=int,
        default=50,
        help="virtual users sharing one HTTP client session (its connection limit)",
    )
    parser.add_argument(
        "--think",
        type=float,
        default=2.0,
        help="mean pause before each request, uniform in [0, 2*THINK] (default 2 s, a busy "
        "person; 0 is back-to-back, which measures queueing: latency = users / throughput)",
    )
    parser.add_argument(
        "--ramp", type=float, default=10.0, help="start the users evenly over S seconds"
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="start each flow by registering (a sign-up storm) instead of logging in to an "
        "account created before the timed run",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        stack: Stack | None = None
        if args.url:
            url = args.url.rstrip("/")
        else:
            stack, url = start_stack(Path(tmp), args.pool_size, args.redis_connections)
            print(
                f"loadtest: stack up at {url} (localauth bcrypt cost 4, "
                f"UPSTREAM_POOL_SIZE={args.pool_size})"
            )
            print(
                "loadtest: RATE_LIMIT_ENABLED=false and LOCKOUT_ENABLED=false: every "
                "virtual user shares 127.0.0.1, so per-IP limits would refuse them"
            )
        print(
            f"loadtest: {args.users} virtual users, /me x{args.me} per flow, "
            f"think {args.think}s, ramp {args.ramp}s, duration {args.duration or 'one flow'}, "
            f"flow starts with {'register' if args.register else 'login'}",
            flush=True,
        )
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                stats, elapsed = runner.run(
                    run_load(
                        url,
                        LoadPlan(
                            users=args.users,
                            me_calls=args.me,
                            duration=args.duration,
                            users_per_client=args.users_per_client,
                            think=args.think,
                            ramp=args.ramp,
                            register=args.register,
                        ),
                    )
                )
        finally:
            if stack is not None:
                stack.stop()
    report(stats, elapsed, args.users)
    me = sorted(stats.latencies.get("me", []))
    if me:
        p99 = percentile(me, 99) * 1000
        verdict = "met" if p99 < 50 else "MISSED"
        print(f"\n/me p99 {p99:.1f} ms: target < 50 ms {verdict}")
    bad = stats.unexpected()
    print(f"result: {'FAIL' if bad else 'OK'} ({bad} unexpected errors)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
