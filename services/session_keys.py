"""The Redis key layout of sessions and refresh tokens, and the scripts that change them.

Cluster-safe: every key a script or pipeline touches carries the same hash tag, so each
operation lives in one slot (one node), and every script declares its keys. Keys (``p`` is
the configured prefix):

    p{u:UID}:s         hash, one per user, everything the hot path reads in one HMGET:
                         SID   -> "expires|created|last_seen|ip|user agent" (epoch seconds)
                         !nbf  -> "not before": tokens issued earlier are refused
                         !ban  -> present while the account is banned in this service
                         !aal:SID -> "aal|factor id" once MFA through this service raised
                                  the session (pruned with its session)
                       expired sessions are pruned on every write, so it holds only live
                       ones, at most SESSIONS_PER_USER of them (a new session ends the
                       least recently used); the key expires with its newest session
                       (never while banned)
    p{rt:D}            refresh token (D: 128 bits of its SHA-256): "UID SID" while current,
                       "!UID SID" once rotated (TTL: session; rotated: see docs/redis.md)
    p{rt:D}:g          the answer shared with concurrent refreshes     (TTL: grace window)
    p{rt:D}:lock       the per-token rotation lock
    pinvalidate        pub/sub channel: "s:SID", "u:UID", "*", or heartbeats "hb:..."

A session is alive while its field exists and has not expired (Redis's clock, TIME, in
every script). Writes publish their invalidation from inside the script (plain ``PUBLISH``
is broadcast to every node of a cluster and replicated to replicas), so the write and its
message are one atomic step.
"""

from __future__ import annotations

import hashlib

NOT_BEFORE = "!nbf"
BANNED = "!ban"
ASSURANCE = "!aal:"


def user_key(prefix: str, uid: str) -> str:
    return f"{prefix}{{u:{uid}}}:s"


def refresh_key(prefix: str, refresh_token: str) -> str:
    digest = hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
    return f"{prefix}{{rt:{digest}}}"


def parse_session(value: str) -> tuple[int, int, int, str, str]:
    """(expires, created, last seen, ip, user agent) of a session field."""
    expires, created, last, ip, agent = [*value.split("|", 4), "", "", "", "", ""][:5]
    return int(expires or 0), int(created or 0), int(last or 0), ip, agent


# Shared head of the writing scripts: Redis's clock, pruning of expired sessions, and
# the key's expiry (the newest session's, or none while the account is banned).
_COMMON = """
local now = tonumber(redis.call('TIME')[1])
local function prune(key)
  local all = redis.call('HGETALL', key)
  local live, count = {}, 0
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 1) ~= '!' then
      local expires, last = string.match(all[i + 1], '^(%d*)|%d*|(%d*)')
      if (tonumber(expires) or 0) <= now then
        redis.call('HDEL', key, all[i])
      else
        live[all[i]] = tonumber(last) or 0
        count = count + 1
      end
    end
  end
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) == '!aal:' and not live[string.sub(all[i], 6)] then
      redis.call('HDEL', key, all[i])
    end
  end
  return live, count
end
local function keep(key, ttl)
  if redis.call('HEXISTS', key, '!ban') == 1 then
    redis.call('PERSIST', key)
  else
    local left = redis.call('TTL', key)
    if left < ttl then redis.call('EXPIRE', key, ttl) end
  end
end
"""

# KEYS: user. ARGV: ttl, ip, user agent, sid, channel, most live sessions per user.
# Returns the session ids it ended to stay within the limit (least recently used first);
# only those are published. The new session itself is not: no instance can have cached its
# id as gone, since its tokens reach the client only after this write, and a message per
# sign-in to every instance would make each sign-in cost grow with the instance count.
CREATE = (
    _COMMON
    + """
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[6])
local live, count = prune(KEYS[1])
local evicted = {}
if live[ARGV[4]] then live[ARGV[4]] = nil; count = count - 1 end
if count >= limit then
  local order = {}
  for sid, last in pairs(live) do order[#order + 1] = {last, sid} end
  table.sort(order, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, math.min(#order, count - limit + 1) do
    local sid = order[i][2]
    redis.call('HDEL', KEYS[1], sid, '!aal:' .. sid)
    redis.call('PUBLISH', ARGV[5], 's:' .. sid)
    evicted[#evicted + 1] = sid
  end
end
redis.call('HSET', KEYS[1], ARGV[4],
  (now + ttl) .. '|' .. now .. '|' .. now .. '|' .. ARGV[2] .. '|' .. ARGV[3])
keep(KEYS[1], ttl)
return evicted
"""
)

# KEYS: user. ARGV: ttl, ip ('' keeps it), sid. Returns 0 if the session is gone.
TOUCH = (
    _COMMON
    + """
local ttl = tonumber(ARGV[1])
local value = redis.call('HGET', KEYS[1], ARGV[3])
if not value then return 0 end
local expires, created, last, ip, agent =
  string.match(value, '^(%d*)|(%d*)|(%d*)|([^|]*)|(.*)$')
if not expires or tonumber(expires) <= now then
  prune(KEYS[1])
  return 0
end
if ARGV[2] ~= '' then ip = ARGV[2] end
prune(KEYS[1])
redis.call('HSET', KEYS[1], ARGV[3],
  (now + ttl) .. '|' .. created .. '|' .. now .. '|' .. ip .. '|' .. agent)
keep(KEYS[1], ttl)
return 1
"""
)

# KEYS: user. ARGV: channel, then the session ids.
REVOKE = (
    _COMMON
    + """
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i], '!aal:' .. ARGV[i])
  redis.call('PUBLISH', ARGV[1], 's:' .. ARGV[i])
end
prune(KEYS[1])
return 1
"""
)

# KEYS: user. ARGV: field (!nbf or !ban), value ('' deletes), ttl, channel, message.
SET_USER_FIELD = (
    _COMMON
    + """
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
prune(KEYS[1])
keep(KEYS[1], tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
)

# KEYS: user. ARGV: sid, "aal|factor id" ('' deletes), channel. Returns 0 if the
# session is gone.
SET_ASSURANCE = (
    _COMMON
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
local expires = value and tonumber(string.match(value, '^(%d+)')) or 0
if expires <= now then
  prune(KEYS[1])
  return 0
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], '!aal:' .. ARGV[1])
else
  redis.call('HSET', KEYS[1], '!aal:' .. ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 's:' .. ARGV[1])
return 1
"""
)

# KEYS: old token, its grace key. ARGV: "!UID SID", marker ttl (s), answer, grace (ms).
RETIRE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

# KEYS: record, grace, lock (one token's, one slot). ARGV: holder, hold_ms. The start of a
# rotation, atomically: the answer a concurrent refresh just shared ({0, answer, false}),
# else the lock taken with the record read under it ({1, false, record}), else someone
# else's lock ({0, false, false}).
BEGIN_ROTATION = """
local shared = redis.call('GET', KEYS[2])
if shared then return {0, shared, false} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, false, false} end
return {1, false, redis.call('GET', KEYS[1])}
"""

# KEYS: lock. ARGV: holder. Released only by its holder (an expired lock may be another's).
END_ROTATION = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
