"""The incident's load profile as an open-loop load generator: logins and /me at fixed times.

    uv run python -m scripts.incident_load [--users 1000] [--duration 60] [--period 30] [--me 3] [--bcrypt-cost 4]

Each of ``--users`` users logs in (``POST /api/v1/auth/login``) every ``--period`` seconds and
calls ``GET /api/v1/auth/me`` ``--me`` times evenly spaced between its logins, with the
access token of its latest answered login, for ``--duration`` seconds. User i starts at
i/N x period, so the logins are spread evenly over the period (no synchronised burst).

Open loop: every request's time is computed up front and the request is sent at that time
whether or not the earlier ones have answered; latency is measured from the scheduled time,
so a lagging generator counts against the service, and the generator's own lag (actual send
time - scheduled time) is reported too. A /me scheduled before its user's first login has
answered has no token: it is skipped and counted as "skipped", not as an error. The accounts
are created before the timed run (``scripts.loadtest.seed_accounts``).

Without ``--url`` the stack is started as ``scripts/loadtest.py`` starts it (``start_stack``:
Redis, localauth at ``--bcrypt-cost``, the app with rate limits and lockout off, since every
user shares 127.0.0.1). CPU distortion: when ``taskset`` exists and there are >= 2 CPUs, the
stack's processes are started under ``taskset -c 0`` (``benchkit.pinned``) and the generator
pins itself to CPU 1 (``os.sched_setaffinity``), so the two do not take each other's core
(a Redis already answering on 6379 is reused and is not pinned). The report prints the
generator's CPU seconds and lag p99 next to the app's and localauth's CPU seconds (/proc,
``benchkit.cpu_seconds``, children included): a generator near 100 % of its core or with a
lag of many ms means the run measured the generator, not the service.

Reported per endpoint: count, success rate (2xx), 401 count and rate, p50/p95/p99/max
latency, throughput. Targets (exit 1 and the missed ones printed otherwise): logins and
/me each >= 99.9 % success, 401 rate < 0.1 %, /me p99 < 50 ms.
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from scripts.benchkit import LOAD_CPU, SERVER_CPU, cpu_seconds
from scripts.devstack import Stack
from scripts.loadtest import PASSWORD, Stats, _loop_factory, percentile, seed_accounts, start_stack

LOGIN, ME = "/api/v1/auth/login", "/api/v1/auth/me"
USERS_PER_CLIENT = 50
MIN_SUCCESS, MAX_401, ME_P99_MS = 0.999, 0.001, 50.0

Event = tuple[float, int, str]  # (seconds after the start, user, "login" | "me")


def schedule(users: int, period: float, me_calls: int, duration: float) -> list[Event]:
    """Every request of the run, in time order, computed before the first is sent."""
    events: list[Event] = []
    gap = period / (me_calls + 1)
    for user in range(users):
        login = user / users * period
        while login < duration:
            events.append((login, user, "login"))
            events.extend(
                (login + j * gap, user, "me")
                for j in range(1, me_calls + 1)
                if login + j * gap < duration
            )
            login += period
    events.sort()
    return events


@dataclass
class Run:
    stats: Stats = field(default_factory=Stats)
    lags: list[float] = field(default_factory=list)
    skipped: int = 0
    elapsed: float = 0.0
    generator_cpu: float = 0.0
    # The latest answered login per user: (its scheduled time, its access token).
    tokens: dict[int, tuple[float, str]] = field(default_factory=dict)

    def count(self, endpoint: str) -> int:
        answered = sum(n for (ep, _), n in self.stats.statuses.items() if ep == endpoint)
        return answered + sum(n for (ep, _), n in self.stats.failures.items() if ep == endpoint)

    def with_status(self, endpoint: str, test: Callable[[int], bool]) -> int:
        return sum(n for (ep, s), n in self.stats.statuses.items() if ep == endpoint and test(s))


async def send(
    run: Run, client: aiohttp.ClientSession, email: str, scheduled: float, event: Event
) -> None:
    at, user, endpoint = event
    if endpoint == "me":
        latest = run.tokens.get(user)
        if latest is None:
            run.skipped += 1
            return
        method, path, body = "GET", ME, None
        headers: dict[str, str] | None = {"Authorization": f"Bearer {latest[1]}"}
    else:
        method, path, body, headers = "POST", LOGIN, {"email": email, "password": PASSWORD}, None
    run.lags.append(time.perf_counter() - scheduled)
    token = None
    try:
        async with client.request(method, path, json=body, headers=headers) as response:
            status = response.status
            if endpoint == "login" and status == 200:
                token = (await response.json()).get("access_token")
            else:
                await response.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        run.stats.failures[(endpoint, type(exc).__name__)] += 1
        return
    run.stats.latencies[endpoint].append(time.perf_counter() - scheduled)
    run.stats.statuses[(endpoint, status)] += 1
    if token and (user not in run.tokens or run.tokens[user][0] < at):
        run.tokens[user] = (at, token)


async def run_load(url: str, users: int, events: list[Event], on_start: Callable[[], None]) -> Run:
    run = Run()
    n_clients = max(1, math.ceil(users / USERS_PER_CLIENT))
    timeout = aiohttp.ClientTimeout(total=60.0, connect=10.0)
    clients = [
        aiohttp.ClientSession(
            base_url=url,
            # Room beyond one request per user: a slow answer must not hold back the next.
            connector=aiohttp.TCPConnector(limit=2 * USERS_PER_CLIENT),
            timeout=timeout,
        )
        for _ in range(n_clients)
    ]
    emails = [f"incident-{secrets.token_hex(4)}-{index}@example.com" for index in range(users)]
    try:
        await seed_accounts(clients[0], emails)
        on_start()
        cpu_before = time.process_time()
        start = time.perf_counter() + 0.2  # a little lead: the first requests are not born late
        tasks: set[asyncio.Task[None]] = set()
        for event in events:
            scheduled = start + event[0]
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = event[1]
            task = asyncio.create_task(
                send(run, clients[user % n_clients], emails[user], scheduled, event)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        run.elapsed = time.perf_counter() - start
        run.generator_cpu = time.process_time() - cpu_before
    finally:
        for client in clients:
            await client.close()
    return run


def child_pid(stack: Stack, module: str) -> int | None:
    """The pid of the stack's ``python -m module`` (taskset execs it, so the pid is the same)."""
    for proc in stack.children:
        args = proc.args
        if isinstance(args, list) and any(
            a == "-m" and b == module for a, b in itertools.pairwise(args)
        ):
            return proc.pid
    return None


def report(run: Run, cpu: dict[str, float]) -> list[str]:
    """Print the report; the targets missed."""
    missed: list[str] = []
    print(
        f"\n{'endpoint':<9}{'count':>7}{'2xx %':>9}{'401':>6}{'401 %':>8}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}"
    )
    for endpoint in ("login", "me"):
        count = run.count(endpoint)
        ok = run.with_status(endpoint, lambda s: 200 <= s < 300)
        unauthorized = run.with_status(endpoint, lambda s: s == 401)
        values = sorted(run.stats.latencies.get(endpoint, []))
        p50, p95, p99, top = (percentile(values, p) * 1000 for p in (50, 95, 99, 100))
        success = ok / count if count else 0.0
        rate401 = unauthorized / count if count else 0.0
        print(
            f"{endpoint:<9}{count:>7}{success * 100:>9.2f}{unauthorized:>6}{rate401 * 100:>8.2f}"
            f"{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}{top:>9.1f}{count / run.elapsed:>8.1f}"
        )
        if success < MIN_SUCCESS:
            missed.append(f"{endpoint} success {success * 100:.2f} % < {MIN_SUCCESS * 100} %")
        if rate401 >= MAX_401:  # no requests at all already misses the success target
            missed.append(f"{endpoint} 401 rate {rate401 * 100:.2f} % >= {MAX_401 * 100} %")
        if endpoint == "me" and not p99 < ME_P99_MS:  # nan (no answers) misses too
            missed.append(f"/me p99 {p99:.1f} ms >= {ME_P99_MS:.0f} ms")
    print(f"\n/me skipped (no answered login yet, not an error): {run.skipped}")
    other = sorted((k, n) for k, n in run.stats.statuses.items() if not 200 <= k[1] < 300)
    for (endpoint, what), n in [*other, *sorted(run.stats.failures.items())]:
        print(f"  non-2xx: {endpoint:<6} {what}  x{n}")
    lags = sorted(run.lags)
    print(
        f"\ngenerator: lag p99 {percentile(lags, 99) * 1000:.1f} ms (p50 "
        f"{percentile(lags, 50) * 1000:.1f}, max {percentile(lags, 100) * 1000:.1f}), "
        f"CPU {run.generator_cpu:.1f} s "
        f"({run.generator_cpu / run.elapsed * 100:.0f} % of one core) over {run.elapsed:.1f} s"
    )
    for name, seconds in cpu.items():
        print(f"{name}: CPU {seconds:.1f} s ({seconds / run.elapsed * 100:.0f} % of one core)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work shares these cores)")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.incident_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--period", type=float, default=30.0, help="seconds between logins")
    parser.add_argument("--me", type=int, default=3, help="/me calls between logins")
    parser.add_argument("--bcrypt-cost", type=int, default=4, help="localauth's bcrypt cost")
    parser.add_argument("--url", help="a running service; without it a local stack is started")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stack on CPU 0, generator on CPU 1 (default); --no-pin when the stack needs "
        "both cores (5,000 users: the generator then shares them, and its CPU is printed)",
    )
    args = parser.parse_args(argv)

    events = schedule(args.users, args.period, args.me, args.duration)
    pin = args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    with tempfile.TemporaryDirectory(prefix="incident-load-") as tmp:
        stack: Stack | None = None
        pids: dict[str, int | None] = {}
        if args.url:
            url = args.url.rstrip("/")
        else:
            stack, url = start_stack(
                Path(tmp), 128, 256, bcrypt_cost=args.bcrypt_cost, cpus=SERVER_CPU if pin else None
            )
            pids = {"app": child_pid(stack, "app"), "localauth": child_pid(stack, "localauth")}
            if pin:
                os.sched_setaffinity(0, {int(LOAD_CPU)})
            where = f"stack on CPU {SERVER_CPU}, generator on CPU {LOAD_CPU}" if pin else "unpinned"
            print(f"incident_load: stack up at {url} (bcrypt cost {args.bcrypt_cost}; {where})")
        print(
            f"incident_load: {args.users} users, login every {args.period:g}s, /me x{args.me} "
            f"between, {args.duration:g}s: {len(events)} requests scheduled",
            flush=True,
        )
        before: dict[str, float] = {}

        def on_start() -> None:
            before.update({n: cpu_seconds(p) for n, p in pids.items() if p is not None})

        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                run = runner.run(run_load(url, args.users, events, on_start))
            cpu = {n: cpu_seconds(p) - before[n] for n, p in pids.items() if p is not None}
        finally:
            if stack is not None:
                stack.stop()
    missed = report(run, cpu)
    for target in missed:
        print(f"target MISSED: {target}")
    targets = ">= 99.9 % 2xx, < 0.1 % 401, /me p99 < 50 ms"
    print(f"result: {'FAIL' if missed else 'OK'} (targets: {targets})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
