"""The Redis store's data: its keys, and the Lua scripts that change them atomically.

Keys (all under ``JOBS_REDIS_PREFIX``, default ``jobcast:``)::

    {p}job:{id}      hash: job (JSON), v (version), status, type, pos (feed position),
                     w (the feed position of its last write: create, change or append),
                     owner and owned (its owner, and the key of that owner's index),
                     idem and fp (its Idempotency-Key and request fingerprint),
                     osize and obytes (its output's chunks and bytes, once it has output)
    {p}out:{id}      list: the job's output chunks (JSON without offsets), deleted with it
    {p}created       sorted set: id by creation number, for newest-first pages
    {p}created:seq   the creation counter
    {p}owner:{hash}  sorted set: one owner's job ids by creation number (the owner as
                     its SHA-256, hex), for that owner's lists and snapshots
    {p}owners:indexed  present once every job with an owner is in its owner's index
    {p}owners:walked   the creation number up to which older jobs have been indexed
    {p}expiry        sorted set: terminal job id by removal deadline (unix seconds)
    {p}active        sorted set: unfinished job id by the time of its last change (unix
                     seconds), for JOBS_STALE_TTL
    {p}tomb:{id}     tombstone: the job type, with a native TTL of JOBS_TOMBSTONE_TTL
    {p}tombs         sorted set: tombstoned id by removal time (age and count limits)
    {p}idem:{hash}   Idempotency-Key (as its SHA-256, hex) → job id, deleted with the job
    {p}counts        hash: status → number of jobs (kept by the same scripts)
    {p}feed          stream: one entry per accepted change (id, type, job, prev, owner)
                     and per output append (id, type, owner, v, from, lens, out: the
                     chunks end to end and their lengths), MAXLEN ~ JOBS_REDIS_FEED_LENGTH
    {p}hooks         stream: one entry (job) per event to deliver to webhooks, written by
                     the same script as the change; read through the consumer group
                     `deliverers`, each entry deleted once delivered
    {p}hooks:leader  the id of the one process that delivers, with a short TTL it renews

A job id is checked against ``job_`` + URL-safe characters before it goes
into a key name, so no id can reach outside its job's key; any other id
is simply not found. An Idempotency-Key goes in only as its SHA-256 (hex),
so whatever a client sends, its key name has one fixed shape and length.
An owner goes in only as its SHA-256 too. A job's ``owner`` is stored in
its hash and on each of its feed entries, so owner-scoped reads can filter
without decoding the job.
"""

from __future__ import annotations

import hashlib


class Keys:
    """The name of every key, under the deployment's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created = prefix + "created"
        self.created_seq = prefix + "created:seq"
        self.expiry = prefix + "expiry"
        self.tombstones = prefix + "tombs"
        self.counts = prefix + "counts"
        self.feed = prefix + "feed"
        self.owners_indexed = prefix + "owners:indexed"
        self.active = prefix + "active"
        self.owners_walked = prefix + "owners:walked"
        self.hooks = prefix + "hooks"
        self.hooks_leader = prefix + "hooks:leader"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def output(self, job_id: str) -> str:
        return f"{self.prefix}out:{job_id}"

    def tombstone(self, job_id: str) -> str:
        return f"{self.prefix}tomb:{job_id}"

    def idempotency(self, key: str) -> str:
        # Hashed: a client's key never shapes a key name (length, characters, prefix).
        return f"{self.prefix}idem:{hashlib.sha256(key.encode()).hexdigest()}"

    def owner(self, owner: str) -> str:
        # Hashed for the same reason: an owner is any visible ASCII, up to 200 characters.
        return f"{self.prefix}owner:{hashlib.sha256(owner.encode()).hexdigest()}"


CREATE = """
-- KEYS: job, created, created:seq, feed, counts, owners:indexed, active, hooks[, owner index]
--       [, idem]
-- ARGV: id, json, type, status, version, maxlen, prefix, owner ('' for none), changed at
--       (unix seconds), '1' to queue it for webhooks (or '')[, fingerprint]
-- (the owner index comes with an owner, the idempotency key with its fingerprint)
local owned = ARGV[8] ~= '' and KEYS[9]
local idem = ARGV[11] and KEYS[#KEYS]
if idem then
  local earlier = redis.call('GET', idem)
  if earlier then
    local found = redis.call('HMGET', ARGV[7] .. 'job:' .. earlier, 'job', 'fp')
    if found[1] then return {0, found[1], found[2]} end
  end
end
local position = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
  'id', ARGV[1], 'type', ARGV[3], 'job', ARGV[2], 'owner', ARGV[8])
local number = redis.call('INCR', KEYS[3])
-- A deployment's first job: no job is older than the owner indexes.
if number == 1 then redis.call('SET', KEYS[6], '1') end
redis.call('ZADD', KEYS[2], number, ARGV[1])
redis.call('HSET', KEYS[1], 'job', ARGV[2], 'v', ARGV[5], 'status', ARGV[4],
  'type', ARGV[3], 'pos', position, 'w', position)
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
redis.call('ZADD', KEYS[7], ARGV[9], ARGV[1])
if ARGV[10] ~= '' then redis.call('XADD', KEYS[8], '*', 'job', ARGV[2]) end
if owned then
  redis.call('HSET', KEYS[1], 'owner', ARGV[8], 'owned', owned)
  redis.call('ZADD', owned, number, ARGV[1])
end
if idem then
  redis.call('SET', idem, ARGV[1])
  redis.call('HSET', KEYS[1], 'idem', idem, 'fp', ARGV[11])
end
return {1, position}
"""

UPDATE = """
-- KEYS: job, feed, counts, expiry, active, hooks
-- ARGV: id, version read, json, new version, old status, new status, type, maxlen, deadline
--       ('' unless it ended), owner ('' for none), changed at (unix seconds), '1' to queue
--       it for webhooks (or ''), output chunks read, last write read ('' for none)
-- (the JSON carries outputSize: an append since the read makes it stale, like a change;
-- the last write tells apart two states with one version, should Redis lose a write)
local stored = redis.call('HMGET', KEYS[1], 'v', 'osize', 'w')
if not stored[1] then return {0} end
if stored[1] ~= ARGV[2] or (stored[2] or '0') ~= ARGV[13] then return {-1} end
if stored[3] and ARGV[14] ~= '' and stored[3] ~= ARGV[14] then return {-1} end
local position = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'id', ARGV[1], 'type', ARGV[7], 'job', ARGV[3], 'prev', ARGV[5], 'owner', ARGV[10])
redis.call('HSET', KEYS[1], 'job', ARGV[3], 'v', ARGV[4], 'status', ARGV[6], 'pos', position,
  'w', position)
if ARGV[5] ~= ARGV[6] then
  redis.call('HINCRBY', KEYS[3], ARGV[5], -1)
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
else
  redis.call('ZADD', KEYS[5], ARGV[11], ARGV[1])
end
if ARGV[12] ~= '' then redis.call('XADD', KEYS[6], '*', 'job', ARGV[3]) end
return {1, position}
"""

APPEND = """
-- KEYS: job, output, feed
-- ARGV: id, version read, chunks read, json (with the new outputSize), bytes at most,
--       maxlen, type, owner ('' for none), last write read ('' for none), the chunks'
--       lengths ('12,30'), then each chunk
local stored = redis.call('HMGET', KEYS[1], 'v', 'osize', 'obytes', 'w')
if not stored[1] then return {0} end
if stored[1] ~= ARGV[2] or (stored[2] or '0') ~= ARGV[3] then return {-1} end
if stored[4] and ARGV[9] ~= '' and stored[4] ~= ARGV[9] then return {-1} end
local size = tonumber(stored[3] or '0')
for i = 11, #ARGV do size = size + #ARGV[i] end
if size > tonumber(ARGV[5]) then return {-2, size} end
for i = 11, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local position = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[1],
  'type', ARGV[7], 'owner', ARGV[8], 'v', ARGV[2], 'from', ARGV[3], 'lens', ARGV[10],
  'out', table.concat(ARGV, '', 11))
redis.call('HSET', KEYS[1], 'job', ARGV[4], 'osize', tonumber(ARGV[3]) + #ARGV - 10,
  'obytes', size, 'w', position)
return {1, position}
"""

# Removes one job: out of every index, its tombstone left, its removal appended to the
# feed; the feed position of that removal, or false for a job that is not there.
# Shared by SWEEP and DELETE, whose KEYS are: expiry, created, counts, feed, tombs, active.
_REMOVE = """
local function remove(id, now, maxlen, prefix, tombstone_ttl)
  local key = prefix .. 'job:' .. id
  local job = redis.call('HMGET', key, 'type', 'status', 'idem', 'owner', 'owned')
  if not job[1] then return false end
  redis.call('DEL', key, prefix .. 'out:' .. id)
  if job[3] then redis.call('DEL', job[3]) end
  if job[5] then redis.call('ZREM', job[5], id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[6], id)
  redis.call('HINCRBY', KEYS[3], job[2], -1)
  local position
  if job[4] then
    position = redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*',
      'id', id, 'type', job[1], 'owner', job[4])
  else
    position = redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'id', id, 'type', job[1])
  end
  redis.call('SET', prefix .. 'tomb:' .. id, job[1], 'PX', tombstone_ttl)
  redis.call('ZADD', KEYS[5], now, id)
  return position
end
"""

SWEEP = (
    _REMOVE
    + """
-- ARGV: now, batch, maxlen, prefix, tombstone ttl (ms), forget at or before, max tombstones
local last = false
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  last = remove(id, ARGV[1], ARGV[3], ARGV[4], ARGV[5]) or last
end
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[6], 'LIMIT', 0, ARGV[2])
local excess = redis.call('ZCARD', KEYS[5]) - #old - tonumber(ARGV[7])
if excess > 0 then
  local extra = redis.call('ZRANGE', KEYS[5], #old, #old + math.min(excess, tonumber(ARGV[2])) - 1)
  for _, id in ipairs(extra) do table.insert(old, id) end
end
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[4] .. 'tomb:' .. id)
  redis.call('ZREM', KEYS[5], id)
end
return {#due, #old, last}
"""
)

DELETE = (
    _REMOVE
    + """
-- ARGV: id, now, maxlen, prefix, tombstone ttl (ms)
return remove(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
)

INDEX_OLDER = """
-- KEYS: owners:walked, owners:indexed
-- ARGV: prefix, creation number walked to, last ('1': the walk is done),
--       then id, owner, owner index, creation number of each job to put in its index
for i = 4, #ARGV, 4 do
  local key = ARGV[1] .. 'job:' .. ARGV[i]
  local job = redis.call('HMGET', key, 'owner', 'owned')
  if job[1] == ARGV[i + 1] and not job[2] then
    redis.call('ZADD', ARGV[i + 2], ARGV[i + 3], ARGV[i])
    redis.call('HSET', key, 'owned', ARGV[i + 2])
  end
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], '1')
  redis.call('DEL', KEYS[1])
elseif tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""
