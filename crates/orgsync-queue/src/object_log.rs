//! Object logs: an append-only history per object (a department, a user) with retention,
//! looked up by the object's id or an alias (a user name, an e-mail), and scanned newest first
//! by time. What orgsync's provisioning log and `orgsync explain` are built on.
//!
//! In Redis, a log is a stream (entry ids are millisecond times, so retention is a
//! `MINID` trim and a time range is an `XRANGE`), an index hash `object -> [[entry id,
//! fingerprint], ...]` (newest last, at most `per_object`), and an alias hash `alias ->
//! object`. An entry whose fingerprint equals the object's newest one is not appended again
//! (a user skipped for the same reason every night adds one entry, not one per night), so a
//! run without changes adds nothing.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::{AsyncCommands, Script};

use crate::client::QueueHandle;
use crate::error::QueueError;
use crate::scripts::script;

/// One entry to append.
#[derive(Clone, Debug)]
pub struct ObjectLogEntry {
    /// The object's id (a UUID, say).
    pub object: String,
    /// Other names it is found by (case-insensitive): user name, e-mail.
    pub aliases: Vec<String>,
    /// Equal fingerprints in a row are kept once (`""`: always append).
    pub fingerprint: String,
    /// The entry, as the caller encodes it (JSON).
    pub payload: Vec<u8>,
}

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLogEntry {
    /// Its id: a cursor for [`QueueHandle::scan_object_log`].
    pub id: String,
    /// When it was appended (from the id).
    pub at: DateTime<Utc>,
    /// The object.
    pub object: String,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

/// Entries appended per script call.
const CHUNK: usize = 500;

/// KEYS: stream, index, alias. ARGV: min id ms, per object, ttl ms, n, then per entry: object,
/// fingerprint, payload, n aliases, aliases. Returns the number appended.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local stream, idx, alias = KEYS[1], KEYS[2], KEYS[3]
local minid, per, ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function ms_of(id) return tonumber(string.match(id, '^(%d+)')) end
local i, added = 5, 0
for _ = 1, n do
  local obj, fp, payload, na = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local list = {}
  local raw = redis.call('HGET', idx, obj)
  if raw then list = cjson.decode(raw) end
  local last = list[#list]
  if not (last and fp ~= '' and last[2] == fp) then
    local id = redis.call('XADD', stream, 'MINID', d(minid), '*', 'o', obj, 'p', payload)
    table.insert(list, {id, fp})
    added = added + 1
  end
  local keep = {}
  for _, it in ipairs(list) do
    if ms_of(it[1]) >= minid then table.insert(keep, it) end
  end
  while #keep > per do table.remove(keep, 1) end
  if #keep == 0 then redis.call('HDEL', idx, obj) else redis.call('HSET', idx, obj, cjson.encode(keep)) end
  for _ = 1, na do
    redis.call('HSET', alias, string.lower(ARGV[i]), obj)
    i = i + 1
  end
end
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then redis.call('PEXPIRE', k, ttl) end
end
return added
",
    )
});

/// KEYS: stream, index, alias. ARGV: object or alias, min id ms, limit. Returns a flat list
/// `id, object, payload, ...`, newest first.
static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local stream, idx, alias = KEYS[1], KEYS[2], KEYS[3]
local key, minid, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local obj = key
local raw = redis.call('HGET', idx, obj)
if not raw then
  obj = redis.call('HGET', alias, string.lower(key))
  if not obj then return {} end
  raw = redis.call('HGET', idx, obj)
  if not raw then return {} end
end
local list = cjson.decode(raw)
local out = {}
for j = #list, 1, -1 do
  if #out >= 3 * limit then break end
  local id = list[j][1]
  if tonumber(string.match(id, '^(%d+)')) >= minid then
    local e = redis.call('XRANGE', stream, id, id)
    if e[1] then
      local f = e[1][2]
      local payload
      for k = 1, #f, 2 do if f[k] == 'p' then payload = f[k + 1] end end
      if payload then
        table.insert(out, id); table.insert(out, obj); table.insert(out, payload)
      end
    end
  end
end
return out
",
    )
});

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn min_id_ms(retention: Duration) -> i64 {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(retention)
        .map_or(0, |t| t.timestamp_millis())
}

fn time_of(id: &str) -> DateTime<Utc> {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_default()
}

fn validate_log(log: &str) -> Result<(), QueueError> {
    let ok = !log.is_empty()
        && log.len() <= 100
        && log
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidName {
            kind: "object log",
            name: log.to_owned(),
            rule: "use 1 to 100 ASCII letters, digits, '_', '-', '.' or ':'",
        })
    }
}

type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

impl QueueHandle {
    fn object_log_keys(&self, log: &str) -> [String; 3] {
        let base = self.keys.object_log(log);
        [base.clone(), format!("{base}:idx"), format!("{base}:alias")]
    }

    /// Appends `entries` to `log`, keeping entries for `retention` and at most `per_object`
    /// per object. Returns how many were appended (an entry repeating its object's newest
    /// fingerprint is not).
    pub async fn append_object_log(
        &self,
        log: &str,
        entries: &[ObjectLogEntry],
        retention: Duration,
        per_object: usize,
    ) -> Result<u64, QueueError> {
        validate_log(log)?;
        let keys = self.object_log_keys(log);
        let mut conn = self.conn.clone();
        let mut added = 0;
        for chunk in entries.chunks(CHUNK) {
            let mut invocation = APPEND.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation
                .arg(min_id_ms(retention))
                .arg(per_object.max(1))
                .arg(ms(retention))
                .arg(chunk.len());
            for entry in chunk {
                invocation
                    .arg(&entry.object)
                    .arg(&entry.fingerprint)
                    .arg(&entry.payload)
                    .arg(entry.aliases.len());
                for alias in &entry.aliases {
                    invocation.arg(alias);
                }
            }
            let n: u64 = invocation.invoke_async(&mut conn).await?;
            added += n;
        }
        Ok(added)
    }

    /// The history of one object, found by its id or an alias, newest first, at most `limit`
    /// entries within `retention`.
    pub async fn object_history(
        &self,
        log: &str,
        object_or_alias: &str,
        retention: Duration,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, QueueError> {
        validate_log(log)?;
        let keys = self.object_log_keys(log);
        let mut conn = self.conn.clone();
        let mut invocation = HISTORY.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        let flat: Vec<Vec<u8>> = invocation
            .arg(object_or_alias)
            .arg(min_id_ms(retention))
            .arg(limit.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(flat
            .chunks_exact(3)
            .map(|c| {
                let id = String::from_utf8_lossy(&c[0]).into_owned();
                StoredLogEntry {
                    at: time_of(&id),
                    id,
                    object: String::from_utf8_lossy(&c[1]).into_owned(),
                    payload: c[2].clone(),
                }
            })
            .collect())
    }

    /// Up to `limit` entries of `log`, newest first, between `since` and `until` (inclusive),
    /// starting after cursor `before` (an entry id from a previous page).
    pub async fn scan_object_log(
        &self,
        log: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredLogEntry>, QueueError> {
        validate_log(log)?;
        let [stream, ..] = self.object_log_keys(log);
        let end = match before {
            Some(id) => format!("({id}"),
            None => until.map_or("+".to_owned(), |t| t.timestamp_millis().to_string()),
        };
        let start = since.map_or("-".to_owned(), |t| t.timestamp_millis().to_string());
        let mut conn = self.conn.clone();
        let entries: StreamEntries = conn
            .xrevrange_count(&stream, &end, &start, limit.max(1))
            .await?;
        Ok(entries
            .into_iter()
            .filter(|(id, _)| until.is_none_or(|u| time_of(id) <= u))
            .filter_map(|(id, fields)| {
                let mut object = None;
                let mut payload = None;
                for (name, value) in fields {
                    match name.as_str() {
                        "o" => object = Some(String::from_utf8_lossy(&value).into_owned()),
                        "p" => payload = Some(value),
                        _ => {}
                    }
                }
                Some(StoredLogEntry {
                    at: time_of(&id),
                    id,
                    object: object?,
                    payload: payload?,
                })
            })
            .collect())
    }

    /// How many entries `log` holds and how many bytes Redis uses for it (`MEMORY USAGE` of
    /// its keys), for measurements and `/metrics`.
    pub async fn object_log_usage(&self, log: &str) -> Result<(u64, u64), QueueError> {
        validate_log(log)?;
        let keys = self.object_log_keys(log);
        let mut conn = self.conn.clone();
        let entries: u64 = conn.xlen(&keys[0]).await?;
        let mut bytes = 0u64;
        for key in &keys {
            let used: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            bytes += used.unwrap_or(0);
        }
        Ok((entries, bytes))
    }
}
