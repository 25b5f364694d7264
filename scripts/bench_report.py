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
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts import benchkit
from scripts.bench_costs import bursts, memory_curve, redis_commands
from scripts.benchkit import (
    IMG,
    LOGIN_RULES,
    Bench,
    Report,
    Series,
    Target,
    interleave,
    load_note,
    machine,
    percentile,
    ratio,
    rss_mib,
)
from scripts.privateredis import private_redis

ROOT = benchkit.ROOT


# -- 1. the hot path -----------------------------------------------------------------------


def hot_path(report: Report, bench: Bench, supabase: dict[str, str], redis_url: str) -> None:
    conns = [16, 64] if report.quick else [16, 64, 128]
    rounds, seconds = (2, 2) if report.quick else (3, 3)
    bare = bench.bare()
    ours = bench.ours("hot", supabase, redis_url)
    ours.url += "/api/v1/auth/me"
    ours.headers = benchkit.sign_in(ours.url.removesuffix("/api/v1/auth/me"))
    fu = bench.fastapi_users(redis_url)
    same_server = bench.bare(our_protocol=True)
    targets = [bare, ours, fu, same_server]
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
    b_over_d = ratio(at64[1], at64[3])
    cpu_ratio = at64[0].median("cpu_us_per_request") / at64[1].median("cpu_us_per_request")
    cpu_same = at64[3].median("cpu_us_per_request") / at64[1].median("cpu_us_per_request")
    report.data["hot"] = {
        "ratio_bare": b_over_a,
        "ratio_bare_same_server": b_over_d,
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
fastapi-users' protected route (RedisStrategy, in-memory user DB, its best case), and the
same bare endpoint served by the HTTP protocol `python -m app` runs (`app.httpserver`: one
write per answer, bounded heads), so the app's own cost shows apart from the server's: four
servers up side by side, one uvicorn worker each pinned to CPU {benchkit.SERVER_CPU}, wrk
(1 thread) pinned to CPU {benchkit.LOAD_CPU}, {rounds} interleaved rounds of {seconds} s per
target and connection count; medians over rounds. CPU µs/request is the server process's
user+system time over the requests it served (from /proc).

**At 64 connections: /me = {b_over_a:.2f} × bare Starlette on plain uvicorn and
{b_over_d:.2f} × bare Starlette on our HTTP protocol (the same server), {b_over_c:.1f} ×
fastapi-users, p99 {at64[1].median("p99_ms"):.2f} ms** (ratios: median of the per-round
ratios). By CPU per request, which moves less with the machine's load: bare Starlette's cost
over ours = {cpu_ratio:.2f} on plain uvicorn, {cpu_same:.2f} on the same server.
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
    from scripts.bench_login import HOP, PASSWORD, measure
    from scripts.devstack import seed_users

    count = 100 if report.quick else 300
    emails = seed_users(supabase, 50, "report-login", PASSWORD)
    # Lockout and rate limiting on, as in production; the limits are raised because one
    # client signs in hundreds of times a minute.
    app = bench.ours("login", supabase, redis_url, env={"RATE_LIMITS": LOGIN_RULES}, cpus=None)
    # The same app without the limiter and the lockout guard: what those Redis calls cost.
    off = {"RATE_LIMIT_ENABLED": "false", "LOCKOUT_ENABLED": "false"}
    bare_login = bench.ours("login-noguard", supabase, redis_url, env=off, cpus=None)
    started = load_note()
    result = measure(app.url, supabase, emails, count, {"unguarded": bare_login.url})
    report.data["login"] = {
        name: {"p50_ms": statistics.median(v), "p99_ms": percentile(v, 0.99)}
        for name, v in result.items()
    }
    direct, through, unguarded = result["direct"], result["app"], result["unguarded"]
    hop = statistics.median(result[HOP])
    added = statistics.median(through) - statistics.median(direct)
    guards = statistics.median(through) - statistics.median(unguarded)

    def draw(ax: Any) -> None:
        ax.boxplot([direct, unguarded, through], showfliers=False)
        ax.set_xticks([1, 2, 3], ["localauth direct", "app, no limiter/lockout", "app"])
        ax.set_ylabel("login latency ms")

    report.add(f"""## 3. Login: what the service adds over the upstream

Reproduce: `scripts/bench_report --only login_overhead` (machine: see the top of this page).

{count} sequential password logins each way, interleaved (app, direct, app, direct, ...),
rotating over {len(emails)} accounts (each holds a handful of sessions, as real accounts do),
localauth with bcrypt cost 4 so hashing does not drown the difference; the app runs with the
rate limiter and the lockout guard on and writes the session record as in production; {started}.

**Added by the app: p50 {added:.2f} ms** (p50 direct {statistics.median(direct):.2f} ms,
through the app {statistics.median(through):.2f} ms; p99 {percentile(direct, 0.99):.2f} /
{percentile(through, 0.99):.2f} ms).

- **The extra HTTP hop: {hop:.2f} ms.** A proxy makes one more HTTP exchange than a client
  calling the upstream itself (client → app → upstream). Its floor is a `GET /health/live`
  through the app, interleaved in the same loop: one request written and read by an HTTP
  client, one parsed and answered by the app's server, and the wake-ups between them.
- **The app's own work: {added - hop:.2f} ms** above that: the thread hop to the SDK and
  its parsing of the answer, the session writes after the upstream answers (one round
  trip: the session record and the refresh-token index in one pipeline), and the guards.
- **The rate limiter and the lockout guard: {guards:.2f} ms** of it (two Redis scripts in
  one round trip before the upstream call; after it, a lockout write only when there is
  something to clear or to remember): the same app with both off answers in
  {statistics.median(unguarded):.2f} ms p50.

Where the app's work goes, span by span: `uv run python -m scripts.profile_login`; see
[performance.md](performance.md#login).

{report.plot("login", draw)}
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
