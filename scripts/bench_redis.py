"""Redis topology benchmarks, in one run on this machine:

1. ``GET /api/v1/auth/me`` (wrk, one uvicorn worker) on a single node, a Sentinel group and
   a 3-master Cluster, with the Redis commands the run cost per request;
2. login throughput (20 concurrent clients) on a 3-master Cluster vs one node;
3. failover under 20 clients creating sessions (WAIT 1): kill -9 of the master (restarted
   as its supervisor would), and ``SENTINEL FAILOVER``: sessions lost, seconds without writes;
4. bytes and keys per session after 20,000 sessions (MEMORY USAGE summed over the keys).

    uv run python -m scripts.bench_redis [--duration 8] [--sessions 20000] [--skip hotpath,...]

Every Redis is started here from ``redis-server`` on free ports and thrown away afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx

from scripts.bench_hotpath import free_port, load, process
from services import session_keys
from services.redis_client import RedisConfig, build_client
from services.sessions import SessionStore
from tests.support.localauth import LocalAuth, run_localauth
from tests.support.redis_server import (
    RedisServer,
    SentinelGroup,
    command,
    private_redis,
    redis_cluster,
    sentinel_group,
)
from tests.support.topology import (
    LoadResult,
    instances,
    login_load,
    seed_users,
    topology_settings,
    wait_trusted,
)

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "bench@example.com"
PASSWORD = "Bench-password-1"
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)


def _commands(servers: list[RedisServer]) -> int:
    total = 0
    for server in servers:
        client = server.client()
        try:
            total += int(client.info("stats")["total_commands_processed"])
        finally:
            client.close()
    return total


@contextlib.contextmanager
def topologies(work: Path) -> Iterator[dict[str, tuple[str, list[RedisServer]]]]:
    with ExitStack() as stack:
        single = stack.enter_context(private_redis(work / "single"))
        group: SentinelGroup = stack.enter_context(sentinel_group(work / "sentinel"))
        cluster = stack.enter_context(redis_cluster(work / "cluster"))
        yield {
            "single": (single.url, [single]),
            "sentinel": (group.url, [group.master, group.replica]),
            "cluster": (cluster.url, cluster.nodes),
        }


def _app_env(auth: LocalAuth, url: str, port: int) -> dict[str, str]:
    return {
        "SUPABASE_URL": auth.url,
        "SUPABASE_ANON_KEY": auth.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": auth.service_role_key,
        "REDIS_URL": url,
        "REDIS_KEY_PREFIX": "sgbench:",
        "LOG_LEVEL": "warning",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RATE_LIMIT_ENABLED": "false",
    }


def bench_hotpath(
    work: Path, auth: LocalAuth, deployments: dict[str, tuple[str, list[RedisServer]]], args: Any
) -> None:
    print(
        f"\n/me hot path: wrk {args.connections} connections, {args.duration} s per run, "
        f"{args.rounds} interleaved rounds (median)"
    )
    with ExitStack() as stack:
        targets: dict[str, tuple[str, dict[str, str]]] = {}
        for name, (url, _) in deployments.items():
            port = free_port()
            log = work / f"app-{name}.log"
            base = f"http://127.0.0.1:{port}"
            env = _app_env(auth, url, port)
            stack.enter_context(process([sys.executable, "-m", "app"], log, env=env, cwd=ROOT))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            body = {"email": EMAIL, "password": PASSWORD}
            httpx.post(base + "/api/v1/auth/register", json=body, timeout=10)
            token = httpx.post(base + "/api/v1/auth/login", json=body, timeout=10).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            for _ in range(3):
                assert httpx.get(base + "/api/v1/auth/me", headers=headers).status_code == 200
            targets[name] = (base, headers)
        runs: dict[str, list[Any]] = {name: [] for name in targets}
        spent: dict[str, float] = dict.fromkeys(targets, 0.0)
        for _ in range(args.rounds):
            for name, (base, headers) in targets.items():
                servers = deployments[name][1]
                before = _commands(servers)
                result = load(base + "/api/v1/auth/me", headers, args.duration, args.connections)
                spent[name] += (_commands(servers) - before) / max(result.rps * args.duration, 1)
                runs[name].append(result)
    medians = {}
    for name, results in runs.items():
        result = sorted(results, key=lambda r: r.rps)[len(results) // 2]
        medians[name] = result.rps
        print(
            f"  {name:9} {result.rps:9.0f} req/s  p50 {result.p50_ms:5.2f} ms  "
            f"p99 {result.p99_ms:6.2f} ms  non-2xx {sum(r.errors for r in results)}  "
            f"Redis commands/request {spent[name] / args.rounds:.4f}  "
            f"(runs: {', '.join(f'{r.rps:.0f}' for r in results)})"
        )
    for name in ("sentinel", "cluster"):
        print(f"  {name}/single = {medians[name] / medians['single']:.3f} (target >= 0.95)")


async def _login_rate(auth: LocalAuth, url: str, seconds: float) -> float:
    settings = topology_settings(auth, url, f"sgbench:{uuid.uuid4().hex[:6]}:")
    result = LoadResult()
    async with instances(settings, count=1) as (app,):
        await wait_trusted(app)
        emails = await seed_users(app.client, 20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(login_load, [app], emails, stop, result)
            await anyio.sleep(1)  # Warm-up, not counted.
            start = len(result.acknowledged)
            await anyio.sleep(seconds)
            count = len(result.acknowledged) - start
            stop.set()
    return count / seconds


def bench_login(auth: LocalAuth, deployments: dict[str, tuple[str, list[RedisServer]]]) -> None:
    print("\nlogin throughput, 20 concurrent clients, in process (localauth bcrypt cost 4)")
    rates = {
        name: asyncio.run(_login_rate(auth, deployments[name][0], 6.0))
        for name in ("single", "cluster")
    }
    for name, rate in rates.items():
        print(f"  {name:9} {rate:7.0f} logins/s")
    print(f"  cluster/single = {rates['cluster'] / rates['single']:.3f}")


async def _failover(
    auth: LocalAuth, group: SentinelGroup, *, acks: int, planned: bool, restart: bool
) -> None:
    prefix = f"sgbench:{uuid.uuid4().hex[:6]}:"
    settings = topology_settings(auth, group.url, prefix, redis_min_replica_acks=acks)
    result = LoadResult()
    async with instances(settings) as (a, b):
        await wait_trusted(a, b)
        emails = await seed_users(a.client, 20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(login_load, [a, b], emails, stop, result)
            await anyio.sleep(2)
            old = group.master_port()
            started = time.monotonic()
            if planned:
                sentinel = group.sentinels[0].client()
                command(sentinel, "SENTINEL", "FAILOVER", group.name)
                sentinel.close()
            else:
                group.servers[old].kill()
            await anyio.to_thread.run_sync(group.wait_master_change, old)
            promoted = time.monotonic() - started
            if restart:
                await anyio.to_thread.run_sync(group.servers[old].start)
            before = len(result.acknowledged)
            deadline = time.monotonic() + 30
            # Polls a counter the workers bump; bounded by the deadline.
            while len(result.acknowledged) < before + 100 and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.1)
            await anyio.sleep(1)
            stop.set()
    client = group.current_master().client()
    try:
        pipe = client.pipeline(transaction=False)
        for uid, sid in result.acknowledged:
            pipe.hexists(session_keys.user_key(prefix, uid), sid)
        lost = sum(1 for found in pipe.execute() if not found)
    finally:
        client.close()
    kind = "SENTINEL FAILOVER" if planned else "kill -9 master"
    print(
        f"  {len(group.replicas)} replica(s), WAIT {acks}, {kind:18}"
        f"acknowledged {len(result.acknowledged):5}  lost {lost}  "
        f"503s {sum(v for k, v in result.statuses.items() if k != 200):5}  "
        f"seconds without writes {result.seconds_without_writes():5.1f}  "
        f"(sentinels named the new master after {promoted:4.1f} s)  "
        f"malformed refusals {len(result.bad_503)}"
    )


def bench_failover(work: Path, auth: LocalAuth) -> None:
    print("\nfailover under 20 clients creating sessions (WAIT = REDIS_MIN_REPLICA_ACKS)")
    print("  (a killed master is restarted when the replicas left cannot satisfy WAIT)")
    for replicas, acks in ((1, 1), (2, 1), (2, 2)):
        for planned in (False, True):
            folder = work / f"failover-{replicas}-{acks}-{planned}"
            with sentinel_group(folder, replicas=replicas) as group:
                restart = not planned and replicas - 1 < acks
                asyncio.run(_failover(auth, group, acks=acks, planned=planned, restart=restart))


async def _memory(url: str, count: int) -> tuple[float, float, float]:
    client = build_client(RedisConfig(url=url, max_connections=128))
    store = SessionStore(client, prefix="sgmem:", session_ttl=30 * 24 * 3600)
    limit = asyncio.Semaphore(64)
    baseline = int((await client.info("memory"))["used_memory"])

    async def one() -> None:
        async with limit:
            uid, sid = str(uuid.uuid4()), str(uuid.uuid4())
            await store.create(sid, uid, ip="203.0.113.7", user_agent=UA)
            await store.remember_refresh(uuid.uuid4().hex[:12], uid, sid)

    await asyncio.gather(*(one() for _ in range(count)))
    total = keys = 0
    async for key in client.scan_iter(match="sgmem:*", count=1000):
        total += int(await client.memory_usage(key, samples=0) or 0)
        keys += 1
    used = int((await client.info("memory"))["used_memory"]) - baseline
    await client.aclose()
    return total / count, keys / count, used / count


def bench_memory(work: Path, count: int) -> None:
    print(f"\nmemory after {count} sessions (one per user, {len(UA)}-character user agent)")
    with private_redis(work / "memory") as server:
        per_session, keys, used = asyncio.run(_memory(server.url, count))
    print(
        f"  MEMORY USAGE {per_session:.0f} bytes/session (target <= 600), "
        f"{keys:.2f} keys/session; used_memory grew {used:.0f} bytes/session"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved /me runs")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma list: hotpath,login,failover,memory")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="sg-bench-redis-") as tmp:
        work = Path(tmp)
        with run_localauth(work / "auth", env={"GOTRUE_MAILER_AUTOCONFIRM": "true"}) as auth:
            if not {"hotpath", "login"} <= skip:
                with topologies(work / "topologies") as deployments:
                    if "hotpath" not in skip:
                        bench_hotpath(work, auth, deployments, args)
                    if "login" not in skip:
                        bench_login(auth, deployments)
            if "failover" not in skip:
                bench_failover(work, auth)
        if "memory" not in skip:
            bench_memory(work, args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
