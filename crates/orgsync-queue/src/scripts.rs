//! The Lua scripts: every state change of a job is one atomic script.
//!
//! Numbers that are stored are formatted with `%d` so Lua never writes `1.7e+12`.

use std::sync::LazyLock;

use redis::Script;

const NOW: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function d(x) return string.format('%d', x) end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

/// ARGV: prefix, idempotency ttl ms, JSON array of jobs.
/// Returns per job `new:ID` or `dup:EXISTING_ID`.
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local jobs = cjson.decode(ARGV[3])
local now = now_ms()
local out = {}
local per_type = {}
for i, j in ipairs(jobs) do
  local dup = nil
  if j.idem then
    local k = p .. ':idem:' .. j.idem
    if not redis.call('SET', k, j.id, 'NX', 'PX', ttl) then
      dup = redis.call('GET', k) or ''
    end
  end
  if dup then
    out[i] = 'dup:' .. dup
  else
    local h = p .. ':job:' .. j.id
    local fields = {'type', j.type, 'payload', j.payload, 'attempts', 0, 'enqueued_at', d(now)}
    if j.customer then table.insert(fields, 'customer'); table.insert(fields, j.customer) end
    if j.idem then table.insert(fields, 'idem'); table.insert(fields, j.idem) end
    if j.delay_ms > 0 then
      table.insert(fields, 'state'); table.insert(fields, 'scheduled')
      table.insert(fields, 'run_at'); table.insert(fields, d(now + j.delay_ms))
      redis.call('HSET', h, unpack(fields))
      redis.call('ZADD', p .. ':delayed:' .. j.type, d(now + j.delay_ms), j.id)
    else
      table.insert(fields, 'state'); table.insert(fields, 'waiting')
      redis.call('HSET', h, unpack(fields))
      redis.call('XADD', p .. ':stream:' .. j.type, '*', 'j', j.id)
    end
    per_type[j.type] = (per_type[j.type] or 0) + 1
    out[i] = 'new:' .. j.id
  end
end
for ty, n in pairs(per_type) do
  redis.call('SADD', p .. ':types', ty)
  redis.call('HINCRBY', p .. ':counters:' .. ty, 'enqueued', n)
end
return out
",
    )
});

/// ARGV: prefix, type, group, consumer, count.
/// Returns `{'empty'}` or `{'jobs', eid, jid, payload, attempts, customer, replay_of, enqueued_at, ...}`.
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = p .. ':stream:' .. ty
local res = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', n, 'STREAMS', s, '>')
if not res then return {'empty'} end
local now = d(now_ms())
local out = {'jobs'}
for _, e in ipairs(res[1][2]) do
  local eid = e[1]
  local jid = e[2] and e[2][2]
  local v = nil
  if jid then
    v = redis.call('HMGET', p .. ':job:' .. jid, 'payload', 'attempts', 'customer', 'replay_of', 'enqueued_at')
  end
  if not v or not v[1] then
    redis.call('XACK', s, g, eid)
    redis.call('XDEL', s, eid)
  else
    redis.call('HSET', p .. ':job:' .. jid, 'state', 'running', 'worker', c, 'started_at', now)
    local row = {eid, jid, v[1], v[2] or '0', v[3] or '', v[4] or '', v[5] or '0'}
    for _, x in ipairs(row) do table.insert(out, x) end
  end
end
return out
",
    )
});

/// ARGV: prefix, type, group, consumer, retention ms, error-log max length, JSON failures,
/// then groups of four for successes: job id, entry id, started ms, finished ms (plus a log
/// flag `1` when the job has failed attempts whose log must expire too, else `0`: five).
/// Returns per success then per failure `ok`, `retry`, `dead` or `stale` (no longer ours).
pub(crate) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ret, maxlen = tonumber(ARGV[5]), ARGV[6]
local fails = cjson.decode(ARGV[7])
local s = p .. ':stream:' .. ty
local cnt = p .. ':counters:' .. ty
local now = now_ms()
local res = {}
local succeeded = 0
local function owned(eid)
  if #redis.call('XPENDING', s, g, eid, eid, 1, c) == 0 then return false end
  redis.call('XACK', s, g, eid)
  redis.call('XDEL', s, eid)
  return true
end
for i = 8, #ARGV, 5 do
  local jid, eid, started, finished, haslog = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if owned(eid) then
    local h = p .. ':job:' .. jid
    redis.call('HSET', h, 'state', 'succeeded', 'finished_at', finished, 'started_at', started)
    redis.call('HDEL', h, 'worker')
    redis.call('PEXPIRE', h, ret)
    if haslog == '1' then redis.call('PEXPIRE', p .. ':log:' .. jid, ret) end
    redis.call('ZADD', p .. ':succeeded:' .. ty, d(now), jid)
    succeeded = succeeded + 1
    table.insert(res, 'ok')
  else
    table.insert(res, 'stale')
  end
end
if succeeded > 0 then redis.call('HINCRBY', cnt, 'succeeded', succeeded) end
for _, o in ipairs(fails) do
  if not owned(o.eid) then
    table.insert(res, 'stale')
  else
    local h = p .. ':job:' .. o.jid
    local customer = redis.call('HGET', h, 'customer') or ''
    redis.call('RPUSH', p .. ':log:' .. o.jid, o.log)
    redis.call('HSET', h, 'attempts', o.attempt, 'last_class', o.class, 'last_message', o.message,
      'last_failed_at', o.finished_at)
    redis.call('HDEL', h, 'worker')
    redis.call('HINCRBY', cnt, 'failed_attempts', 1)
    redis.call('XADD', p .. ':errors', 'MAXLEN', '~', maxlen, '*', 'time', o.finished_at, 'job_id', o.jid,
      'job_type', ty, 'customer', customer, 'attempt', o.attempt, 'class', o.class, 'message', o.message)
    if o.retry_ms >= 0 then
      local due = d(now + o.retry_ms)
      redis.call('HSET', h, 'state', 'retrying', 'run_at', due)
      redis.call('ZADD', p .. ':delayed:' .. ty, due, o.jid)
      table.insert(res, 'retry')
    else
      redis.call('HSET', h, 'state', 'dead', 'dead_at', d(now), 'final_class', o.class)
      redis.call('ZADD', p .. ':dead', d(now), o.jid)
      redis.call('HINCRBY', cnt, 'dead', 1)
      table.insert(res, 'dead')
    end
  end
end
return res
",
    )
});

/// ARGV: prefix, type, max jobs to move. Moves due scheduled/retrying jobs to the stream
/// in chunks (never one huge `unpack`). Returns the number moved.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local z = p .. ':delayed:' .. ty
local s = p .. ':stream:' .. ty
local now = now_ms()
local moved = 0
while moved < max do
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', d(now), 'LIMIT', 0, 500)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('XADD', s, '*', 'j', id)
    redis.call('HSET', p .. ':job:' .. id, 'state', 'waiting')
    redis.call('ZREM', z, id)
  end
  moved = moved + #ids
end
return moved
",
    )
});

/// ARGV: prefix, type, group, consumer, min idle ms, max orphaned, count, error-log max
/// length, cursor. Takes over entries idle for longer than `min idle` (their worker stopped
/// sending heartbeats) and puts them back at the end of the stream, or into the dead-letter
/// queue once their workers died `max orphaned` times. Returns `{cursor, requeued, dead}`.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idle, maxo, count, maxlen, cursor = ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local s = p .. ':stream:' .. ty
local r = redis.call('XAUTOCLAIM', s, g, c, idle, cursor, 'COUNT', count)
local now = now_ms()
local requeued, dead = 0, 0
for _, e in ipairs(r[2]) do
  local eid = e[1]
  local jid = e[2] and e[2][2]
  redis.call('XACK', s, g, eid)
  redis.call('XDEL', s, eid)
  local h = jid and (p .. ':job:' .. jid)
  if h and redis.call('EXISTS', h) == 1 then
    local orphaned = redis.call('HINCRBY', h, 'orphaned', 1)
    local lost = redis.call('HGET', h, 'worker') or ''
    redis.call('HDEL', h, 'worker')
    if orphaned >= maxo then
      local attempt = tonumber(redis.call('HGET', h, 'attempts') or '0') + 1
      local customer = redis.call('HGET', h, 'customer') or ''
      local msg = 'worker ' .. lost .. ' died while running this job (' .. orphaned .. ' workers lost on it)'
      redis.call('RPUSH', p .. ':log:' .. jid, cjson.encode({attempt = attempt, started_at = d(now),
        finished_at = d(now), class = 'abandoned', retriable = false, message = msg, chain = {msg}, worker = lost}))
      redis.call('HSET', h, 'attempts', attempt, 'last_class', 'abandoned', 'last_message', msg,
        'last_failed_at', d(now), 'state', 'dead', 'dead_at', d(now), 'final_class', 'abandoned')
      redis.call('ZADD', p .. ':dead', d(now), jid)
      redis.call('HINCRBY', p .. ':counters:' .. ty, 'failed_attempts', 1)
      redis.call('HINCRBY', p .. ':counters:' .. ty, 'dead', 1)
      redis.call('XADD', p .. ':errors', 'MAXLEN', '~', maxlen, '*', 'time', d(now), 'job_id', jid,
        'job_type', ty, 'customer', customer, 'attempt', attempt, 'class', 'abandoned', 'message', msg)
      dead = dead + 1
    else
      redis.call('XADD', s, '*', 'j', jid)
      redis.call('HSET', h, 'state', 'waiting')
      requeued = requeued + 1
    end
  end
end
return {r[1], requeued, dead}
",
    )
});

/// ARGV: prefix, type, group, consumer, now ms, entry ids... Records the worker's heartbeat
/// and resets the idle time of the entries it still owns. Returns how many it still owns.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local s = p .. ':stream:' .. ty
redis.call('ZADD', p .. ':workers', d(now_ms()), c)
local kept = 0
for i = 6, #ARGV do
  local eid = ARGV[i]
  if #redis.call('XPENDING', s, g, eid, eid, 1, c) > 0 then
    redis.call('XCLAIM', s, g, c, 0, eid, 'JUSTID')
    kept = kept + 1
  end
end
return kept
",
    )
});

/// ARGV: prefix, type, group, consumer, then pairs of entry id and job id. Hands back jobs
/// this worker fetched but did not start (graceful shutdown), then deregisters the worker.
pub(crate) static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local s = p .. ':stream:' .. ty
local n = 0
for i = 5, #ARGV, 2 do
  local eid, jid = ARGV[i], ARGV[i + 1]
  if #redis.call('XPENDING', s, g, eid, eid, 1, c) > 0 then
    redis.call('XACK', s, g, eid)
    redis.call('XDEL', s, eid)
    redis.call('XADD', s, '*', 'j', jid)
    redis.call('HSET', p .. ':job:' .. jid, 'state', 'waiting')
    redis.call('HDEL', p .. ':job:' .. jid, 'worker')
    n = n + 1
  end
end
if redis.call('EXISTS', s) == 1 and #redis.call('XPENDING', s, g, '-', '+', 1, c) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', s, g, c)
end
redis.call('ZREM', p .. ':workers', c)
redis.call('DEL', p .. ':worker:' .. c)
return n
",
    )
});

/// ARGV: prefix, old id, new id, replayed by, retention ms. Returns `ok`, `missing` or the
/// job's state when it is not dead.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, old, new, by, ret = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local h = p .. ':job:' .. old
local v = redis.call('HMGET', h, 'type', 'payload', 'customer', 'final_class', 'state')
if not v[1] then return 'missing' end
if redis.call('ZREM', p .. ':dead', old) == 0 then return v[5] or 'unknown' end
local now = d(now_ms())
local nh = p .. ':job:' .. new
redis.call('HSET', nh, 'type', v[1], 'payload', v[2], 'attempts', 0, 'enqueued_at', now, 'state', 'waiting',
  'replay_of', old, 'replayed_by', by, 'replayed_at', now)
if v[3] then redis.call('HSET', nh, 'customer', v[3]) end
redis.call('XADD', p .. ':stream:' .. v[1], '*', 'j', new)
redis.call('HSET', h, 'state', 'replayed', 'replayed_as', new, 'replayed_by', by, 'replayed_at', now)
redis.call('PEXPIRE', h, ret)
redis.call('PEXPIRE', p .. ':log:' .. old, ret)
local cnt = p .. ':counters:' .. v[1]
redis.call('HINCRBY', cnt, 'dead', -1)
redis.call('HINCRBY', cnt, 'replayed', 1)
redis.call('HINCRBY', cnt, 'enqueued', 1)
redis.call('XADD', p .. ':audit', '*', 'action', 'replay', 'job_id', old, 'new_job_id', new, 'by', by,
  'time', now, 'job_type', v[1], 'customer', v[3] or '', 'error_class', v[4] or '')
return 'ok'
",
    )
});

/// ARGV: prefix, id, deleted by. Returns `ok`, `missing` or the job's state.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, id, by = ARGV[1], ARGV[2], ARGV[3]
local h = p .. ':job:' .. id
local v = redis.call('HMGET', h, 'type', 'customer', 'final_class', 'state')
if not v[1] then return 'missing' end
if redis.call('ZREM', p .. ':dead', id) == 0 then return v[4] or 'unknown' end
redis.call('DEL', h, p .. ':log:' .. id)
redis.call('HINCRBY', p .. ':counters:' .. v[1], 'dead', -1)
redis.call('HINCRBY', p .. ':counters:' .. v[1], 'deleted', 1)
redis.call('XADD', p .. ':audit', '*', 'action', 'delete', 'job_id', id, 'new_job_id', '', 'by', by,
  'time', d(now_ms()), 'job_type', v[1], 'customer', v[2] or '', 'error_class', v[3] or '')
return 'ok'
",
    )
});
