"""Measure a running service from outside: login storms, a /health/live probe, thread counts.

Everything here is HTTP against a real process plus ``/proc/PID/status``; nothing reaches
into the app. ``fault_violations`` turns the measurements into the list of broken bounds,
so the same checks pass against the app and fail against ``badapp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOGIN = "/api/v1/auth/login"
# Generous, so what we observe is the server's own answer, never our own give-up.
CLIENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Limits:
    """The knobs of the app under test, and the bounds derived from them.

    Admission runs on its defaults (no pool wait, no initial limit, no read timeout to
    tune); T, L and B are set only so the storms fit in seconds and the thread bound is
    tight."""

    deadline: float = 2.0  # T
    pool_size: int = 8  # L: the thread bound (UPSTREAM_POOL_SIZE)
    breaker_open: float = 2.0  # B
    breaker_threshold: int = 5
    # A blocked loop shows as seconds here; a loop busy answering 200 clients back to back
    # shows as tens of ms, in proportion to the host's speed (6-23 ms on one 2-core host,
    # 35-100 ms on one half as fast, where other work shared the cores). The bound guards
    # against the first with a margin over the second; the 50 ms target of the storms is
    # reported by the benchmarks, not asserted on whatever machine runs the suite.
    health_p99: float = 0.150
    thread_slack: int = 8  # the "small constant" over baseline + L

    def env(self) -> dict[str, str]:
        return {
            "UPSTREAM_POOL_SIZE": str(self.pool_size),
            "UPSTREAM_DEADLINE_SECONDS": str(self.deadline),
            "UPSTREAM_CONNECT_TIMEOUT_SECONDS": str(min(0.5, self.deadline / 2)),
            "UPSTREAM_MAX_ATTEMPTS": "3",
            "BREAKER_FAILURE_THRESHOLD": str(self.breaker_threshold),
            "BREAKER_OPEN_SECONDS": str(self.breaker_open),
            # Every virtual user comes from 127.0.0.1: per-IP limits would answer 429.
            "RATE_LIMIT_ENABLED": "false",
            # 200 concurrent logins need more than the default 64 Redis connections: the
            # asyncio pool raises "Too many connections" instead of waiting (reported).
            "REDIS_MAX_CONNECTIONS": "512",
        }

    @property
    def answer_bound(self) -> float:
        """Every login must be answered before T + 1 s."""
        return self.deadline + 1.0

    @property
    def shed_bound(self) -> float:
        """A shed is decided by prediction: about T / 2 at the onset of a hang (a queued
        call needs the silence once to start and once to run), at once afterwards. The
        second allows for the first burst of 200 clients queueing inside this (one)
        Python process."""
        return self.deadline / 2 + 1.0


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: the client got no HTTP answer (cut off, reset, our timeout)
    elapsed: float
    started: float
    code: str | None = None
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Storm:
    outcomes: list[Outcome] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_failures: int = 0
    max_threads: int = 0
    baseline_threads: int = 0

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def slowest(self) -> float:
        return max((o.elapsed for o in self.outcomes), default=0.0)

    def health_p99(self) -> float:
        return percentile(self.health, 99)

    def summary(self) -> str:
        return (
            f"logins={len(self.outcomes)} statuses={dict(self.statuses())} "
            f"codes={dict(Counter(o.code for o in self.outcomes))} "
            f"slowest={self.slowest():.3f}s health_n={len(self.health)} "
            f"health_p99={self.health_p99() * 1000:.1f}ms "
            f"health_max={max(self.health, default=0) * 1000:.1f}ms "
            f"threads baseline={self.baseline_threads} max={self.max_threads}"
        )


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return math.inf
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


async def login(client: httpx.AsyncClient, email: str, password: str) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post(LOGIN, json={"email": email, "password": password})
    except httpx.HTTPError as exc:
        return Outcome(0, time.monotonic() - started, started, error=type(exc).__name__)
    elapsed = time.monotonic() - started
    code = None
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code = response.json().get("code")
    return Outcome(
        response.status_code, elapsed, started, code, response.headers.get("retry-after")
    )


# Building an SSL context costs ~20 ms of CPU; hundreds of clients share one (unused: http).
_SSL = ssl.create_default_context()


def new_client(url: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=CLIENT_TIMEOUT,
        verify=_SSL,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


class HealthProbe:
    """Runs ``tests.regression.probe`` in a subprocess (its own CPU scheduling, no shared
    loop or GIL with the load generator) and collects the latencies it wrote."""

    def __init__(self, url: str, out: Path, every: float = 0.02) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self._out = out
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.regression.probe", host, port, str(out), str(every)],
            stdin=subprocess.PIPE,
        )

    async def ready(self) -> None:
        for _ in range(200):
            if self._out.exists() and self._out.read_text().startswith("ready"):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("the health probe did not start")

    def stop(self, storm: Storm) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=35)
        for line in self._out.read_text().splitlines()[1:]:
            if line == "fail":
                storm.health_failures += 1
            else:
                storm.health.append(float(line))


async def _sample_threads(pid: int, storm: Storm, stop: asyncio.Event) -> None:
    while not stop.is_set():
        storm.max_threads = max(storm.max_threads, threads_of(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def run_storm(
    url: str,
    pid: int,
    users: Sequence[tuple[str, str]],
    *,
    clients: int,
    duration: float,
    once: bool = False,
    give_up_after: float | None = None,
    probe_every: float = 0.02,
) -> Storm:
    """``clients`` virtual users log in back to back for ``duration`` seconds (or just once)
    while /health/live is probed and the thread count sampled."""
    storm = Storm(baseline_threads=threads_of(pid))
    stop = asyncio.Event()
    timeout = give_up_after if give_up_after is not None else CLIENT_TIMEOUT

    # One client (one connection) per virtual user: a single shared httpx pool of 200
    # connections stalls requests on the client side, which would be blamed on the server.
    clients_ = [new_client(url, 1) for _ in range(clients)]
    deadline = [0.0]  # set when the storm starts

    async def user(index: int) -> None:
        email, password = users[index % len(users)]
        async with clients_[index] as client:
            while True:
                if give_up_after is None:
                    storm.outcomes.append(await login(client, email, password))
                else:
                    # The client hangs up early: the server sees a disconnect mid-login.
                    started = time.monotonic()
                    try:
                        result = await asyncio.wait_for(login(client, email, password), timeout)
                    except TimeoutError:
                        result = Outcome(0, time.monotonic() - started, started, error="gave up")
                    storm.outcomes.append(result)
                if once or time.monotonic() >= deadline[0]:
                    return
                last = storm.outcomes[-1]
                if last.retry_after is not None:
                    # A well-behaved client honours Retry-After (capped at 1 s), as the
                    # browser SDKs do; without it 200 users spin on 2 ms answers.
                    # Jittered, so 200 users do not come back in one synchronized wave.
                    wanted = min(float(last.retry_after), 1.0) * random.uniform(0.2, 1.0)
                    pause = min(wanted, deadline[0] - time.monotonic())
                    await asyncio.sleep(max(0.0, pause))

    with tempfile.TemporaryDirectory() as tmp:
        probe = HealthProbe(url, Path(tmp) / "health.txt", probe_every)
        try:
            await probe.ready()
            sampler = asyncio.create_task(_sample_threads(pid, storm, stop))
            deadline[0] = time.monotonic() + duration
            try:
                await asyncio.gather(*(user(i) for i in range(clients)))
            finally:
                stop.set()
                await sampler
        finally:
            probe.stop(storm)
    return storm


def fault_violations(storm: Storm, limits: Limits, *, check_threads: bool = True) -> list[str]:
    """The bounds every fault scenario asserts; an empty list means all hold."""
    problems: list[str] = []
    if storm.health_p99() >= limits.health_p99:
        problems.append(
            f"/health/live p99 {storm.health_p99() * 1000:.1f} ms >= "
            f"{limits.health_p99 * 1000:.0f} ms"
        )
    if storm.health_failures:
        problems.append(f"{storm.health_failures} /health/live probes failed")
    late = [o for o in storm.outcomes if o.elapsed >= limits.answer_bound]
    if late:
        problems.append(
            f"{len(late)} logins answered after T + 1 s = {limits.answer_bound:.1f} s "
            f"(slowest {storm.slowest():.2f} s)"
        )
    wrong = Counter(o.status for o in storm.outcomes if o.status not in (503, 504))
    if wrong:
        problems.append(f"logins answered with statuses other than 503/504: {dict(wrong)}")
    cut = [o for o in storm.outcomes if o.status == 0]
    if cut:
        problems.append(f"{len(cut)} logins were cut off: {Counter(o.error for o in cut)}")
    # A shed must not wait for the deadline.
    shed_bound = limits.shed_bound
    shed_slow = [
        o
        for o in storm.outcomes
        if o.status == 503 and o.code == "upstream_busy" and o.elapsed > shed_bound
    ]
    if shed_slow:
        problems.append(f"{len(shed_slow)} 'upstream_busy' sheds took longer than {shed_bound} s")
    bound = storm.baseline_threads + limits.pool_size + limits.thread_slack
    if check_threads and storm.max_threads > bound:
        problems.append(f"thread count {storm.max_threads} > baseline + L + slack = {bound}")
    return problems


async def wait_for_first_success(
    url: str, user: tuple[str, str], *, within: float, pause: float = 0.1
) -> float:
    """Log in repeatedly until one succeeds; returns the seconds it took (bounded poll)."""
    started = time.monotonic()
    async with new_client(url, 2) as client:
        while True:
            outcome = await login(client, *user)
            if outcome.status == 200:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise AssertionError(f"no successful login within {within:.1f} s (last: {outcome})")
            await asyncio.sleep(pause)


async def success_ratio(
    url: str, users: Sequence[tuple[str, str]], *, clients: int, rounds: int = 1
) -> tuple[float, Counter[int]]:
    async with new_client(url, clients) as client:
        results: list[Outcome] = []
        for _ in range(rounds):
            results += await asyncio.gather(
                *(login(client, *users[i % len(users)]) for i in range(clients))
            )
    statuses = Counter(o.status for o in results)
    return statuses[200] / len(results), statuses
