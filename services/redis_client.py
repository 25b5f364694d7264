"""One factory for the Redis client of every deployment: single node, Sentinel or Cluster,
each with TLS and an ACL user (docs/redis.md).

The topology is a setting, never a code path: the rest of ``services`` sees one client
type (``RedisClient``) and writes through ``durable()``, which adds a replication
acknowledgement (``WAIT``) on the same connection when replicas are required.

* **single**: ``redis://`` or ``rediss://`` (TLS) URL.
* **Sentinel**: ``redis+sentinel://[user:pass@]host:port,host:port/MASTER[/db]``, or
  ``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER``; the user and password in the URL are the
  data nodes', the sentinels' own are ``REDIS_SENTINEL_USERNAME/PASSWORD``. The client asks
  the sentinels for the master on every new connection, and a ``READONLY`` answer (a demoted
  master) drops the connection, so the next attempt finds the promoted one.
* **Cluster**: ``redis+cluster://[user:pass@]host:port,host:port`` or ``REDIS_CLUSTER=true``
  with any node's URL; MOVED/ASK and dead nodes re-discover the slot map.

Every command is retried (jittered backoff, ``retries`` times) on connection errors, timeouts
and ``READONLY``; past that, callers turn the error into a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.driver_info import DriverInfo
from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    TimeoutError,
)

RedisClient = aioredis.Redis | RedisCluster
# One script run: the script, its keys, its arguments.
Call = tuple[AsyncScript, Sequence[str], Sequence[Any]]
Topology = Literal["single", "sentinel", "cluster"]


class Gate(Protocol):
    """A check made by one script (a rate limit, a lockout): the call to send, and the
    verdict on its reply, which raises a ``services.errors`` error to refuse. Gates sent
    together (``run_together``) cost one round trip, not one each."""

    def call(self) -> Call: ...
    def decide(self, reply: Any) -> object: ...


class NotReplicated(RedisError):
    """A write reached the master but not the required replicas in time: not acknowledged."""


# Every command this service sends, directly or inside its scripts (ACL checks both).
# docs/redis.md builds the minimal ACL from this list; tests run the flow with exactly it.
REQUIRED_COMMANDS: tuple[str, ...] = (
    "ping",
    "role",
    "get",
    "set",
    "del",
    "exists",
    "expire",
    "pexpire",
    "persist",
    "ttl",
    "hset",
    "hget",
    "hmget",
    "hdel",
    "hexists",
    "hgetall",
    "sadd",
    "sismember",
    "time",
    "publish",
    "subscribe",
    "evalsha",
    "script|load",
)
# With REDIS_MIN_REPLICA_ACKS > 0.
WAIT_COMMAND = "wait"
# On a Cluster, for the client to read the slot map and the commands' key positions.
CLUSTER_COMMANDS: tuple[str, ...] = ("cluster|slots", "command")


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    cluster: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    tls_check_hostname: bool = True
    timeout: float = 0.5
    max_connections: int = 64
    retries: int = 3
    # WAIT: replicas that must hold a session write before it is acknowledged (0: none).
    replica_acks: int = 0
    replica_ack_timeout_ms: int = 250
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def topology(self) -> Topology:
        if self.sentinels or "sentinel" in self.scheme:
            return "sentinel"
        if self.cluster or "cluster" in self.scheme:
            return "cluster"
        return "single"

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.scheme.startswith("rediss")

    def hosts(self) -> list[tuple[str, int]]:
        """The sentinels (Sentinel) or the startup nodes (Cluster, single)."""
        if self.sentinels:
            return list(self.sentinels)
        return _url_hosts(self.url)

    def describe(self) -> str:
        """Topology and addresses, never a password."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts())
        extra = f" master={self.master_name()}" if self.topology == "sentinel" else ""
        return f"{self.topology} {hosts}{extra}{' tls' if self.uses_tls else ''}"

    def master_name(self) -> str:
        if self.sentinels or self.topology != "sentinel":
            return self.sentinel_master
        parts = [p for p in urlsplit(self.url).path.split("/") if p]
        return unquote(parts[0]) if parts else self.sentinel_master

    def db(self) -> int:
        parts = [p for p in urlsplit(self.url).path.split("/") if p]
        if self.topology == "sentinel" and not self.sentinels:
            parts = parts[1:]
        query = parse_qs(urlsplit(self.url).query)
        raw = parts[0] if parts else query.get("db", ["0"])[0]
        return int(raw) if raw.isdigit() else 0


def _url_hosts(url: str) -> list[tuple[str, int]]:
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        hosts.append((host or "127.0.0.1", int(port) if port else 6379))
    return hosts or [("127.0.0.1", 6379)]


def _url_credentials(url: str) -> tuple[str | None, str | None]:
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at:
        return None, None
    user, colon, password = userinfo.partition(":")
    if not colon:
        return None, unquote(user) or None  # redis://password@host
    return unquote(user) or None, unquote(password) or None


def tls_kwargs(config: RedisConfig) -> dict[str, Any]:
    if not config.uses_tls:
        return {}
    return {
        "ssl_ca_certs": config.tls_ca_file,
        "ssl_certfile": config.tls_cert_file,
        "ssl_keyfile": config.tls_key_file,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if config.tls_verify else ssl.CERT_NONE,
        "ssl_check_hostname": config.tls_verify and config.tls_check_hostname,
    }


def _retry(config: RedisConfig) -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=0.5),
        config.retries,
        supported_errors=(ConnectionError, TimeoutError, ReadOnlyError),
    )


# Built once: redis-py otherwise resolves its own version from the package metadata for
# every new connection (an importlib.metadata read and an email-parser pass each), which
# made opening a burst's worth of pool connections a fifth of a login's CPU.
_DRIVER_INFO = DriverInfo()


def _common(config: RedisConfig) -> dict[str, Any]:
    user, password = _url_credentials(config.url)
    return {
        "driver_info": _DRIVER_INFO,
        "username": user or config.username,
        "password": password or config.password,
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.timeout,
        "health_check_interval": 10,
        **config.extra,
    }


def build_client(config: RedisConfig) -> RedisClient:
    """The right ``redis.asyncio`` client for the configured topology."""
    if config.topology == "cluster":
        return _cluster(config)
    if config.topology == "sentinel":
        return _sentinel(config)
    return _single(config)


def _single(config: RedisConfig) -> aioredis.Redis:
    url = config.url
    if config.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    options: dict[str, Any] = dict(parse_url(url))
    options.pop("username", None)
    options.pop("password", None)
    if config.uses_tls:
        options["connection_class"] = SSLConnection
        # Settings win; TLS options given in the URL's query (?ssl_ca_certs=...) still work.
        options.update(
            {k: v for k, v in tls_kwargs(config).items() if v is not None or k not in options}
        )
    # A burst beyond the pool waits (briefly) for a free connection instead of failing with
    # "Too many connections"; the wait is bounded by the Redis timeout, then it is a 503.
    pool = aioredis.BlockingConnectionPool(
        **{**options, **_common(config)},
        max_connections=config.max_connections,
        timeout=config.timeout,
        retry=_retry(config),
    )
    return aioredis.Redis.from_pool(pool)


def sentinel_manager(config: RedisConfig) -> Sentinel:
    tls = tls_kwargs(config)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.timeout,
        "username": config.sentinel_username,
        "password": config.sentinel_password,
    }
    if tls:
        sentinel_kwargs.update(tls, ssl=True)
    data = _common(config)
    if tls:
        data.update(tls, ssl=True)
    return Sentinel(config.hosts(), sentinel_kwargs=sentinel_kwargs, **data)  # type: ignore[no-untyped-call]


def _sentinel(config: RedisConfig) -> aioredis.Redis:
    client: aioredis.Redis = sentinel_manager(config).master_for(
        config.master_name(),
        db=config.db(),
        retry=_retry(config),
        max_connections=config.max_connections,
        check_connection=True,
    )
    return client


def _cluster(config: RedisConfig) -> RedisCluster:
    tls = tls_kwargs(config)
    options = _common(config)
    options.pop("health_check_interval", None)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in config.hosts()],
        retry=_retry(config),
        max_connections=config.max_connections,
        require_full_coverage=True,
        ssl=bool(tls),
        **tls,
        **options,
    )


# -- several scripts, one round trip ------------------------------------------------------


async def run_together(client: RedisClient, calls: Sequence[Call]) -> list[Any]:
    """Scripts in one round trip: one pipeline without a transaction (each script is atomic
    on its own, and none depends on another's effect). On a cluster their keys may live on
    different nodes, so each runs on its own, all at once. For checks and reads; a write
    that must survive a failover goes through ``Durable``."""
    if isinstance(client, RedisCluster):
        return list(
            await asyncio.gather(*(script(keys=list(k), args=list(a)) for script, k, a in calls))
        )
    try:
        return await _pipeline(client, calls)
    except NoScriptError:
        # A restarted or promoted node has no scripts (SCRIPT LOAD is not replicated).
        for script, _, _ in calls:
            await client.script_load(script.script)
        return await _pipeline(client, calls)


async def _pipeline(client: aioredis.Redis, calls: Sequence[Call], *tail: Any) -> list[Any]:
    """``calls`` and one optional command (``tail``) in one pipeline; raises the first
    error a reply holds."""
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    if tail:
        pipe.execute_command(*tail)
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return list(replies)


# -- writes that must survive a failover --------------------------------------------------


class Durable:
    """Runs a script (all its keys in one slot) and, when replicas are required, ``WAIT``s on
    the same connection; a write the replicas did not confirm raises ``NotReplicated``, so it
    is answered 503 and never acknowledged to the client."""

    def __init__(self, client: RedisClient, *, replica_acks: int, timeout_ms: int) -> None:
        self.client = client
        self.replica_acks = replica_acks
        self.timeout_ms = timeout_ms
        self.cluster = isinstance(client, RedisCluster)
        self._set = client.register_script(_SET)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self.replica_acks <= 0:
            return await script(keys=list(keys), args=list(args))
        try:
            return await self._run_and_wait(script, keys, args)
        except NoScriptError:
            # A promoted replica has no scripts (SCRIPT LOAD is not replicated).
            await self.client.script_load(script.script)
            return await self._run_and_wait(script, keys, args)

    async def run_all(self, calls: Sequence[Call]) -> list[Any]:
        """Several scripts in one round trip: one pipeline, then one ``WAIT`` when replicas
        are required. On a cluster their keys may live on different nodes, so each runs
        (and waits) on its own, all at once."""
        if self.replica_acks <= 0:
            return await run_together(self.client, calls)
        if self.cluster:
            return list(await asyncio.gather(*(self.run(*call) for call in calls)))
        assert isinstance(self.client, aioredis.Redis)
        wait = ("WAIT", self.replica_acks, self.timeout_ms)
        try:
            replies = await _pipeline(self.client, calls, *wait)
        except NoScriptError:
            for script, _, _ in calls:
                await self.client.script_load(script.script)
            replies = await _pipeline(self.client, calls, *wait)
        self._confirmed(replies[-1])
        return replies[: len(calls)]

    async def _run_and_wait(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        target: dict[str, Any] = {}
        if self.cluster:
            assert isinstance(self.client, RedisCluster)
            await self.client.initialize()  # A no-op once the slot map is known.
            target["target_nodes"] = self.client.get_node_from_key(keys[0])
        pipe = self.client.pipeline(transaction=False)
        # EVALSHA by name: the cluster pipeline refuses its evalsha() helper.
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", self.replica_acks, self.timeout_ms, **target)
        try:
            result, acked = await pipe.execute(raise_on_error=False)
        except (ConnectionError, TimeoutError):
            if isinstance(self.client, RedisCluster):
                # The node we aimed WAIT at is gone: read the slot map again, so the next
                # write goes to the promoted replica (this one is answered 503).
                await self.client.nodes_manager.initialize()
            raise
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception):
            raise acked
        self._confirmed(acked)
        return result

    def _confirmed(self, acked: Any) -> None:
        """``WAIT``'s answer: raises ``NotReplicated`` if too few replicas confirmed."""
        if int(acked) < self.replica_acks:
            raise NotReplicated(
                f"{acked} of {self.replica_acks} replicas confirmed within {self.timeout_ms} ms"
            )

    def set_call(self, key: str, value: str, ex: int) -> Call:
        """A durable ``SET key value EX ex``, for ``run`` or ``run_all``."""
        return (self._set, [key], [value, ex])

    async def write(self, key: str, value: str, ex: int) -> None:
        await self.run(*self.set_call(key, value, ex))


_SET = "return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])"
