"""What Redis really allows this service: a write probe and the role, every command the
service needs (the ACL), each failure classified (TLS, credentials, ACL, read-only, down).

Used by readiness (``app.health``) and ``python -m app.diagnose``. Probe keys live under
the configured prefix, in their own slot, and expire in seconds.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

from services.redis_client import REQUIRED_COMMANDS, WAIT_COMMAND, RedisClient


@dataclass
class Probe:
    ok: bool
    state: str
    detail: str = ""
    role: str | None = None
    denied: list[str] = field(default_factory=list)
    latency_ms: float = 0.0


def classify(exc: BaseException) -> tuple[str, str]:
    """(state, what to tell an operator) for a Redis failure; never a password."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text
    ):
        return "tls_certificate_rejected", (
            "the server's TLS certificate was rejected: set REDIS_TLS_CA_FILE to the CA that "
            "signed it (and check the host name, or REDIS_TLS_CHECK_HOSTNAME)"
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in text:
        return "tls_error", (
            "the TLS handshake failed: is the port TLS (rediss://)? does the server demand a "
            "client certificate (REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE)?"
        )
    if isinstance(exc, NoPermissionError) or "NOPERM" in text:
        return "acl_denied", f"the ACL user may not do this: {str(exc)[:160]}"
    if isinstance(exc, (AuthenticationError, AuthorizationError)) or "WRONGPASS" in text:
        return "auth_failed", "Redis refused the user name or password (REDIS_URL/REDIS_PASSWORD)"
    if isinstance(exc, ReadOnlyError) or "READONLY" in text:
        return "read_only", "connected to a replica: no master accepts writes right now"
    if "NotReplicated" in type(exc).__name__:
        return "not_replicated", str(exc)
    return "unreachable", f"{type(exc).__name__}: {str(exc)[:160]}"


def probe_key(prefix: str, name: str) -> str:
    return f"{prefix}{{probe}}:{name}"


_INSTANCE = f"{os.getpid()}-{os.urandom(3).hex()}"


async def write_probe(client: RedisClient, prefix: str) -> Probe:
    """A real write (expiring in 10 s) and the server's role."""
    started = time.perf_counter()
    try:
        await client.set(probe_key(prefix, f"ready:{_INSTANCE}"), str(time.time()), px=10_000)
        role = await _role(client)
    except (RedisError, OSError) as exc:
        state, detail = classify(exc)
        return Probe(False, state, detail, latency_ms=_ms(started))
    return Probe(True, "ok", role=role, latency_ms=_ms(started))


async def _role(client: RedisClient) -> str:
    if isinstance(client, RedisCluster):
        return f"cluster ({len(client.get_primaries())} masters)"
    answer = await client.execute_command("ROLE")  # type: ignore[no-untyped-call]
    role = answer[0]
    return role.decode() if isinstance(role, bytes) else str(role)


async def command_probe(client: RedisClient, prefix: str, *, replica_acks: int = 0) -> Probe:
    """Try every command the service needs on probe keys; the ones the ACL refuses."""
    started = time.perf_counter()
    tag = probe_key(prefix, f"acl:{_INSTANCE}")
    k, h, st = f"{tag}:k", f"{tag}:h", f"{tag}:st"
    channel = f"{prefix}invalidate"
    script = client.register_script("return 1")
    attempts: dict[str, Callable[[], Awaitable[Any]]] = {
        "ping": lambda: client.ping(),
        "role": lambda: _role(client),
        "set": lambda: client.set(k, "1", px=10_000),
        "get": lambda: client.get(k),
        "exists": lambda: client.exists(k),
        "expire": lambda: client.expire(k, 10),
        "pexpire": lambda: client.pexpire(k, 10_000),
        "ttl": lambda: client.ttl(k),
        "persist": lambda: client.persist(k),
        "hset": lambda: client.hset(h, "f", "1"),
        "hget": lambda: client.hget(h, "f"),
        "hmget": lambda: client.hmget(h, ["f", "g"]),
        "hexists": lambda: client.hexists(h, "f"),
        "hgetall": lambda: client.hgetall(h),
        "hdel": lambda: client.hdel(h, "g"),
        "sadd": lambda: client.sadd(st, "m"),
        "sismember": lambda: client.sismember(st, "m"),
        "time": lambda: client.time(),
        "publish": lambda: client.publish(channel, "probe"),
        "script|load": lambda: client.script_load("return 1"),
        "evalsha": lambda: script(keys=[k]),
        "del": lambda: client.delete(k, h, st),
    }
    if replica_acks > 0 and not isinstance(client, RedisCluster):
        attempts[WAIT_COMMAND] = lambda: client.execute_command("WAIT", 0, 1)  # type: ignore[no-untyped-call]
    denied: list[str] = []
    for name, attempt in attempts.items():
        try:
            await attempt()
        except NoPermissionError:
            denied.append(name)
        except ResponseError as exc:
            if "NOPERM" in str(exc):
                denied.append(name)
        except (RedisError, OSError) as exc:
            state, detail = classify(exc)
            return Probe(False, state, detail, latency_ms=_ms(started))
    missing = [c for c in REQUIRED_COMMANDS if c in attempts and c in denied]
    extra = [c for c in denied if c not in missing]
    denied_all = missing + extra
    if denied_all:
        return Probe(
            False,
            "acl_denied",
            "the ACL user may not run: " + " ".join(denied_all),
            denied=denied_all,
            latency_ms=_ms(started),
        )
    return Probe(True, "ok", latency_ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


class CommandProbe:
    """``command_probe`` at most once per ``ttl`` seconds (readiness is polled often)."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._passed: dict[tuple[int, str], float] = {}

    async def check(self, client: RedisClient, prefix: str, *, replica_acks: int) -> Probe:
        key = (id(client), prefix)
        if time.monotonic() - self._passed.get(key, -self.ttl) < self.ttl:
            return Probe(True, "ok")
        result = await command_probe(client, prefix, replica_acks=replica_acks)
        if result.ok:
            self._passed[key] = time.monotonic()
        else:
            self._passed.pop(key, None)
        return result
