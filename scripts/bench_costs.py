"""The report's cost sections: memory with many tokens, Redis commands per operation,
and bursts (``scripts/bench_burst.py``, when present). Used by ``scripts.bench_report``."""

from __future__ import annotations

import asyncio
import json
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
from scripts.benchkit import LOGIN_RULES, ROOT, Bench, Report, load_note, rss_mib
from scripts.privateredis import command_counts, private_redis

IGNORED_COMMANDS = {"ping", "info", "config|resetstat", "client|setinfo", "hello", "select"}


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
        prefix = "bench-mem:"  # a private server: no run shares it
        app = bench.ours(
            "mem", supabase, url, env={"SUPABASE_JWT_SECRET": secret, "REDIS_KEY_PREFIX": prefix}
        )
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


def _tail(output: str, limit: int) -> str:
    """The last whole lines of ``output`` that fit in ``limit`` characters (no JSON)."""
    kept: list[str] = []
    size = 0
    for line in reversed([x for x in output.splitlines() if not x.startswith("{")]):
        size += len(line) + 1
        if size > limit:
            break
        kept.append(line)
    return "\n".join(reversed(kept))


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
        # About 5-6 minutes on two shared cores (bursts at bcrypt cost 10, then latency mode).
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        output = done.stdout.strip()
        verdict = "" if done.returncode == 0 else " — a target was missed (exit status 1)"
    except subprocess.TimeoutExpired:
        output, verdict = "(timed out after 900 s)", " — it did not finish"
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
            ax.set_ylim(0, 1.1)
            ax.axhline(1.0, color="#444444", linewidth=0.8)

        figure = report.plot("burst", draw)
    report.add(f"""## 5. Bursts

`python -m scripts.bench_burst` ({started}){verdict}. The plot: logins the app served within
the deadline over those the upstream alone served, per burst size over its rounds, and the
latency mode's throughput ratio. What bounds them on this machine is in
[deadlocks.md](deadlocks.md#proof).

```
{_tail(output, 12000)}
```

{figure}
""")
