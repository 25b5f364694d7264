"""Admission against the upstream alone: login bursts, and throughput at 200 ms a login.

    uv run python -m scripts.bench_burst [--sizes 25,50,100,200] [--rounds 3] [--seconds 10]

Two measurements, in one run, each side alternating with the other so machine noise hits
both alike:

* **bursts** (localauth at bcrypt cost 10, as GoTrue): N distinct users log in at the same
  moment, straight at localauth and through the app on its defaults, alternating, each N
  ``--rounds`` times. Reported: logins served (200) within the deadline (5 s, measured by
  the client from the burst's start), the slowest such answer, and what the app refused.
  The app must serve at least every login the upstream served in time (ratio 1.0) and add
  under 10 % to the slowest answer. The CPU seconds localauth spent on each burst are
  printed too: on a shared machine, 200 runnable bcrypt threads win a larger share of the
  cores than the few the app's limit lets run, which the CPU figure separates from
  admission's own decisions.
* **latency** (localauth at cost 4 behind ``tests.support.faultproxy`` in latency mode,
  200 ms per request): 100 closed-loop clients for ``--seconds`` each side, the upstream
  alone (through the same proxy) and through the app. Reported: logins/s and 503s. The
  app gets a core of its own and localauth, the proxy and the load generator share the
  other (as in a deployment, where the app runs on its own instance): on two shared cores
  the three others already use both cores at the upstream's rate, so the app's own CPU
  would be what the ratio measured, not what admission lets through. ``--shared-cores``
  measures that too, and the CPU per login of every part is printed either way.

Every client has its own connection, opened (and used once) before the clock starts, so
connecting costs neither side. The load generator is one asyncio process (the fault proxy
runs in it); it does the same work for both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scripts.devstack import Stack, free_port, seed_users, wait_http
from tests.support.faultproxy import FaultProxy, Mode

PASSWORD = "Bench-password-1"
# Printed as the last line (JSON) for scripts/bench_report's plot: app served / upstream
# served per burst size, over its rounds, and the latency mode's throughput ratio.
SUMMARY: dict[str, float] = {}
TRACE = False  # --trace
DEADLINE = 5.0


@dataclass
class Side:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Burst:
    served: int
    slowest: float
    statuses: Counter[int]
    upstream_cpu: float = 0.0  # CPU seconds localauth spent on the burst
    app_cpu: float = 0.0  # CPU seconds the app spent on it
    wall: float = 0.0  # seconds from the gate to the last answer
    machine: float = 0.0  # CPU seconds the whole machine was busy meanwhile
    admission: str = ""  # the app's limit, slots in use and queue over the burst
    trace: str = ""  # with --trace: when each answer came, and why each refusal was made


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds every core of the machine spent busy so far (all processes, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Bind every thread of a process to ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def own_core(alone: int, shared: int, *, first: bool) -> str:
    """Give process ``alone`` a core of its own (the first or the last one), and process
    ``shared`` and this one (the load generator, and the fault proxy's thread) the others.
    On a shared machine the processes' CPU would otherwise come out of each other's, which
    no deployment pays, and the comparison would measure co-location instead:
    * bursts: localauth alone, as a real deployment's upstream (Supabase Auth runs
      elsewhere), the app with the generator;
    * latency: the app alone, as on its own instance; localauth, the proxy and the
      generator do the same work for both sides.
    Returns how the cores were split."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return f"cores: {len(cpus)}, shared by everything"
    own = cpus[0] if first else cpus[-1]
    rest = set(cpus) - {own}
    pin(alone, {own})
    pin(shared, rest)
    pin(os.getpid(), rest)
    return f"cores: CPU {own} for one process, CPU {','.join(map(str, sorted(rest)))} for the rest"


def child_pid(stack: Stack, module: str) -> int:
    for process in stack.children:
        if isinstance(process.args, list) and module in process.args:
            return process.pid
    raise RuntimeError(f"no {module} process")


class Sampler:
    """Polls the app's admission gauges (limit, slots in use, queue) every ``period``
    seconds while a measurement runs: how fast the limit moves, and what is in flight."""

    # Twice a second: a scrape costs the app about 4 ms of CPU, so polling faster would
    # measure the poller (Prometheus scrapes every 15 s or so).
    def __init__(self, base: str, period: float = 0.5) -> None:
        self._base = base
        self._period = period
        self.samples: list[tuple[float, float, float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                text = (await client.get(self._base + "/metrics")).text
                values: dict[str, float] = {}
                for line in text.splitlines():
                    for name in ("limit", "in_use", "waiting"):
                        metric = (
                            "sg_upstream_admission_limit"
                            if name == "limit"
                            else (f"sg_upstream_pool_{name}")
                        )
                        if line.startswith(metric + " "):
                            values[name] = float(line.split()[1])
                self.samples.append(
                    (
                        time.monotonic() - started,
                        values.get("limit", 0.0),
                        values.get("in_use", 0.0),
                        values.get("waiting", 0.0),
                    )
                )
                await asyncio.sleep(self._period)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> str:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        busy = [s for s in self.samples if s[2] or s[3]] or self.samples
        if not busy:
            return ""
        limits = [s[1] for s in busy]
        in_use = [s[2] for s in busy]
        peak = max(limits)
        reached = next(s[0] for s in busy if s[1] == peak)
        return (
            f"limit {limits[0]:.0f}->{peak:.0f} (at {reached:.1f}s) end {limits[-1]:.0f}, "
            f"in use mean {statistics.mean(in_use):.0f} max {max(in_use):.0f}, "
            f"queue mean {statistics.mean(s[3] for s in busy):.1f} max "
            f"{max(s[3] for s in busy):.0f}, at the limit in "
            f"{sum(1 for s in busy if s[2] >= s[1]) / len(busy):.0%} of samples"
        )


def start_app(stack: Stack, supabase: Mapping[str, str], redis_url: str, auth_url: str) -> str:
    port = free_port()
    app = stack.spawn(
        [sys.executable, "-m", "app"],
        env={
            **supabase,
            "SUPABASE_URL": auth_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": stack.scratch_prefix(redis_url, f"bench{port}"),
            "REDIS_MAX_CONNECTIONS": "512",
            "PORT": str(port),
            "LOG_LEVEL": "warning",
            # One machine plays every user: per-IP limits would answer 429.
            "RATE_LIMIT_ENABLED": "false",
            "LOCKOUT_ENABLED": "false",
        },
        quiet=True,
    )
    wait_http(f"http://127.0.0.1:{port}/health/live", app, "the app")
    return f"http://127.0.0.1:{port}"


def sides(supabase: Mapping[str, str], upstream: str, app: str) -> tuple[Side, Side]:
    direct = Side(
        "upstream",
        upstream + "/auth/v1/token?grant_type=password",
        {"apikey": supabase["SUPABASE_PUBLISHABLE_KEY"]},
    )
    return direct, Side("app", app + "/api/v1/auth/login")


async def clients(count: int, side: Side) -> list[httpx.AsyncClient]:
    made = [
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) for _ in range(count)
    ]
    # Open each connection before the clock starts (a cheap request on the same host).
    base = side.url.split("/auth/v1")[0].split("/api/v1")[0]
    probe = "/health" if side.name == "upstream" else "/health/live"
    await asyncio.gather(*(c.get(base + probe) for c in made))
    return made


async def burst(side: Side, emails: list[str], upstream_pid: int, app_pid: int) -> Burst:
    pool = await clients(len(emails), side)
    gate = asyncio.Event()
    results: list[tuple[int, float]] = []
    why: list[tuple[float, int, str]] = []

    async def one(client: httpx.AsyncClient, email: str) -> None:
        await gate.wait()
        started = time.monotonic()
        try:
            response = await client.post(
                side.url, json={"email": email, "password": PASSWORD}, headers=side.headers
            )
            status = response.status_code
        except httpx.HTTPError:
            status, response = 0, None
        elapsed = time.monotonic() - started
        results.append((status, elapsed))
        if TRACE and response is not None and status != 200:
            why.append((elapsed, status, refusal(response)))

    tasks = [asyncio.create_task(one(c, e)) for c, e in zip(pool, emails, strict=True)]
    await asyncio.sleep(0.05)
    sampler = Sampler(side.url.split("/api/v1")[0]) if side.name == "app" else None
    if sampler is not None:
        sampler.start()
    cpu, app_cpu = cpu_seconds(upstream_pid), cpu_seconds(app_pid)
    machine = machine_busy()
    started = time.monotonic()
    gate.set()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - started
    machine = machine_busy() - machine
    cpu, app_cpu = cpu_seconds(upstream_pid) - cpu, cpu_seconds(app_pid) - app_cpu
    admission = await sampler.stop() if sampler is not None else ""
    for client in pool:
        await client.aclose()
    in_time = [elapsed for status, elapsed in results if status == 200 and elapsed <= DEADLINE]
    statuses = Counter(s for s, _ in results)
    trace = timeline(results, why) if TRACE else ""
    return Burst(
        len(in_time),
        max(in_time, default=0.0),
        statuses,
        cpu,
        app_cpu,
        wall,
        machine,
        admission,
        trace,
    )


def refusal(response: httpx.Response) -> str:
    """Why an answer was not a 200: its `debug` field (outside production), or its code."""
    try:
        body = response.json()
    except ValueError:
        return "(not JSON)"
    text = str(body.get("debug") or body.get("code") or "")
    return text[:300]


def timeline(results: list[tuple[int, float]], why: list[tuple[float, int, str]]) -> str:
    """Answers served and refused per half second of the burst, and each refusal's reason."""
    lines = []
    buckets: dict[int, Counter[int]] = {}
    for status, elapsed in results:
        buckets.setdefault(int(elapsed * 2), Counter())[status] += 1
    for bucket in sorted(buckets):
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(buckets[bucket].items()))
        lines.append(f"             {bucket / 2:4.1f}s  {counts}")
    # Grouped by the reason's words (its numbers differ every time): how many, when, and
    # the first and last of them in full.
    reasons: dict[str, list[tuple[float, str]]] = {}
    for elapsed, status, reason in sorted(why):
        key = f"{status} {re.sub(r'[0-9.]+', '#', reason)[:60]}"
        reasons.setdefault(key, []).append((elapsed, reason))
    for key, seen in sorted(reasons.items(), key=lambda item: item[1][0][0]):
        (first, text), (last, final) = seen[0], seen[-1]
        lines.append(f"             {len(seen):3d} x {key[:3]} ({first:.2f}-{last:.2f}s)")
        lines.append(f"                   first: {text}")
        if len(seen) > 1:
            lines.append(f"                   last:  {final}")
    return "\n".join(lines)


async def closed_loop(side: Side, emails: list[str], seconds: float) -> tuple[float, Counter[int]]:
    pool = await clients(len(emails), side)
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def user(client: httpx.AsyncClient, email: str) -> None:
        while time.monotonic() < stop:
            try:
                response = await client.post(
                    side.url, json={"email": email, "password": PASSWORD}, headers=side.headers
                )
                statuses[response.status_code] += 1
                if TRACE and response.status_code != 200:
                    took = time.monotonic() - started
                    print(f"           {took:5.2f}s {response.status_code} {refusal(response)}")
            except httpx.HTTPError:
                statuses[0] += 1

    started = time.monotonic()
    await asyncio.gather(*(user(c, e) for c, e in zip(pool, emails, strict=True)))
    elapsed = time.monotonic() - started
    for client in pool:
        await client.aclose()
    return statuses[200] / elapsed, statuses


async def admission_metrics(side: Side) -> str:
    """The app's admission state, from its /metrics."""
    base = side.url.split("/api/v1")[0]
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(base + "/metrics")).text
    wanted = ("sg_upstream_admission_limit", "sg_upstream_admission_shed_total")
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return " ".join(line.replace("sg_upstream_admission_", "") for line in lines)


async def run_bursts(
    direct: Side,
    app: Side,
    emails: list[str],
    sizes: list[int],
    rounds: int,
    pids: tuple[int, int],
) -> bool:
    ok = True
    print(f"bursts: deadline {DEADLINE:.0f} s, localauth bcrypt cost 10, app on its defaults")
    print(
        "  N  round  upstream served/slowest (localauth CPU s)   app served/slowest (CPU s)"
        "   app statuses   ratio  slowest+"
    )
    for size in sizes:
        totals = [0, 0]
        for round_ in range(1, rounds + 1):
            # Both sides get the same users; login order alternates per round.
            first, second = (direct, app) if round_ % 2 else (app, direct)
            measured = {}
            for side in (first, second):
                measured[side.name] = await burst(side, emails[:size], *pids)
                await asyncio.sleep(2.0)  # let both processes settle between bursts
            up, ours = measured["upstream"], measured["app"]
            totals[0] += up.served
            totals[1] += ours.served
            ratio = ours.served / up.served if up.served else float("inf")
            extra = (ours.slowest / up.slowest - 1) * 100 if up.slowest else 0.0
            ok &= ratio >= 1.0
            print(
                f"{size:4d}  {round_:5d}  {up.served:8d} / {up.slowest:5.2f}s "
                f"({up.upstream_cpu:5.2f})"
                f"        {ours.served:6d} / {ours.slowest:5.2f}s ({ours.upstream_cpu:5.2f}"
                f" + app {ours.app_cpu:4.2f})"
                f"   {dict(ours.statuses)!s:14}  {ratio:5.2f}  {extra:+6.1f}%"
            )
            print(
                f"           localauth cores: alone {up.upstream_cpu / up.wall:.2f} over "
                f"{up.wall:.2f}s, via app {ours.upstream_cpu / ours.wall:.2f} over "
                f"{ours.wall:.2f}s (app {ours.app_cpu / ours.wall:.2f}); machine busy "
                f"{up.machine / up.wall:.2f} / {ours.machine / ours.wall:.2f} cores; "
                f"CPU ms/login served: localauth {1000 * up.upstream_cpu / max(1, up.served):.0f}"
                f" / {1000 * ours.upstream_cpu / max(1, ours.served):.0f}, app "
                f"{1000 * ours.app_cpu / max(1, ours.served):.1f}; {ours.admission}"
            )
            if TRACE:
                print(f"           upstream alone:\n{up.trace}\n           via app:\n{ours.trace}")
        SUMMARY[f"N={size}"] = round(totals[1] / max(1, totals[0]), 3)
    return ok


async def run_latency(
    direct: Side,
    app: Side,
    emails: list[str],
    seconds: float,
    pids: tuple[int, int],
    proxy: FaultProxy,
) -> None:
    print(
        "\nlatency: 200 ms a request (fault proxy), bcrypt cost 4, "
        f"{len(emails)} closed-loop clients"
    )
    rates: dict[str, list[float]] = {"upstream": [], "app": []}
    for round_ in range(2):
        for side in (direct, app) if round_ == 0 else (app, direct):
            sampler = Sampler(side.url.split("/api/v1")[0]) if side.name == "app" else None
            if sampler is not None:
                sampler.start()
            chunks = proxy.stats.forwarded_chunks
            before = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
            rate, statuses = await closed_loop(side, emails, seconds)
            after = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
            chunks = proxy.stats.forwarded_chunks - chunks
            admission = await sampler.stop() if sampler is not None else ""
            rates[side.name].append(rate)
            calls = max(1, sum(statuses.values()))
            localauth, ours, generator = (
                1000 * (b - a) / calls for a, b in zip(before, after, strict=True)
            )
            extra = await admission_metrics(side) if side.name == "app" else ""
            print(f"  {side.name:8} {rate:7.1f} logins/s  statuses {dict(statuses)} {extra}")
            print(
                f"           CPU ms/login: localauth {localauth:.2f}, app {ours:.2f}, "
                f"generator + proxy {generator:.2f}; proxy chunks/login {chunks / calls:.2f}"
                f"{'; ' + admission if admission else ''}"
            )
            await asyncio.sleep(1.0)
    up, ours = statistics.mean(rates["upstream"]), statistics.mean(rates["app"])
    print(f"  mean: upstream {up:.1f}/s, app {ours:.1f}/s, ratio {ours / up:.2f}")
    SUMMARY["latency"] = round(ours / up, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--skip", choices=("bursts", "latency"))
    parser.add_argument(
        "--shared-cores",
        action="store_true",
        help="let every process share every core (bursts: localauth gets one of its own; "
        "latency: the app does)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print when answers came (bursts) and why each refusal was made",
    )
    args = parser.parse_args()
    global TRACE
    TRACE = args.trace
    sizes = [int(s) for s in args.sizes.split(",")]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} before the run (shared)")
    ok = True
    every_core = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "bursts":
            stack = Stack(Path(tmp) / "bursts")
            stack.workdir.mkdir()
            try:
                redis_url = stack.redis_url()
                supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "10"})
                emails = seed_users(supabase, max(sizes), "burst", PASSWORD)
                upstream = supabase["SUPABASE_URL"]
                app = start_app(stack, supabase, redis_url, upstream)
                direct, through = sides(supabase, upstream, app)
                pids = (child_pid(stack, "localauth"), child_pid(stack, "app"))
                if not args.shared_cores:
                    print(own_core(*pids, first=True), "(localauth alone; Redis unpinned)")
                ok = asyncio.run(run_bursts(direct, through, emails, sizes, args.rounds, pids))
            finally:
                stack.stop()
                os.sched_setaffinity(0, every_core)
        if args.skip != "latency":
            stack = Stack(Path(tmp) / "latency")
            stack.workdir.mkdir()
            try:
                redis_url = stack.redis_url()
                supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "4"})
                emails = seed_users(supabase, args.clients, "latency", PASSWORD)
                port = int(supabase["SUPABASE_URL"].rsplit(":", 1)[1])
                with FaultProxy("127.0.0.1", port) as proxy:
                    proxy.set_mode(Mode.LATENCY, latency=0.2)
                    app = start_app(stack, supabase, redis_url, proxy.url)
                    direct, through = sides(supabase, proxy.url, app)
                    pids = (child_pid(stack, "localauth"), child_pid(stack, "app"))
                    if not args.shared_cores:
                        upstream_pid, app_pid = pids
                        print(own_core(app_pid, upstream_pid, first=False), "(the app alone)")
                    asyncio.run(run_latency(direct, through, emails, args.seconds, pids, proxy))
            finally:
                stack.stop()
                os.sched_setaffinity(0, every_core)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} after the run")
    print(json.dumps({"served_ratio": SUMMARY}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
