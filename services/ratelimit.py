"""Rate limits in Redis: GCRA, one atomic Lua call per request, Redis's clock.

GCRA stores one number per key, the "theoretical arrival time" (TAT) of the next request.
A rule of ``limit`` requests per ``period`` seconds lets a burst of ``limit`` through and
then one request every ``period / limit`` seconds. Time comes from Redis ``TIME`` inside
the script, so every instance agrees on it and tests can move a window by editing the key.

    p rl:{rule}:{subject}     TAT in milliseconds        (PX: until the bucket is full again)

One key per script call, so it runs unchanged on a Redis Cluster.

A Redis failure raises ``RedisUnavailable`` (503): a limiter that fails open is no limit.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services import audit, errors, metrics
from services.redis_call import redis_call
from services.redis_client import Call, RedisClient

# KEYS[1] bucket; ARGV[1] emission interval (ms), ARGV[2] burst.
# Returns {allowed, remaining, reset_ms, retry_after_ms}.
_GCRA = """
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local diff = now - (new_tat - burst * emission)
if diff < 0 then
  return {0, 0, tat - now, -diff}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor(diff / emission), new_tat - now, 0}
"""

_RULE = re.compile(r"^\s*([a-z0-9_:-]+)\s*=\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")

DEFAULT_RULES = (
    "login=10/60",
    "register=5/60",
    "refresh=30/60",
    "admin=120/60",
    "internal=600/60",
    "events=600/60",
    # Account lifecycle: mails per client address and per recipient, code checks, the rest.
    "mail=10/60",
    "mail_address=5/300",
    "verify=20/60",
    "account=30/60",
    "oauth=30/60",
)


@dataclass(frozen=True)
class Rule:
    """``limit`` requests per ``period`` seconds, bursts of up to ``limit``."""

    limit: int
    period: float

    @property
    def emission_ms(self) -> int:
        return max(1, round(self.period * 1000 / self.limit))


def parse_rules(items: Iterable[str]) -> dict[str, Rule]:
    """``["login=10/60", ...]`` over the defaults; a malformed item is a ``ValueError``."""
    rules: dict[str, Rule] = {}
    for item in (*DEFAULT_RULES, *items):
        match = _RULE.match(item)
        if match is None:
            raise ValueError(f"rate limit {item!r} is not NAME=LIMIT/SECONDS")
        name, limit, period = match.group(1), int(match.group(2)), float(match.group(3))
        if limit < 1 or period <= 0:
            raise ValueError(f"rate limit {item!r} must allow at least 1 request per period")
        rules[name] = Rule(limit, period)
    return rules


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float

    def headers(self) -> dict[str, str]:
        """The draft-ietf-httpapi-ratelimit-headers trio (and Retry-After when refused)."""
        values = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            values["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return values


class RateLimiter:
    def __init__(self, redis: RedisClient, *, prefix: str, rules: Mapping[str, Rule]) -> None:
        self.prefix = prefix
        self.rules = dict(rules)
        self._script = redis.register_script(_GCRA)

    def key(self, rule: str, subject: str) -> str:
        # Subjects may be emails or IPs; hashed so keys carry no personal data.
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"{self.prefix}rl:{rule}:{digest}"

    def pending(self, rule: str, subject: str) -> PendingHit:
        """A hit not sent yet: a ``Gate`` for a check that goes out with others in one
        round trip (``redis_client.run_together``)."""
        return PendingHit(self, rule, subject)

    async def hit(self, rule: str, subject: str) -> Decision:
        """Count one request of ``subject`` against ``rule``; refuse with ``RateLimited``."""
        script, keys, args = self.script_call(rule, subject)
        reply = await redis_call("rate_limit", script(keys=list(keys), args=list(args)))
        return self.verdict(rule, subject, reply)

    def script_call(self, rule: str, subject: str) -> Call:
        """The script call that counts one request of ``subject`` against ``rule``."""
        spec = self.rules[rule]
        return (self._script, [self.key(rule, subject)], [spec.emission_ms, spec.limit])

    def verdict(self, rule: str, subject: str, reply: Any) -> Decision:
        """What the script's ``reply`` decides: ``RateLimited`` (429) when refused."""
        spec = self.rules[rule]
        allowed, remaining, reset_ms, retry_ms = (int(v) for v in reply)
        decision = Decision(
            allowed=bool(allowed),
            limit=spec.limit,
            remaining=remaining,
            reset_after=reset_ms / 1000,
            retry_after=retry_ms / 1000,
        )
        if not decision.allowed:
            metrics.REJECTIONS.labels(f"rate_limit:{rule}").inc()
            audit.event(
                "auth.rate_limited",
                rule=rule,
                subject=subject,
                retry_after_s=round(decision.retry_after, 1),
            )
            raise errors.RateLimited(
                f"Too many requests ({spec.limit} per {spec.period:g} s); try again later.",
                retry_after=decision.retry_after,
                headers=decision.headers(),
            )
        return decision


class PendingHit:
    """One request of ``subject`` to count against ``rule``, sent by whoever runs it (a
    ``redis_client.Gate``); ``decision`` holds the verdict once it came back allowed."""

    __slots__ = ("decision", "limiter", "rule", "subject")

    def __init__(self, limiter: RateLimiter, rule: str, subject: str) -> None:
        self.limiter = limiter
        self.rule = rule
        self.subject = subject
        self.decision: Decision | None = None

    def call(self) -> Call:
        return self.limiter.script_call(self.rule, self.subject)

    def decide(self, reply: Any) -> Decision:
        """The verdict on the script's reply: ``RateLimited`` when refused."""
        self.decision = self.limiter.verdict(self.rule, self.subject, reply)
        return self.decision
