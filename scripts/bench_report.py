"""The benchmark report: ``scripts/bench_report`` writes docs/benchmarks.md and its plots.

    scripts/bench_report [--quick] [--out docs/benchmarks.md]

One run, about 5-8 minutes on two cores: the hot path against bare Starlette and
fastapi-users at several connection counts, 1 vs 2 workers, login overhead over the
upstream alone, memory with 100k distinct tokens, Redis commands per operation, and (when
``scripts/bench_burst.py`` exists) its burst results. Every comparison is interleaved in
this one run. Needs wrk and redis-server; the Redis used is a private one started here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis

from scripts import benchkit
from scripts.bench_hotpath import EMAIL, PASSWORD
from scripts.benchkit import Bench, Series, Target, interleave, machine, ratio, rss_mib
from scripts.privateredis import command_counts, private_redis

ROOT = benchkit.ROOT
IMG = "img/bench"
LOGIN_RULES = "login=1000000/60,refresh=1000000/60"  # one client, hundreds of logins
IGNORED_COMMANDS = {"ping", "info", "config|resetstat", "client|setinfo", "hello", "select"}


class Report:
    def __init__(self, out: Path, quick: bool) -> None:
        self.out = out
        self.quick = quick
        self.parts: list[str] = []
        self.data: dict[str, Any] = {}
        (out.parent / IMG).mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def plot(self, name: str, draw: Callable[[Any], None]) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=80)
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out.parent / IMG / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        return f"![{name}]({IMG}/{name}.png)"


def load_note() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- 1. the hot path -----------------------------------------------------------------------


def hot_path(report: Report, bench: Bench, supabase: dict[str, str], redis_url: str) -> None:
    conns = [16, 64] if report.quick else [16, 64, 128]
    rounds, seconds = (2, 2) if report.quick else (3, 3)
    bare = bench.bare()
    ours = bench.ours("hot", supabase, redis_url)
    ours.url += "/api/v1/auth/me"
    ours.headers = benchkit.sign_in(ours.url.removesuffix("/api/v1/auth/me"))
    fu = bench.fastapi_users(redis_url)
    targets = [bare, ours, fu]
    rss_start = {t.name: rss_mib(t.pid) for t in targets}
    started = load_note()
    results: dict[int, list[Series]] = {}
    for c in conns:
        results[c] = interleave(targets, connections=c, seconds=seconds, rounds=rounds)
    ended = load_note()
    rows = []
    for c, series in results.items():
        for target, each in zip(targets, series, strict=True):
            rows.append(
                f"| {c} | {target.name} | {each.median('rps'):,.0f} | {each.median('p50_ms'):.2f}"
                f" | {each.median('p99_ms'):.2f} | {each.median('cpu_us_per_request'):.0f}"
                f" | {each.errors} |"
            )
    at64 = results[64]
    b_over_a, b_over_c = ratio(at64[1], at64[0]), ratio(at64[1], at64[2])
    cpu_ratio = at64[0].median("cpu_us_per_request") / at64[1].median("cpu_us_per_request")
    report.data["hot"] = {
        "ratio_bare": b_over_a,
        "ratio_fu": b_over_c,
        "cpu_ratio": cpu_ratio,
        "p99_ms": at64[1].median("p99_ms"),
        "cpu_us": {
            t.name: s.median("cpu_us_per_request") for t, s in zip(targets, at64, strict=True)
        },
        "rss_start": rss_start,
    }

    def draw_rps(ax: Any) -> None:
        for i, target in enumerate(targets):
            ax.plot(conns, [results[c][i].median("rps") for c in conns], "o-", label=target.name)
        ax.set_xlabel("connections")
        ax.set_ylabel("req/s (median of rounds)")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)

    def draw_latency(ax: Any) -> None:
        for i, target in enumerate(targets):
            p99 = [results[c][i].median("p99_ms") for c in conns]
            p50 = [results[c][i].median("p50_ms") for c in conns]
            (line,) = ax.plot(conns, p99, "o-", label=f"{target.name} p99")
            ax.plot(conns, p50, "x--", color=line.get_color(), label="p50")
        ax.set_xlabel("connections")
        ax.set_ylabel("latency ms")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)

    report.add(f"""## 1. The authenticated hot path

Reproduce: `scripts/bench_report --only hot_path` (machine: see the top of this page).

`GET /api/v1/auth/me` with a valid token (every policy layer: bearer, signature and claims,
account status, session alive, not-before), a bare Starlette JSON endpoint on plain uvicorn,
and fastapi-users' protected route (RedisStrategy, in-memory user DB, its best case): three
servers up side by side, one uvicorn worker each pinned to CPU {benchkit.SERVER_CPU}, wrk
(1 thread) pinned to CPU {benchkit.LOAD_CPU}, {rounds} interleaved rounds of {seconds} s per
target and connection count; medians over rounds. CPU µs/request is the server process's
user+system time over the requests it served (from /proc).

**At 64 connections: /me = {b_over_a:.2f} × bare Starlette, {b_over_c:.1f} × fastapi-users,
p99 {at64[1].median("p99_ms"):.2f} ms** (ratios: median of the per-round ratios). By CPU per
request, which moves less with the machine's load: bare Starlette's cost over ours =
{cpu_ratio:.2f}.
Machine: {started} at the start, {ended} at the end.

| connections | target | req/s | p50 ms | p99 ms | CPU µs/req | errors |
|---:|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

{report.plot("throughput", draw_rps)}

{report.plot("latency", draw_latency)}
""")


# -- 2. workers ------------------------------------------------------------------------------


def workers(report: Report, bench: Bench, supabase: dict[str, str], redis_url: str) -> None:
    rounds, seconds = (2, 2) if report.quick else (3, 4)
    one = bench.ours("w1", supabase, redis_url, workers=1, cpus=None)
    two = bench.ours("w2", supabase, redis_url, workers=2, cpus=None)
    targets: list[Target] = []
    for target in (one, two):
        headers = benchkit.sign_in(target.url)
        targets.append(Target(target.name, target.url + "/api/v1/auth/me", target.pid, headers))
    started = load_note()
    series = [Series(), Series()]
    for _ in range(rounds):
        for target, each in zip(targets, series, strict=True):
            each.runs.append(
                benchkit.wrk(
                    target.url,
                    connections=64,
                    seconds=seconds,
                    headers=target.headers,
                    server_pid=target.pid,
                    threads=2,
                    cpus=None,
                )
            )
    tree = benchkit.process_tree(two.pid)
    worker_rss = [rss_mib(pid) for pid in tree[1:]]
    worker_pss = [benchkit.pss_mib(pid) for pid in tree[1:]]
    supervisor_rss, supervisor_pss = rss_mib(tree[0]), benchkit.pss_mib(tree[0])
    single_rss = rss_mib(one.pid)
    gain = ratio(series[1], series[0])
    report.data["workers"] = {"gain": gain}

    def draw(ax: Any) -> None:
        names = ["1 worker", "2 workers"]
        ax.bar(names, [s.median("rps") for s in series], color=["#4c72b0", "#55a868"])
        ax.set_ylabel("req/s, /me at c64 (median)")

    rows = "\n".join(
        f"| {t.name} | {s.median('rps'):,.0f} | {s.median('p50_ms'):.2f} | "
        f"{s.median('p99_ms'):.2f} | {s.errors} |"
        for t, s in zip(targets, series, strict=True)
    )
    report.add(f"""## 2. One worker or two (`python -m app --workers 2`)

Reproduce: `scripts/bench_report --only workers` (machine: see the top of this page).

Both unpinned on all {os.cpu_count()} cores, sharing them with wrk (2 threads), so two
workers cannot reach 2×: the load generator takes part of the second core. {rounds}
interleaved rounds of {seconds} s at 64 connections; {started}.

**2 workers = {gain:.2f} × 1 worker** (median of per-round ratios). Memory after the run:
the single-worker process {single_rss:.0f} MiB RSS; with 2 workers each worker
{", ".join(f"{r:.0f}" for r in worker_rss)} MiB RSS ({", ".join(f"{p:.0f}" for p in worker_pss)}
MiB PSS: pages shared with the supervisor after the fork count once) and the supervisor
{supervisor_rss:.0f} MiB RSS / {supervisor_pss:.0f} MiB PSS (it imported the app before forking).

| target | req/s | p50 ms | p99 ms | errors |
|---|---:|---:|---:|---:|
{rows}

{report.plot("workers", draw)}
""")


# -- 3. login overhead -----------------------------------------------------------------------


def login_overhead(report: Report, bench: Bench, supabase: dict[str, str], redis_url: str) -> None:
    from scripts.bench_login import measure
    from scripts.devstack import seed_demo_user

    count = 100 if report.quick else 300
    # Lockout and rate limiting on, as in production; the limits are raised because one
    # client signs in hundreds of times a minute.
    seed_demo_user(supabase)
    app = bench.ours("login", supabase, redis_url, env={"RATE_LIMITS": LOGIN_RULES}, cpus=None)
    # The same app without the limiter and the lockout guard: what those Redis calls cost.
    off = {"RATE_LIMIT_ENABLED": "false", "LOCKOUT_ENABLED": "false"}
    bare_login = bench.ours("login-noguard", supabase, redis_url, env=off, cpus=None)
    started = load_note()
    login = "/api/v1/auth/login"
    result = measure(app.url + login, supabase, count, {"unguarded": bare_login.url + login})
    report.data["login"] = {
        name: {"p50_ms": statistics.median(v), "p99_ms": benchkit_p(v, 0.99)}
        for name, v in result.items()
    }
    direct, through, unguarded = result["direct"], result["app"], result["unguarded"]
    added = statistics.median(through) - statistics.median(direct)
    guards = statistics.median(through) - statistics.median(unguarded)

    def draw(ax: Any) -> None:
        ax.boxplot([direct, unguarded, through], showfliers=False)
        ax.set_xticks([1, 2, 3], ["localauth direct", "app, no limiter/lockout", "app"])
        ax.set_ylabel("login latency ms")

    report.add(f"""## 3. Login: what the service adds over the upstream

Reproduce: `scripts/bench_report --only login_overhead` (machine: see the top of this page).

{count} sequential password logins each way, interleaved (app, direct, app, direct, ...),
localauth with bcrypt cost 4 so hashing does not drown the difference; the app runs with the
rate limiter and the lockout guard on and writes the session record as in production; {started}.

**Added by the app: p50 {added:.2f} ms** (p50 direct {statistics.median(direct):.2f} ms,
through the app {statistics.median(through):.2f} ms; p99 {benchkit_p(direct, 0.99):.2f} /
{benchkit_p(through, 0.99):.2f} ms). Of that, the rate limiter and the lockout guard (two
Redis scripts before the upstream call, one after it) account for {guards:.2f} ms: the same
app with both off, interleaved in the same loop, answers in
{statistics.median(unguarded):.2f} ms p50. The rest is the extra HTTP hop (client → app →
upstream instead of client → upstream), the session writes after the upstream answers (one
round trip: session record, refresh-token index and lockout success in parallel) and
redis-py's CPU per command; see [performance.md](performance.md#login).

{report.plot("login", draw)}
""")


def benchkit_p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 4. cost curves --------------------------------------------------------------------------


async def _create_sessions(url: str, prefix: str, pairs: list[tuple[str, str]]) -> None:
    import redis.asyncio as aioredis

    from services.sessions import SessionStore

    client = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(url, max_connections=32)
    )
    store = SessionStore(client, prefix=prefix, session_ttl=3600)
    for start in range(0, len(pairs), 500):
        batch = pairs[start : start + 500]
        await asyncio.gather(
            *(store.create(sid, uid, ip="10.0.0.1", user_agent="bench") for sid, uid in batch)
        )
    await client.aclose()


def memory_curve(report: Report, bench: Bench, supabase: dict[str, str], workdir: Path) -> None:
    total = 20_000 if report.quick else 100_000
    marks = [m for m in (5_000, 10_000, 25_000, 50_000) if m < total] + [total]
    secret = secrets.token_urlsafe(32)
    with private_redis(workdir / "mem-redis") as url:
        prefix = "bench-mem:"
        app = bench.ours("mem", supabase, url, env={"SUPABASE_JWT_SECRET": secret})
        pid = app.pid
        start_rss = rss_mib(pid)
        issuer = supabase["SUPABASE_URL"] + "/auth/v1"
        now = int(time.time())
        users = [str(uuid.uuid4()) for _ in range(max(1, total // 5))]
        pairs = [(str(uuid.uuid4()), users[i % len(users)]) for i in range(total)]
        info = redis.Redis.from_url(url)
        used_before = int(info.info("memory")["used_memory"])
        asyncio.run(_create_sessions(url, prefix, pairs))
        used_after = int(info.info("memory")["used_memory"])
        info.close()
        tokens = [
            jwt.encode(
                {"sub": uid, "session_id": sid, "aud": "authenticated", "iss": issuer,
                 "iat": now, "exp": now + 3600, "role": "authenticated", "aal": "aal1",
                 "email": f"{sid[:8]}@example.com"},
                secret,
                algorithm="HS256",
            )
            for sid, uid in pairs
        ]  # fmt: skip
        points = [(0, start_rss)]
        done = 0
        cpu_first: list[float] = []
        for mark in marks:
            before, began = benchkit.cpu_seconds(pid), time.monotonic()
            refused = benchkit.drive_tokens(app.url, tokens[done:mark])
            if refused:
                raise RuntimeError(f"{refused} tokens refused:\n{bench.log('mem')}")
            cpu_first.append((benchkit.cpu_seconds(pid) - before) / (mark - done) * 1e6)
            rate = (mark - done) / (time.monotonic() - began)
            done = mark
            points.append((mark, rss_mib(pid)))
    per_session = (used_after - used_before) / total
    hot = report.data.get("hot", {})
    report.data["memory"] = {"points": points, "per_session_bytes": per_session}

    def draw(ax: Any) -> None:
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
        ax.set_xlabel("distinct tokens verified")
        ax.set_ylabel("RSS MiB (one worker)")
        ax.set_ylim(bottom=0)

    starts = hot.get("rss_start", {})
    start_rows = "\n".join(f"| {name} | {rss:.0f} |" for name, rss in starts.items())
    report.add(f"""## 4. Cost curves

### Memory per process

Reproduce: `scripts/bench_report --only memory_curve` (machine: see the top of this page).

RSS of one worker at start, then after each batch of distinct, valid tokens (HS256, each
with its own live session; {len(users):,} users × 5 sessions) has been verified and served
once, {total:,} in all. The verified-token cache holds `VERIFIED_TOKEN_CACHE_SIZE` (10,000)
claims and the session cache 50,000 entries per kind, so the curve flattens once both are
full: memory is bounded whatever the number of users. First-sight CPU (signature check,
a Redis read, caching): {statistics.median(cpu_first):.0f} µs per request (last batch at
{rate:,.0f} tokens/s, sent by a small asyncio client over 32 connections).

| process at start | RSS MiB |
|---|---:|
{start_rows}

| tokens verified | {" | ".join(f"{p[0]:,}" for p in points)} |
|---|{"---:|" * len(points)}
| RSS MiB | {" | ".join(f"{p[1]:.1f}" for p in points)} |

{report.plot("memory", draw)}

Redis memory per session (hash, index entry): {per_session:.0f} bytes, measured as
`used_memory` growth of a private redis-server over {total:,} sessions.
""")


def redis_commands(report: Report, bench: Bench, supabase: dict[str, str], workdir: Path) -> None:
    repeats = 10
    with private_redis(workdir / "cmd-redis") as url:
        app = bench.ours("cmds", supabase, url, env={"RATE_LIMITS": LOGIN_RULES})
        base = app.url + "/api/v1/auth"
        body = {"email": EMAIL, "password": PASSWORD}
        totals: dict[str, dict[str, int]] = {op: {} for op in ("login", "refresh", "me", "logout")}
        with httpx.Client(timeout=10) as client:
            client.post(base + "/register", json=body)

            def count(op: str, call: Callable[[], httpx.Response]) -> httpx.Response:
                before = command_counts(url)
                response = call()
                response.raise_for_status()
                after = command_counts(url)
                for name, calls in after.items():
                    delta = calls - before.get(name, 0)
                    if name not in IGNORED_COMMANDS and delta:
                        totals[op][name] = totals[op].get(name, 0) + delta
                return response

            for _ in range(repeats):
                login = partial(client.post, base + "/login", json=body)
                session = count("login", login).json()
                bearer = {"Authorization": f"Bearer {session['access_token']}"}
                client.get(base + "/me", headers=bearer).raise_for_status()  # first sight
                count("me", partial(client.get, base + "/me", headers=bearer))
                token = {"refresh_token": session["refresh_token"]}
                refreshed = count("refresh", partial(client.post, base + "/refresh", json=token))
                bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
                client.get(base + "/me", headers=bearer).raise_for_status()
                count("logout", partial(client.post, base + "/logout", headers=bearer))
    per_op = {
        op: {name: calls / repeats for name, calls in sorted(found.items())}
        for op, found in totals.items()
    }
    report.data["redis"] = per_op

    def draw(ax: Any) -> None:
        ops = list(per_op)
        ax.bar(ops, [sum(per_op[op].values()) for op in ops], color="#c44e52")
        ax.set_ylabel("Redis commands per operation")

    rows = "\n".join(
        f"| {op} | {sum(found.values()):.1f} | "
        + ", ".join(f"{name} {n:g}" for name, n in found.items())
        + " |"
        for op, found in per_op.items()
    )
    cpu = report.data.get("hot", {}).get("cpu_us", {})
    cpu_rows = "\n".join(f"| {name} | {us:.0f} |" for name, us in cpu.items())
    report.add(f"""### Redis commands per operation

Reproduce: `scripts/bench_report --only redis_commands` (machine: see the top of this page).

Counted with `INFO commandstats` on a private redis-server that only this app instance uses,
averaged over {repeats} repetitions (commands inside a MULTI or a Lua script count one by
one; the
invalidation listener's PING once a second per worker and the pool's health checks are left
out). `me` is a repeated `/me` with a token already seen: answered from memory.

| operation | commands | which |
|---|---:|---|
{rows}

{report.plot("redis", draw)}

### CPU per authenticated request

From the 64-connection runs of section 1 (server process CPU over requests served):

| target | CPU µs/request |
|---|---:|
{cpu_rows}

### How the costs grow

* **Users and sessions.** A request with a token seen before costs no Redis command and a
  constant CPU; memory per process is bounded by the two caches (section above), so it does
  not grow with users. Redis memory grows linearly: about {
        report.data.get("memory", {}).get(
            "per_session_bytes", 0
        ):.0f} bytes per live session, plus a few keys per user who has
  been banned or signed out everywhere. Login, refresh and logout cost a fixed number of
  commands each, whatever the number of users or sessions (listing sessions is the one
  read that grows with the user's own session count).
* **Instances and workers.** Every worker holds one pub/sub connection and sends one PING a
  second; each session change is one PUBLISH that Redis fans out to every worker, so
  invalidation traffic is (changes/s × workers). Caches are per worker: a token is verified
  once per worker that sees it (first-sight cost above), so memory and first-sight CPU scale
  with workers × distinct active tokens, capped by the cache sizes.
""")


# -- 5. bursts (another script, when present) ------------------------------------------------


def bursts(report: Report) -> None:
    script = ROOT / "scripts" / "bench_burst.py"
    if not script.exists():
        report.add("""## 5. Bursts

`scripts/bench_burst.py` is not in this checkout, so no burst results are included; when it
is, this section runs it and shows what it prints (and plots its served ratios if its last
line is a JSON object with a `served_ratio` mapping of label to fraction).
""")
        return
    command = [sys.executable, "-m", "scripts.bench_burst"]
    started = load_note()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
        output, failed = done.stdout.strip(), done.returncode != 0
    except subprocess.TimeoutExpired:
        output, failed = "(timed out after 240 s)", True
    figure = ""
    lines = output.splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else None
    except ValueError:
        summary = None
    if isinstance(summary, dict) and isinstance(summary.get("served_ratio"), dict):
        served: dict[str, float] = summary["served_ratio"]

        def draw(ax: Any) -> None:
            ax.bar(list(served), [float(v) for v in served.values()], color="#8172b2")
            ax.set_ylabel("served ratio")
            ax.set_ylim(0, 1.05)

        figure = report.plot("burst", draw)
    report.add(f"""## 5. Bursts

`python -m scripts.bench_burst` ({started}){" — it exited with an error" if failed else ""}:

```
{output[-4000:]}
```

{figure}
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", help="comma-separated sections (hot_path,workers,...)")
    args = parser.parse_args()
    report = Report(args.out, args.quick)
    only = set(args.only.split(",")) if args.only else None

    def wanted(step: Callable[..., None]) -> bool:
        return only is None or step.__name__ in only

    info = machine()
    began = time.monotonic()
    with benchkit.workdir() as work:
        bench = Bench(work)
        try:
            with private_redis(work / "redis") as redis_url:
                supabase = bench.localauth()
                for step in (hot_path, workers, login_overhead):
                    if wanted(step):
                        print(f"bench_report: {step.__name__} ...", flush=True)
                        step(report, bench, supabase, redis_url)
                for own_redis in (memory_curve, redis_commands):
                    if wanted(own_redis):
                        print(f"bench_report: {own_redis.__name__} ...", flush=True)
                        own_redis(report, bench, supabase, work)
        finally:
            bench.close()
    if wanted(bursts):
        print("bench_report: bursts ...", flush=True)
        bursts(report)
    minutes = (time.monotonic() - began) / 60
    head = f"""# Benchmarks

Generated by `scripts/bench_report{" --quick" if args.quick else ""}` (one command, {minutes:.1f}
minutes) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}. Machine: {info["nproc"]} ×
{info["cpu"]}, Python {info["python"]}, Linux {info["kernel"]}, load average {info["loadavg"]}
at the start (a shared machine: absolute numbers move with the load; the ratios, taken within
one run with interleaved rounds, are what to compare). Load generator: wrk. Redis:
a private redis-server started by the script.

"""
    args.out.write_text(head + "\n".join(report.parts))
    (args.out.parent / IMG / "results.json").write_text(
        json.dumps({"machine": info, **report.data}, indent=1, default=str)
    )
    print(f"bench_report: wrote {args.out} in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
