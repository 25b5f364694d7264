"""The Redis key layout of sessions and refresh tokens, and the scripts that change them.

Cluster-safe: every key a script or pipeline touches carries the same hash tag, so each
operation lives in one slot (one node), and every script declares its keys. Keys (``p`` is
the configured prefix):

    p{u:UID}:s:SID     hash: c created, l last seen (epoch s), ip, ua        (TTL: session)
    p{u:UID}:idx       sorted set: SID scored by its expiry; expired ids are pruned on
                       every write, so it holds only live sessions            (TTL: session)
    p{u:UID}:nbf       "not before": tokens issued earlier are refused        (TTL: session)
    p{u:UID}:ban       present while the account is banned in this service
    p{rt:D}            refresh token (D: 128 bits of its SHA-256): "UID SID" while current,
                       "!UID SID" once rotated (TTL: session; rotated: see docs/redis.md)
    p{rt:D}:g          the answer shared with concurrent refreshes     (TTL: grace window)
    p{rt:D}:lock       the per-token rotation lock
    pinvalidate        pub/sub channel: "s:SID", "u:UID", "*", or heartbeats "hb:..."

Writes publish their invalidation from inside the script (plain ``PUBLISH`` is broadcast to
every node of a cluster and replicated to replicas), so the write and its message are one
atomic step.
"""

from __future__ import annotations

import hashlib


def user_tag(prefix: str, uid: str) -> str:
    return f"{prefix}{{u:{uid}}}"


def session_key(prefix: str, uid: str, sid: str) -> str:
    return f"{user_tag(prefix, uid)}:s:{sid}"


def index_key(prefix: str, uid: str) -> str:
    return f"{user_tag(prefix, uid)}:idx"


def nbf_key(prefix: str, uid: str) -> str:
    return f"{user_tag(prefix, uid)}:nbf"


def ban_key(prefix: str, uid: str) -> str:
    return f"{user_tag(prefix, uid)}:ban"


def refresh_key(prefix: str, refresh_token: str) -> str:
    digest = hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
    return f"{prefix}{{rt:{digest}}}"


# KEYS: session, index. ARGV: ttl, ip, user agent, sid, channel.
CREATE = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'c', now, 'l', now, 'ip', ARGV[2], 'ua', ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[5], 's:' .. ARGV[4])
return 1
"""

# KEYS: session, index. ARGV: ttl, ip ('' keeps it), sid. Returns 0 if the session is gone.
TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'l', now)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'ip', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""

# KEYS: index, then one session key per id. ARGV: channel, then the ids.
REVOKE = """
local now = tonumber(redis.call('TIME')[1])
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('PUBLISH', ARGV[1], 's:' .. ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
"""

# KEYS: the key. ARGV: value ('' deletes), ttl (0: none), channel, message.
SET_AND_PUBLISH = """
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
elseif tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: old token, its grace key. ARGV: "!UID SID", marker ttl (s), answer, grace (ms).
RETIRE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
"""
