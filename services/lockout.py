"""Brute-force lockout on login (a ``services.auth.LoginGuard``).

Two counters per account, both judged with Redis's clock inside Lua (atomic, and every
instance agrees on the time):

* **account + IP** (the real defence): after ``ip_threshold`` failures from one address
  within ``window`` seconds, that address is locked out of that account for ``base``
  seconds, doubling with each further failure up to ``max_lock``.
* **account, all IPs** (against a botnet spreading guesses over many addresses): after
  ``account_threshold`` failures within ``account_window`` seconds, the account is locked
  for ``account_lock`` seconds, a fixed short time, **for unknown addresses only**. An
  address is known once it has signed in successfully to the account (kept for
  ``known_ttl``). So an attacker can slow down guessing from anywhere, but cannot lock the
  owner out of the places they normally sign in from; and since the account lock does not
  grow, keeping it shut costs the attacker a steady stream of failures.

Keys (``h`` = SHA-256 of the normalised email, so keys hold no addresses in clear):

    p{lk:H}           hash: f:IP failures, t:IP last failure ms, l:IP locked until ms,
                      af account failures, aw account window start ms, al account locked until
    p{lk:H}:known     set of IPs that signed in successfully              (TTL: known_ttl)

Both keys carry the hash tag ``{lk:H}``, so the two-key scripts stay in one Cluster slot.

Success clears the account's failure state (not its known addresses); ``unlock`` (admin)
deletes it. A success that would change nothing (no failures, the address known and its
set refreshed within a day) writes nothing: the check tells, so most logins cost one
lockout command, not two. Existing sessions are never touched: a lockout only gates
password attempts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from services import audit, errors, metrics
from services.redis_call import gated, redis_call
from services.redis_client import Call, Gate, RedisClient

# KEYS: state, known. ARGV: ip, fresh (s). Returns {retry_after_ms, reason(0 none, 1 ip,
# 2 account), dirty}: dirty is 0 when a success would change nothing (no failure state, the
# address known, its set refreshed within the last known_ttl - fresh seconds).
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ip = ARGV[1]
local until_ip = tonumber(redis.call('HGET', KEYS[1], 'l:' .. ip) or 0)
if until_ip > now then return {until_ip - now, 1, 1} end
local until_acc = tonumber(redis.call('HGET', KEYS[1], 'al') or 0)
local known = redis.call('SISMEMBER', KEYS[2], ip) == 1
if until_acc > now and not known then
  return {until_acc - now, 2, 1}
end
if known and redis.call('EXISTS', KEYS[1]) == 0
   and redis.call('TTL', KEYS[2]) > tonumber(ARGV[2]) then
  return {0, 0, 0}
end
return {0, 0, 1}
"""

# KEYS: state. ARGV: ip, window, ip_threshold, base, max_lock, account_window,
# account_threshold, account_lock (all times in ms). Returns {ip_failures, ip_lock_ms}.
_FAIL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ip = ARGV[1]
local window, threshold = tonumber(ARGV[2]), tonumber(ARGV[3])
local base, max_lock = tonumber(ARGV[4]), tonumber(ARGV[5])
local acc_window, acc_threshold, acc_lock = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local count = tonumber(redis.call('HGET', KEYS[1], 'f:' .. ip) or 0)
local last = tonumber(redis.call('HGET', KEYS[1], 't:' .. ip) or 0)
if now - last > window then count = 0 end
count = count + 1
redis.call('HSET', KEYS[1], 'f:' .. ip, count, 't:' .. ip, now)
local lock = 0
if count >= threshold then
  lock = math.min(base * 2 ^ (count - threshold), max_lock)
  redis.call('HSET', KEYS[1], 'l:' .. ip, now + lock)
end
local acc = tonumber(redis.call('HGET', KEYS[1], 'af') or 0)
local started = tonumber(redis.call('HGET', KEYS[1], 'aw') or 0)
if now - started > acc_window then acc = 0; started = now end
acc = acc + 1
redis.call('HSET', KEYS[1], 'af', acc, 'aw', started)
if acc >= acc_threshold then redis.call('HSET', KEYS[1], 'al', now + acc_lock) end
redis.call('PEXPIRE', KEYS[1], math.max(window, acc_window, lock, acc_lock))
return {count, lock}
"""

# KEYS: state, known. ARGV: ip, known_ttl (s).
_SUCCESS = """
redis.call('DEL', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class LockoutPolicy:
    window: float = 900.0
    ip_threshold: int = 5
    base: float = 30.0
    max_lock: float = 3600.0
    account_window: float = 300.0
    account_threshold: int = 50
    account_lock: float = 300.0
    known_ttl: int = 90 * 24 * 3600
    # How often a known address's set has its TTL renewed by a success that changes nothing.
    known_refresh: int = 24 * 3600


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class LoginLockout:
    """Counts failed logins in Redis and refuses attempts with 429 ``locked_out``."""

    def __init__(self, redis: RedisClient, *, prefix: str, policy: LockoutPolicy) -> None:
        self.redis = redis
        self.prefix = prefix
        self.policy = policy
        self._check = redis.register_script(_CHECK)
        self._fail = redis.register_script(_FAIL)
        self._success = redis.register_script(_SUCCESS)

    def state_key(self, email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        return f"{self.prefix}{{lk:{digest}}}"

    async def before_attempt(self, email: str, ip: str, *, along: Sequence[Gate] = ()) -> bool:
        """Refuse (429) a locked-out attempt; else whether a success must be recorded.
        ``along``: other checks of the same request (its rate limit), sent in the same
        round trip and decided first, in their order."""
        key = self.state_key(email)
        fresh = max(0, self.policy.known_ttl - self.policy.known_refresh)
        check: Call = (self._check, [key, f"{key}:known"], [ip, fresh])
        own = await gated("lockout", self.redis, check, along)
        retry_ms, reason, dirty = own
        if int(retry_ms) > 0:
            kind = "ip" if int(reason) == 1 else "account"
            metrics.REJECTIONS.labels(f"lockout:{kind}").inc()
            audit.event(
                "auth.lockout",
                scope=kind,
                email_hash=audit.email_hash(email),
                ip=ip,
                retry_after_s=round(int(retry_ms) / 1000),
            )
            raise errors.LockedOut(retry_after=int(retry_ms) / 1000)
        return bool(int(dirty))

    async def record_failure(self, email: str, ip: str) -> None:
        p = self.policy
        args: list[str | int] = [
            ip,
            _ms(p.window),
            p.ip_threshold,
            _ms(p.base),
            _ms(p.max_lock),
            _ms(p.account_window),
            p.account_threshold,
            _ms(p.account_lock),
        ]
        await redis_call("lockout", self._fail(keys=[self.state_key(email)], args=args))

    async def record_success(self, email: str, ip: str) -> None:
        key = self.state_key(email)
        await redis_call(
            "lockout",
            self._success(keys=[key, f"{key}:known"], args=[ip, self.policy.known_ttl]),
        )

    async def unlock(self, email: str) -> None:
        """Admin: forget every failure and lock of the account (known addresses stay)."""
        await redis_call("lockout", self.redis.delete(self.state_key(email)))
