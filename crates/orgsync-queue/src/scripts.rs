//! The Lua scripts: every state change of a job is one atomic script.
//!
//! Numbers that are stored are formatted with `%d` so Lua never writes `1.7e+12`. Every
//! script starts with the shared helpers below: `enqueue_job` (the one way a job is written
//! and queued, used by `ENQUEUE`, `ENQUEUE_BATCH` and a batch's completion job) and
//! `batch_terminal` (the one batch countdown, called by every path that makes a job
//! `succeeded` or `dead`: `COMPLETE` for successes, spent attempts, permanent errors and
//! undecodable payloads, and `RECLAIM` for abandoned jobs).

use std::sync::LazyLock;

use redis::Script;

const HELPERS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function d(x) return string.format('%d', x) end

-- Writes job `j` ({id, type, payload, customer?, idem?, batch?, delay_ms}) and queues it, or
-- returns the holder of its idempotency key. Counts per type go to `per_type`; pass that to
-- `count_enqueued` once at the end. Returns `new:ID` or `dup:EXISTING_ID`.
local function enqueue_job(p, idem_ttl, j, now, per_type)
  if j.idem then
    local k = p .. ':idem:' .. j.idem
    if not redis.call('SET', k, j.id, 'NX', 'PX', idem_ttl) then
      return 'dup:' .. (redis.call('GET', k) or '')
    end
  end
  local h = p .. ':job:' .. j.id
  local fields = {'type', j.type, 'payload', j.payload, 'attempts', 0, 'enqueued_at', d(now)}
  if j.customer then table.insert(fields, 'customer'); table.insert(fields, j.customer) end
  if j.idem then table.insert(fields, 'idem'); table.insert(fields, j.idem) end
  if j.batch then table.insert(fields, 'batch'); table.insert(fields, j.batch) end
  if j.run or j.batch then table.insert(fields, 'run'); table.insert(fields, j.run or j.batch) end
  if j.notify_dead then table.insert(fields, 'notify_dead'); table.insert(fields, '1') end
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
  return 'new:' .. j.id
end

local function count_enqueued(p, per_type)
  for ty, n in pairs(per_type) do
    redis.call('SADD', p .. ':types', ty)
    redis.call('HINCRBY', p .. ':counters:' .. ty, 'enqueued', n)
  end
end

-- Enqueues batch `bid`'s completion job once: when it has none yet.
local function complete_batch(p, bid, now)
  local bk = p .. ':batch:' .. bid
  local v = redis.call('HMGET', bk, 'on_complete', 'completed_at')
  if not v[1] or v[2] then return end
  local j = cjson.decode(v[1])
  j.run = j.run or bid
  local per_type = {}
  local r = enqueue_job(p, j.idem_ttl, j, now, per_type)
  count_enqueued(p, per_type)
  redis.call('HSET', bk, 'completed_at', d(now), 'completion_job', string.sub(r, 5))
end

-- Dashboard counts per hour (`kind`: succeeded, failed, dead), one hash per UTC day, kept 8 days.
local function hourly(p, kind, now, n)
  local hour = math.floor(now / 3600000)
  local k = p .. ':hourly:' .. d(math.floor(hour / 24))
  redis.call('HINCRBY', k, kind .. ':' .. d(hour), n or 1)
  redis.call('PEXPIRE', k, 8 * 86400000)
end

-- The words of a dead letter's searchable text (error message, final class, customer):
-- lower-cased runs of letters and digits (bytes beyond ASCII count as letters, so Danish words
-- stay whole), 2 to 40 bytes, distinct, at most 32 per dead letter (the first ones). The free
-- text search matches whole words of this set, so index and check agree.
local MAX_WORDS = 32
-- More dead letters than this with one word make it common: no zset, checked per candidate.
local COMMON_WORD = 5000
local function words(text)
  local out, seen, n = {}, {}, 0
  for w in string.gmatch(string.lower(text), '[^%s%p%c]+') do
    if #w >= 2 and #w <= 40 and not seen[w] then
      seen[w] = true
      n = n + 1
      out[n] = w
      if n >= MAX_WORDS then break end
    end
  end
  return out, seen
end

local function dead_text(v)
  return (v[6] or '') .. ' ' .. (v[3] or '') .. ' ' .. (v[2] or '')
end

-- The dead-letter index: per customer, job type, final error class and run, a zset of dead
-- letter ids by time of death, plus a hash per kind counting the values (the facets); and per
-- word of the searchable text a zset `dead-by:word:W` (no facet). Call with `add` once the job
-- hash says `dead` (with `final_class`), and with not `add` before a replay or delete changes it.
local function dead_index(p, jid, add)
  local v = redis.call('HMGET', p .. ':job:' .. jid, 'type', 'customer', 'final_class', 'run', 'dead_at', 'last_message')
  local vals = {type = v[1], customer = v[2], class = v[3], run = v[4]}
  local score = v[5] or d(now_ms())
  for _, kind in ipairs({'type', 'customer', 'class', 'run'}) do
    local val = vals[kind]
    if val and val ~= '' then
      local z = p .. ':dead-by:' .. kind .. ':' .. val
      local f = p .. ':dead-facets:' .. kind
      if add then
        if redis.call('ZADD', z, score, jid) == 1 then redis.call('HINCRBY', f, val, 1) end
      elseif redis.call('ZREM', z, jid) == 1 then
        if redis.call('HINCRBY', f, val, -1) <= 0 then redis.call('HDEL', f, val) end
      end
    end
  end
  for _, w in ipairs((words(dead_text(v)))) do
    local z = p .. ':dead-by:word:' .. w
    if not add then
      redis.call('ZREM', z, jid)
    elseif redis.call('SISMEMBER', p .. ':dead-words-common', w) == 0 then
      redis.call('ZADD', z, score, jid)
      -- A word this common selects nothing a scan would not find as fast: drop its zset
      -- and check it per candidate from now on (bounds the index's memory).
      if redis.call('ZCARD', z) > COMMON_WORD then
        redis.call('SADD', p .. ':dead-words-common', w)
        redis.call('DEL', z)
      end
    end
  end
end

-- The batch countdown. Call when job `jid` has just become succeeded (`ok`) or dead. Counts
-- only when the job is still in its batch's pending set (a replayed job never is, nor is a
-- job counted before), and enqueues the completion job when that set is empty.
-- A dead job marked `notify_dead` gets its DeathNotice job (id `<jid>.died`, so once).
local function death_notice(p, jid, now)
  local v = redis.call('HMGET', p .. ':job:' .. jid, 'notify_dead', 'type', 'customer', 'run')
  if not v[1] then return end
  local customer = v[3] or nil
  local run = v[4] or nil
  local per_type = {}
  enqueue_job(p, 0, {id = jid .. '.died', type = 'DeathNotice', customer = customer, run = run, delay_ms = 0,
    payload = cjson.encode({job_id = jid, job_type = v[2], customer = customer, run = run})}, now, per_type)
  count_enqueued(p, per_type)
end

local function batch_terminal(p, jid, ok, now)
  if not ok then death_notice(p, jid, now) end
  local bid = redis.call('HGET', p .. ':job:' .. jid, 'batch')
  if not bid then return end
  local pk = p .. ':batch-pending:' .. bid
  if redis.call('SREM', pk, jid) == 0 then return end
  local bk = p .. ':batch:' .. bid
  if ok then
    redis.call('HINCRBY', bk, 'succeeded', 1)
  else
    local dk = p .. ':batch-dead:' .. bid
    redis.call('RPUSH', dk, jid)
    local ttl = redis.call('PTTL', bk)
    if ttl > 0 then redis.call('PEXPIRE', dk, ttl) end
  end
  if redis.call('SCARD', pk) == 0 then complete_batch(p, bid, now) end
end
";

pub(crate) fn script(body: &str) -> Script {
    Script::new(&format!("{HELPERS}{}{body}", duration_helper()))
}

/// `observe_duration(cnt, started, finished)`: counts one attempt's duration in the job type's
/// counters hash: `dur_count`, `dur_sum_ms`, and `dur_le:B` for the first bucket bound `B`
/// (ms) it does not exceed (`dur_le:inf` beyond the last). Buckets are stored non-cumulative.
fn duration_helper() -> String {
    let bounds: Vec<String> = crate::model::ATTEMPT_DURATION_BUCKETS_MS
        .iter()
        .map(u64::to_string)
        .collect();
    format!(
        r"
local DURATION_BUCKETS_MS = {{{}}}
local function observe_duration(cnt, started, finished)
  local ms = math.max(0, (tonumber(finished) or 0) - (tonumber(started) or 0))
  local field = 'dur_le:inf'
  for _, b in ipairs(DURATION_BUCKETS_MS) do
    if ms <= b then field = 'dur_le:' .. d(b); break end
  end
  redis.call('HINCRBY', cnt, field, 1)
  redis.call('HINCRBY', cnt, 'dur_count', 1)
  redis.call('HINCRBY', cnt, 'dur_sum_ms', d(ms))
end
",
        bounds.join(", ")
    )
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
  out[i] = enqueue_job(p, ttl, j, now, per_type)
end
count_enqueued(p, per_type)
return out
",
    )
});

/// ARGV: prefix, idempotency ttl ms, batch id, retention ms, JSON array of children, JSON
/// completion job (with `idem_ttl`). Returns `{'exists', child ids}` (nothing written),
/// `{'conflict', {job id, other batch}}` (nothing written) or `{'created', child ids}`.
///
/// A child whose idempotency key is held joins as the holder: counted at once when the
/// holder is succeeded (as succeeded) or dead, replayed or gone (as dead), else pending and
/// tagged with this batch; a holder still pending in another batch is a conflict.
pub(crate) static ENQUEUE_BATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ttl, bid, ret = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local bk = p .. ':batch:' .. bid
local pk = p .. ':batch-pending:' .. bid
local dk = p .. ':batch-dead:' .. bid
local ck = p .. ':batch-children:' .. bid
if redis.call('EXISTS', bk) == 1 then
  return {'exists', redis.call('LRANGE', ck, 0, -1)}
end
local terminal = {succeeded = true, dead = true, replayed = true}
local children = cjson.decode(ARGV[5])
for _, j in ipairs(children) do
  if j.idem then
    local holder = redis.call('GET', p .. ':idem:' .. j.idem)
    if holder then
      local v = redis.call('HMGET', p .. ':job:' .. holder, 'state', 'batch')
      if v[1] and not terminal[v[1]] and v[2] and v[2] ~= bid then
        return {'conflict', {holder, v[2]}}
      end
    end
  end
end
local now = now_ms()
local per_type = {}
local ids = {}
local seen = {}
local succeeded, dead = 0, 0
for i, j in ipairs(children) do
  j.batch = bid
  local r = enqueue_job(p, ttl, j, now, per_type)
  local id = string.sub(r, 5)
  ids[i] = id
  redis.call('RPUSH', ck, id)
  if not seen[id] then
    seen[id] = true
    if string.sub(r, 1, 3) == 'new' then
      redis.call('SADD', pk, id)
    else
      local h = p .. ':job:' .. id
      local state = redis.call('HGET', h, 'state')
      if state == 'succeeded' then
        succeeded = succeeded + 1
      elseif (not state) or terminal[state] then
        redis.call('RPUSH', dk, id)
        dead = dead + 1
      else
        redis.call('SADD', pk, id)
        if not redis.call('HGET', h, 'batch') then redis.call('HSET', h, 'batch', bid) end
      end
    end
  end
end
count_enqueued(p, per_type)
local total = redis.call('SCARD', pk) + succeeded + dead
redis.call('HSET', bk, 'total', total, 'succeeded', succeeded, 'created_at', d(now),
  'on_complete', ARGV[6])
for _, k in ipairs({bk, pk, dk, ck}) do
  if redis.call('EXISTS', k) == 1 then redis.call('PEXPIRE', k, ret) end
end
if redis.call('SCARD', pk) == 0 then complete_batch(p, bid, now) end
return {'created', ids}
",
    )
});

/// ARGV: prefix, type, group, consumer, count.
/// Returns `{'empty'}` or `{'jobs', eid, jid, payload, attempts, customer, replay_of, enqueued_at,
/// batch, snoozed_ms, ...}`. Fetching does not mark a job as started: a fetched job may wait in the
/// worker's buffer; `START` records the start when its handler begins.
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = p .. ':stream:' .. ty
local res = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', n, 'STREAMS', s, '>')
if not res then return {'empty'} end
local out = {'jobs'}
for _, e in ipairs(res[1][2]) do
  local eid = e[1]
  local jid = e[2] and e[2][2]
  local v = nil
  if jid then
    v = redis.call('HMGET', p .. ':job:' .. jid, 'payload', 'attempts', 'customer', 'replay_of', 'enqueued_at',
      'batch', 'snoozed_ms')
  end
  if not v or not v[1] then
    redis.call('XACK', s, g, eid)
    redis.call('XDEL', s, eid)
  else
    local row = {eid, jid, v[1], v[2] or '0', v[3] or '', v[4] or '', v[5] or '0', v[6] or '', v[7] or '0'}
    for _, x in ipairs(row) do table.insert(out, x) end
  end
end
return out
",
    )
});

/// ARGV: prefix, type, group, consumer, then pairs of entry id and job id. Records that the
/// handlers of these jobs begin now (state `running`, the worker, `started_at`, and the entry
/// id as `started_entry`: `RECLAIM` counts a job as orphaned only when its current entry had
/// started). Returns per pair `ok`, or `stale` when the entry is no longer this worker's.
pub(crate) static START: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local s = p .. ':stream:' .. ty
local now = d(now_ms())
local res = {}
for i = 5, #ARGV, 2 do
  local eid, jid = ARGV[i], ARGV[i + 1]
  if #redis.call('XPENDING', s, g, eid, eid, 1, c) > 0 then
    redis.call('HSET', p .. ':job:' .. jid, 'state', 'running', 'worker', c, 'started_at', now,
      'started_entry', eid)
    table.insert(res, 'ok')
  else
    table.insert(res, 'stale')
  end
end
return res
",
    )
});

/// ARGV: prefix, type, group, consumer, retention ms, error-log max length, JSON failures,
/// then groups of four for successes: job id, entry id, started ms, finished ms (plus a log
/// flag `1` when the job has failed attempts whose log must expire too, else `0`: five).
/// A failure with `snooze_ms >= 0` is a snooze, not a failure: the job waits that long
/// (state `retrying`, due at `run_at`) without spending an attempt, and its `snoozes` and
/// `snoozed_ms` grow; nothing goes to the error log (the worker decided it is within the
/// job type's snooze limit).
/// Returns per success then per failure `ok`, `retry`, `snoozed`, `dead` or `stale` (no longer ours).
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
    observe_duration(cnt, started, finished)
    batch_terminal(p, jid, true, now)
    succeeded = succeeded + 1
    table.insert(res, 'ok')
  else
    table.insert(res, 'stale')
  end
end
if succeeded > 0 then
  redis.call('HINCRBY', cnt, 'succeeded', succeeded)
  hourly(p, 'succeeded', now, succeeded)
end
for _, o in ipairs(fails) do
  if not owned(o.eid) then
    table.insert(res, 'stale')
  elseif o.snooze_ms >= 0 then
    local h = p .. ':job:' .. o.jid
    local due = d(now + o.snooze_ms)
    redis.call('HINCRBY', h, 'snoozes', 1)
    redis.call('HINCRBY', h, 'snoozed_ms', d(o.snooze_ms))
    redis.call('HSET', h, 'state', 'retrying', 'run_at', due, 'last_snooze', o.message,
      'last_snoozed_at', o.finished_at)
    redis.call('HDEL', h, 'worker')
    redis.call('ZADD', p .. ':delayed:' .. ty, due, o.jid)
    redis.call('HINCRBY', cnt, 'snoozed', 1)
    table.insert(res, 'snoozed')
  else
    local h = p .. ':job:' .. o.jid
    local customer = redis.call('HGET', h, 'customer') or ''
    redis.call('RPUSH', p .. ':log:' .. o.jid, o.log)
    redis.call('HSET', h, 'attempts', o.attempt, 'last_class', o.class, 'last_message', o.message,
      'last_failed_at', o.finished_at)
    redis.call('HDEL', h, 'worker')
    redis.call('HINCRBY', cnt, 'failed_attempts', 1)
    observe_duration(cnt, o.started_at, o.finished_at)
    hourly(p, 'failed', now)
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
      dead_index(p, o.jid, true)
      hourly(p, 'dead', now)
      redis.call('HINCRBY', cnt, 'dead', 1)
      batch_terminal(p, o.jid, false, now)
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
/// length, cursor. Takes over entries idle for longer than `min idle` whose owning worker's
/// last heartbeat is older than `min idle` too (or missing): idle time alone is not proof of
/// death, a live worker's entries also grow idle while Redis is unreachable. Puts them back
/// at the end of the stream; a job whose handler had started on that entry counts as
/// orphaned, and goes to the dead-letter queue (`abandoned`) once orphaned `max orphaned`
/// times. Returns `{cursor, requeued, dead}` (cursor `0-0` when the scan is done).
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idle, maxo, count, maxlen, cursor = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]
local s = p .. ':stream:' .. ty
local now = now_ms()
local cutoff = now - tonumber(idle)
local start = '-'
if cursor ~= '0-0' then start = '(' .. cursor end
local pending = redis.call('XPENDING', s, g, 'IDLE', idle, start, '+', count)
local alive = {}
local requeued, dead = 0, 0
for _, pe in ipairs(pending) do
  local eid, owner = pe[1], pe[2]
  if alive[owner] == nil then
    local beat = redis.call('ZSCORE', p .. ':workers', owner)
    alive[owner] = owner == c or (beat and tonumber(beat) >= cutoff) or false
  end
  local claimed = {}
  if not alive[owner] then claimed = redis.call('XCLAIM', s, g, c, idle, eid) end
  local e = claimed[1]
  if e then
    local jid = e[2] and e[2][2]
    redis.call('XACK', s, g, eid)
    redis.call('XDEL', s, eid)
    local h = jid and (p .. ':job:' .. jid)
    if h and redis.call('EXISTS', h) == 1 then
      local v = redis.call('HMGET', h, 'worker', 'started_entry', 'orphaned')
      local lost = v[1] or owner
      local orphaned = tonumber(v[3] or '0')
      if v[2] == eid then orphaned = redis.call('HINCRBY', h, 'orphaned', 1) end
      redis.call('HDEL', h, 'worker')
      if v[2] == eid and orphaned >= maxo then
        local attempt = tonumber(redis.call('HGET', h, 'attempts') or '0') + 1
        local customer = redis.call('HGET', h, 'customer') or ''
        local msg = 'worker ' .. lost .. ' died while running this job (' .. orphaned .. ' workers lost on it)'
        redis.call('RPUSH', p .. ':log:' .. jid, cjson.encode({attempt = attempt, started_at = d(now),
          finished_at = d(now), class = 'job.abandoned', retriable = false, message = msg, chain = {msg}, worker = lost}))
        redis.call('HSET', h, 'attempts', attempt, 'last_class', 'job.abandoned', 'last_message', msg,
          'last_failed_at', d(now), 'state', 'dead', 'dead_at', d(now), 'final_class', 'job.abandoned')
        redis.call('ZADD', p .. ':dead', d(now), jid)
        dead_index(p, jid, true)
        hourly(p, 'failed', now)
        hourly(p, 'dead', now)
        redis.call('HINCRBY', p .. ':counters:' .. ty, 'failed_attempts', 1)
        redis.call('HINCRBY', p .. ':counters:' .. ty, 'dead', 1)
        redis.call('XADD', p .. ':errors', 'MAXLEN', '~', maxlen, '*', 'time', d(now), 'job_id', jid,
          'job_type', ty, 'customer', customer, 'attempt', attempt, 'class', 'job.abandoned', 'message', msg)
        batch_terminal(p, jid, false, now)
        dead = dead + 1
      else
        redis.call('XADD', s, '*', 'j', jid)
        redis.call('HSET', h, 'state', 'waiting')
        requeued = requeued + 1
      end
    end
  end
end
local next_cursor = '0-0'
if #pending >= count then next_cursor = pending[#pending][1] end
return {next_cursor, requeued, dead}
",
    )
});

/// ARGV: prefix, type, group, consumer, lost-after ms, entry ids... Records the worker's
/// heartbeat and resets the idle time of the entries it holds. Entries pending for this
/// worker that it does not hold and that are idle longer than `lost after` (a fetch whose
/// reply never arrived) go back to the stream: `RECLAIM` leaves a live worker's entries
/// alone, so nobody else would. Returns how many held entries it still owns.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, ty, g, c, lost_after = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = p .. ':stream:' .. ty
redis.call('ZADD', p .. ':workers', d(now_ms()), c)
local kept = 0
local held = {}
for i = 6, #ARGV do
  local eid = ARGV[i]
  held[eid] = true
  if #redis.call('XPENDING', s, g, eid, eid, 1, c) > 0 then
    redis.call('XCLAIM', s, g, c, 0, eid, 'JUSTID')
    kept = kept + 1
  end
end
if redis.call('EXISTS', s) == 1 then
  for _, pe in ipairs(redis.call('XPENDING', s, g, 'IDLE', lost_after, '-', '+', 100, c)) do
    local eid = pe[1]
    if not held[eid] then
      local e = redis.call('XRANGE', s, eid, eid)[1]
      local jid = e and e[2] and e[2][2]
      redis.call('XACK', s, g, eid)
      redis.call('XDEL', s, eid)
      if jid and redis.call('EXISTS', p .. ':job:' .. jid) == 1 then
        redis.call('XADD', s, '*', 'j', jid)
        redis.call('HSET', p .. ':job:' .. jid, 'state', 'waiting')
      end
    end
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
/// job's state when it is not dead. The new job keeps the dead letter's `batch` (handlers see
/// which run it belongs to) but is never in the batch's pending set, so it does not count
/// down again: the batch counted the death already.
pub(crate) static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, old, new, by, ret = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local h = p .. ':job:' .. old
local v = redis.call('HMGET', h, 'type', 'payload', 'customer', 'final_class', 'state', 'batch', 'run', 'notify_dead')
if not v[1] then return 'missing' end
if redis.call('ZREM', p .. ':dead', old) == 0 then return v[5] or 'unknown' end
dead_index(p, old, false)
local now = d(now_ms())
local nh = p .. ':job:' .. new
redis.call('HSET', nh, 'type', v[1], 'payload', v[2], 'attempts', 0, 'enqueued_at', now, 'state', 'waiting',
  'replay_of', old, 'replayed_by', by, 'replayed_at', now)
if v[3] then redis.call('HSET', nh, 'customer', v[3]) end
if v[6] then redis.call('HSET', nh, 'batch', v[6]) end
if v[7] then redis.call('HSET', nh, 'run', v[7]) end
if v[8] then redis.call('HSET', nh, 'notify_dead', v[8]) end
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
dead_index(p, id, false)
redis.call('DEL', h, p .. ':log:' .. id)
redis.call('HINCRBY', p .. ':counters:' .. v[1], 'dead', -1)
redis.call('HINCRBY', p .. ':counters:' .. v[1], 'deleted', 1)
redis.call('XADD', p .. ':audit', '*', 'action', 'delete', 'job_id', id, 'new_job_id', '', 'by', by,
  'time', d(now_ms()), 'job_type', v[1], 'customer', v[2] or '', 'error_class', v[3] or '')
return 'ok'
",
    )
});

/// KEYS: the lock. ARGV: owner, ttl ms. Takes the lock when free, or renews it when
/// `owner` holds it already. Returns `{'acquired', owner, ttl}` or `{'held', owner, ttl left}`.
pub(crate) static TRY_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local k, owner, ttl = KEYS[1], ARGV[1], ARGV[2]
if redis.call('SET', k, owner, 'NX', 'PX', ttl) then return {'acquired', owner, tonumber(ttl)} end
local cur = redis.call('GET', k)
if cur == owner then
  redis.call('PEXPIRE', k, ttl)
  return {'acquired', owner, tonumber(ttl)}
end
return {'held', cur, redis.call('PTTL', k)}
",
    )
});

/// KEYS: the pacing slot. ARGV: interval ms. Reserves the next slot `interval` after the
/// last one reserved (or now, when that is past) and returns the ms to wait for it.
pub(crate) static RESERVE_SLOT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local k, interval = KEYS[1], tonumber(ARGV[1])
local now = now_ms()
local slot = tonumber(redis.call('GET', k) or '0')
if slot < now then slot = now end
redis.call('SET', k, d(slot + interval), 'PX', d(slot + interval - now + 60000))
return slot - now
",
    )
});

/// KEYS: the lock. ARGV: owner, ttl ms. Renews the lock when `owner` holds it; returns 1,
/// else 0.
pub(crate) static EXTEND_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: the lock. ARGV: owner. Deletes the lock when `owner` holds it; returns 1, else 0.
pub(crate) static RELEASE_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// KEYS: the lock, its holders zset. ARGV: group owner, holder, ttl ms. A lock shared by
/// the holders of one group: taken for `group` when free (stale holders of an earlier hold
/// are dropped), joined when `group` holds it already. Each holder is kept in the zset with
/// its own expiry (now + ttl); the lock lives at least ttl from now. Returns
/// `{'acquired', group, ttl}` or `{'held', owner, ttl left}` (someone outside the group).
pub(crate) static TRY_SHARED_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local k, hk, group, holder, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('GET', k)
if not cur then
  redis.call('DEL', hk)
  redis.call('SET', k, group, 'PX', ttl)
elseif cur ~= group then
  return {'held', cur, redis.call('PTTL', k)}
elseif redis.call('PTTL', k) < ttl then
  redis.call('PEXPIRE', k, ttl)
end
redis.call('ZADD', hk, d(now_ms() + ttl), holder)
redis.call('PEXPIRE', hk, redis.call('PTTL', k))
return {'acquired', group, ttl}
",
    )
});

/// KEYS: the lock, its holders zset. ARGV: group owner, holder, ttl ms. Renews `holder`'s
/// hold (and the lock, to at least ttl from now) while `group` holds the lock; returns 1,
/// else 0.
pub(crate) static EXTEND_SHARED_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local k, hk, group, holder, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('GET', k) ~= group then return 0 end
if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
redis.call('ZADD', hk, d(now_ms() + ttl), holder)
redis.call('PEXPIRE', hk, redis.call('PTTL', k))
return 1
",
    )
});

/// KEYS: the lock, its holders zset. ARGV: group owner, holder. Ends `holder`'s hold while
/// `group` holds the lock; holders whose expiry has passed (they stopped renewing: crashed)
/// are dropped, and the last holder deletes the lock. Returns 0 (the lock is not the
/// group's: nothing done), 1 (the lock was freed) or 2 (other holders keep it).
pub(crate) static RELEASE_SHARED_LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local k, hk, group, holder = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if redis.call('GET', k) ~= group then return 0 end
redis.call('ZREM', hk, holder)
redis.call('ZREMRANGEBYSCORE', hk, '-inf', d(now_ms()))
if redis.call('ZCARD', hk) == 0 then
  redis.call('DEL', k, hk)
  return 1
end
return 2
",
    )
});

/// KEYS[1]: a value key. ARGV: ttl ms. Increments the counter and sets its expiry when this
/// call created it, so a window counter never outlives its window.
pub(crate) static INCREMENT_VALUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
",
    )
});

/// ARGV: collection base key, id, index (`''`: none), JSON, retention ms. Stores the record
/// (`base:doc:ID` hash: json, created, index) for `retention` from now. It keeps the
/// creation time of a record that exists, so the lists (`base:all` and `base:by:INDEX`,
/// zsets by creation time) order by first creation; a changed index moves it between
/// index lists. The lists live at least as long as their newest record.
pub(crate) static PUT_RECORD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local base, id, idx, json, ret = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local dk = base .. ':doc:' .. id
local old = redis.call('HMGET', dk, 'created', 'index')
local created = old[1] or d(now_ms())
if old[2] and old[2] ~= '' and old[2] ~= idx then redis.call('ZREM', base .. ':by:' .. old[2], id) end
redis.call('HSET', dk, 'json', json, 'created', created, 'index', idx)
redis.call('PEXPIRE', dk, ret)
local function list(k)
  redis.call('ZADD', k, created, id)
  if redis.call('PTTL', k) < ret then redis.call('PEXPIRE', k, ret) end
end
list(base .. ':all')
if idx ~= '' then list(base .. ':by:' .. idx) end
return 'ok'
",
    )
});

/// ARGV: collection base key, index (`''`: all), limit. Returns up to `limit` record JSON
/// documents, newest first, and drops list entries whose record has expired.
pub(crate) static LIST_RECORDS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local base, idx, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local z = base .. ':all'
if idx ~= '' then z = base .. ':by:' .. idx end
local out = {}
local start = 0
while #out < limit do
  local ids = redis.call('ZREVRANGE', z, start, start + 99)
  if #ids == 0 then break end
  local gone = 0
  for _, id in ipairs(ids) do
    local json = redis.call('HGET', base .. ':doc:' .. id, 'json')
    if json then
      if #out < limit then table.insert(out, json) end
    else
      redis.call('ZREM', z, id)
      gone = gone + 1
    end
  end
  start = start + #ids - gone
end
return out
",
    )
});

/// ARGV: prefix, JSON filter `{type?, customer?, class?, run?, q?}` (`q` lower-cased), min
/// score, max score, cursor score (`''`: none), cursor id, limit, budget. One page of dead
/// letters, newest first: scans the smallest of the filter's index zsets, the free text's
/// word zsets among them (a common word has none; or all dead letters) from the cursor down, checks the other
/// filters and that every word of the free text is a word of the candidate's text, and stops at `limit` matches or after examining `budget` candidates. Returns
/// `{status, cursor score, cursor id, ids...}`: status `full` (page filled; the cursor is the
/// last match), `more` (budget spent; continue from the cursor) or `done` (index exhausted).
pub(crate) static DEAD_PAGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, f = ARGV[1], cjson.decode(ARGV[2])
local min, max, cs, cid = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local limit, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local z = p .. ':dead'
local best = -1
local candidates = {}
for _, kind in ipairs({'type', 'customer', 'class', 'run'}) do
  if f[kind] then table.insert(candidates, p .. ':dead-by:' .. kind .. ':' .. f[kind]) end
end
local qwords = {}
if f.q then
  qwords = words(f.q)
  for _, w in ipairs(qwords) do
    if redis.call('SISMEMBER', p .. ':dead-words-common', w) == 0 then
      table.insert(candidates, p .. ':dead-by:word:' .. w)
    end
  end
end
for _, k in ipairs(candidates) do
  local n = redis.call('ZCARD', k)
  if best < 0 or n < best then best = n; z = k end
end
if best == 0 then return {'done', '', ''} end
if cs ~= '' then
  if max == '+inf' or tonumber(cs) < tonumber(max) then max = cs end
end
local out = {}
local examined, offset = 0, 0
local last_s, last_id = '', ''
while examined < budget do
  local rows = redis.call('ZREVRANGEBYSCORE', z, max, min, 'WITHSCORES', 'LIMIT', offset, 200)
  if #rows == 0 then return {'done', last_s, last_id, unpack(out)} end
  offset = offset + #rows / 2
  for i = 1, #rows, 2 do
    local id, s = rows[i], rows[i + 1]
    local skip = cs ~= '' and s == cs and id >= cid
    if not skip then
      examined = examined + 1
      last_s, last_id = s, id
      local v = redis.call('HMGET', p .. ':job:' .. id, 'type', 'customer', 'final_class', 'run', 'dead_at', 'last_message')
      local ok = (not f.type or v[1] == f.type) and (not f.customer or v[2] == f.customer)
        and (not f.class or v[3] == f.class) and (not f.run or v[4] == f.run)
      if ok and #qwords > 0 then
        local _, has = words(dead_text(v))
        for _, w in ipairs(qwords) do
          if not has[w] then ok = false; break end
        end
      end
      if ok then
        table.insert(out, id)
        if #out >= limit then return {'full', s, id, unpack(out)} end
      end
      if examined >= budget then return {'more', s, id, unpack(out)} end
    end
  end
end
return {'more', last_s, last_id, unpack(out)}
",
    )
});

/// ARGV: prefix, start, count. Adds dead letters `start .. start + count` (oldest first) to
/// the dead-letter index (dead letters from before the index existed); marks the index
/// complete when the end is reached. Returns how many it looked at.
pub(crate) static INDEX_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', p .. ':dead', start, start + count - 1)
for _, id in ipairs(ids) do dead_index(p, id, true) end
if #ids < count then redis.call('SET', p .. ':dead-indexed:2', '1') end
return #ids
",
    )
});

/// ARGV: prefix, state (`scheduled`, `retrying` or `running`), customer (`''`: any), run
/// (`''`: any), limit. Job ids in that state, per job type: scheduled and retrying by due
/// time (soonest first), running in stream order.
pub(crate) static JOBS_IN_STATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local p, state, cust, run, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
local types = redis.call('SMEMBERS', p .. ':types')
table.sort(types)
local function keep(id)
  local v = redis.call('HMGET', p .. ':job:' .. id, 'state', 'customer', 'run')
  return v[1] == state and (cust == '' or v[2] == cust) and (run == '' or v[3] == run)
end
for _, ty in ipairs(types) do
  if state == 'running' then
    local s = p .. ':stream:' .. ty
    if redis.call('EXISTS', s) == 1 then
      for _, pe in ipairs(redis.call('XPENDING', s, 'workers', '-', '+', 10000)) do
        local e = redis.call('XRANGE', s, pe[1], pe[1])[1]
        local jid = e and e[2] and e[2][2]
        if jid and keep(jid) then
          table.insert(out, jid)
          if #out >= limit then return out end
        end
      end
    end
  else
    local z = p .. ':delayed:' .. ty
    local offset = 0
    while true do
      local ids = redis.call('ZRANGE', z, offset, offset + 499)
      if #ids == 0 then break end
      offset = offset + #ids
      for _, id in ipairs(ids) do
        if keep(id) then
          table.insert(out, id)
          if #out >= limit then return out end
        end
      end
    end
  end
end
return out
",
    )
});
