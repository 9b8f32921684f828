//! What an operations dashboard needs from the queue: pages of dead letters through their
//! index (filters, free text, cursor paging, newest first), counts and facets, jobs by state
//! (scheduled, retrying, running), replay chains, hourly outcome counts and the audit log in
//! pages.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use serde::Serialize;

use crate::client::{QueueHandle, parse_audit, parse_log};
use crate::error::QueueError;
use crate::model::{AuditEntry, DeadLetterFilter, JobId, JobRecord, JobState};
use crate::scripts;

/// Candidates the index scan examines per script call: keeps every call short so Redis
/// serves other clients between them.
const SCAN_BUDGET: u32 = 5_000;

/// Script calls one page may make: a free-text search that matches little stops after
/// `PAGE_CALLS * SCAN_BUDGET` candidates with a short page and a cursor to search on, so a
/// page answers in bounded time however many dead letters there are.
const PAGE_CALLS: usize = 1;

/// One page of dead letters, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterPage {
    /// The dead letters.
    pub items: Vec<JobRecord>,
    /// Pass as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One value of a dead-letter facet and how many dead letters have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facet {
    /// The value (a CVR, a job type, an error class).
    pub value: String,
    /// Dead letters with it.
    pub count: u64,
}

/// The distinct customers, job types and error classes of the dead letters now, with counts
/// (most first): what a filter form offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterFacets {
    /// Customers.
    pub customers: Vec<Facet>,
    /// Job types.
    pub job_types: Vec<Facet>,
    /// Final error classes.
    pub error_classes: Vec<Facet>,
}

/// Outcomes in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// Start of the hour (UTC).
    pub hour: DateTime<Utc>,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Jobs that went to the dead-letter queue.
    pub dead: u64,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPage {
    /// The lines.
    pub items: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<String>,
}

fn invalid_cursor(cursor: &str) -> QueueError {
    QueueError::InvalidName {
        kind: "cursor",
        name: cursor.to_owned(),
        rule: "pass back the next_cursor of a previous page unchanged",
    }
}

/// `score:id`.
fn parse_cursor(cursor: &str) -> Result<(String, String), QueueError> {
    let (score, id) = cursor
        .split_once(':')
        .ok_or_else(|| invalid_cursor(cursor))?;
    if score.parse::<i64>().is_err() || id.is_empty() {
        return Err(invalid_cursor(cursor));
    }
    Ok((score.to_owned(), id.to_owned()))
}

fn filter_json(filter: &DeadLetterFilter) -> String {
    let mut f = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            f.insert(k.to_owned(), serde_json::Value::String(v.clone()));
        }
    };
    put("type", &filter.job_type);
    put("customer", &filter.customer);
    put("class", &filter.error_class);
    put("run", &filter.run);
    put("q", &filter.text.as_ref().map(|q| q.to_ascii_lowercase()));
    serde_json::Value::Object(f).to_string()
}

impl QueueHandle {
    /// Indexes dead letters from before the index existed, once per handle.
    async fn ensure_dead_index(&self) -> Result<(), QueueError> {
        if self.dead_indexed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let done: bool = conn.exists(self.keys.dead_indexed()).await?;
        if !done {
            let mut start = 0u64;
            loop {
                let n: u64 = scripts::INDEX_DEAD
                    .key(self.keys.types())
                    .arg(self.keys.prefix())
                    .arg(start)
                    .arg(2_000)
                    .invoke_async(&mut conn)
                    .await?;
                if n < 2_000 {
                    break;
                }
                start += n;
            }
        }
        self.dead_indexed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One script call: up to `limit` matching ids from the cursor on, and where to go on.
    async fn dead_scan(
        &self,
        filter: &DeadLetterFilter,
        cursor: Option<(String, String)>,
        limit: usize,
    ) -> Result<(String, Option<(String, String)>, Vec<String>), QueueError> {
        let mut conn = self.conn.clone();
        let min = filter
            .since
            .map(|t| t.timestamp_millis().to_string())
            .unwrap_or_else(|| "-inf".into());
        let max = filter
            .until
            .map(|t| t.timestamp_millis().to_string())
            .unwrap_or_else(|| "+inf".into());
        let (cs, cid) = cursor.unwrap_or_default();
        let mut reply: Vec<String> = scripts::DEAD_PAGE
            .key(self.keys.types())
            .arg(self.keys.prefix())
            .arg(filter_json(filter))
            .arg(min)
            .arg(max)
            .arg(cs)
            .arg(cid)
            .arg(limit)
            .arg(SCAN_BUDGET)
            .invoke_async(&mut conn)
            .await?;
        if reply.len() < 3 {
            return Err(QueueError::Protocol(format!("dead page replied {reply:?}")));
        }
        let ids = reply.split_off(3);
        let status = reply[0].clone();
        let next = (!reply[1].is_empty()).then(|| (reply[1].clone(), reply[2].clone()));
        Ok((status, next, ids))
    }

    /// One page of dead letters matching `filter`, newest first, from `cursor` (a previous
    /// page's `next_cursor`) on. Uses the dead-letter index: the smallest index of the
    /// filter's customer, job type, error class, run and free-text words is scanned, the rest
    /// is checked per candidate. Free text matches whole words, case-insensitively: every word
    /// of `text` must be a word of the dead letter's error message, final error class or
    /// customer (`quota exceeded` finds "... quota exceeded ...", `quot` does not). A word of
    /// more than 5,000 dead letters is common: it has no zset (memory) and is checked per
    /// candidate, which finds its many matches quickly. A page may hold fewer than `limit`
    /// with a `next_cursor` when the filters matched little among the 5,000 candidates one
    /// page examines: search on from there.
    pub async fn dead_letter_page(
        &self,
        filter: &DeadLetterFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, QueueError> {
        self.ensure_dead_index().await?;
        let limit = limit.clamp(1, 1_000);
        let mut cursor = cursor.map(parse_cursor).transpose()?;
        let mut ids: Vec<String> = Vec::new();
        let mut calls = 0;
        let next_cursor = loop {
            let (status, next, found) = self
                .dead_scan(filter, cursor.clone(), limit - ids.len())
                .await?;
            ids.extend(found);
            calls += 1;
            match status.as_str() {
                "full" => break next,
                "more" if next.is_some() && calls >= PAGE_CALLS => break next,
                "more" if next.is_some() => cursor = next,
                _ => break None,
            }
        };
        let ids: Vec<JobId> = ids.into_iter().map(JobId::new).collect();
        let items = self.jobs(&ids).await?.into_iter().flatten().collect();
        Ok(DeadLetterPage {
            items,
            next_cursor: next_cursor.map(|(s, id)| format!("{s}:{id}")),
        })
    }

    /// Every dead-letter id matching `filter`, newest first.
    pub async fn dead_letter_ids(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<JobId>, QueueError> {
        self.ensure_dead_index().await?;
        let mut cursor = None;
        let mut ids = Vec::new();
        loop {
            let (status, next, found) = self.dead_scan(filter, cursor, 10_000).await?;
            ids.extend(found.into_iter().map(JobId::new));
            match next {
                Some(next) if status != "done" => cursor = Some(next),
                _ => return Ok(ids),
            }
        }
    }

    /// How many dead letters match `filter` (what a "replay all matching" touches).
    pub async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, QueueError> {
        self.ensure_dead_index().await?;
        let indexed = [
            ("type", &filter.job_type),
            ("customer", &filter.customer),
            ("class", &filter.error_class),
            ("run", &filter.run),
        ];
        let given: Vec<_> = indexed.iter().filter(|(_, v)| v.is_some()).collect();
        let untimed = filter.since.is_none() && filter.until.is_none();
        if filter.text.is_none() && untimed && given.len() >= 2 {
            let keys: Vec<String> = given
                .iter()
                .filter_map(|(kind, v)| v.as_ref().map(|v| self.keys.dead_by(kind, v)))
                .collect();
            let mut conn = self.conn.clone();
            let n: u64 = redis::cmd("ZINTERCARD")
                .arg(keys.len())
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
            return Ok(n);
        }
        if filter.text.is_none() && given.len() <= 1 {
            let key = match given.first() {
                Some((kind, Some(value))) => self.keys.dead_by(kind, value),
                _ => self.keys.dead(),
            };
            let min = filter
                .since
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_else(|| "-inf".into());
            let max = filter
                .until
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_else(|| "+inf".into());
            let mut conn = self.conn.clone();
            let n: u64 = conn.zcount(key, min, max).await?;
            return Ok(n);
        }
        Ok(self.dead_letter_ids(filter).await?.len() as u64)
    }

    /// The distinct customers, job types and error classes among the dead letters.
    pub async fn dead_letter_facets(&self) -> Result<DeadLetterFacets, QueueError> {
        self.ensure_dead_index().await?;
        let mut conn = self.conn.clone();
        let (c, t, e): (
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
        ) = redis::pipe()
            .hgetall(self.keys.dead_facets("customer"))
            .hgetall(self.keys.dead_facets("type"))
            .hgetall(self.keys.dead_facets("class"))
            .query_async(&mut conn)
            .await?;
        let facets = |m: HashMap<String, i64>| {
            let mut v: Vec<Facet> = m
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(value, n)| Facet {
                    value,
                    count: u64::try_from(n).unwrap_or(0),
                })
                .collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
            v
        };
        Ok(DeadLetterFacets {
            customers: facets(c),
            job_types: facets(t),
            error_classes: facets(e),
        })
    }

    /// Several jobs at once (pipelined); `None` for ids no longer stored.
    pub async fn jobs(&self, ids: &[JobId]) -> Result<Vec<Option<JobRecord>>, QueueError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.hgetall(self.keys.job(id.as_str()))
                    .lrange(self.keys.log(id.as_str()), 0, -1);
            }
            let replies: Vec<(HashMap<String, String>, Vec<String>)> =
                pipe.query_async(&mut conn).await?;
            for (id, (hash, log)) in chunk.iter().zip(replies) {
                out.push(if hash.is_empty() {
                    None
                } else {
                    JobRecord::from_hash(id.as_str(), hash, parse_log(&log))
                });
            }
        }
        Ok(out)
    }

    /// Jobs in `state` (`Scheduled`, `Retrying` or `Running`; others are refused), of one
    /// customer and one run when given: scheduled and retrying soonest due first (`run_at` is
    /// the next attempt), running with their `worker`.
    pub async fn jobs_in_state(
        &self,
        state: JobState,
        customer: Option<&str>,
        run: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        if !matches!(
            state,
            JobState::Scheduled | JobState::Retrying | JobState::Running
        ) {
            return Err(QueueError::InvalidName {
                kind: "state",
                name: state.as_str().to_owned(),
                rule: "list jobs that are scheduled, retrying or running",
            });
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = scripts::JOBS_IN_STATE
            .key(self.keys.types())
            .arg(self.keys.prefix())
            .arg(state.as_str())
            .arg(customer.unwrap_or(""))
            .arg(run.unwrap_or(""))
            .arg(limit.max(1))
            .invoke_async(&mut conn)
            .await?;
        let ids: Vec<JobId> = ids.into_iter().map(JobId::new).collect();
        Ok(self.jobs(&ids).await?.into_iter().flatten().collect())
    }

    /// The replay chain `id` is part of, in order: the first dead letter, each replay of it,
    /// and the job that replaced it last (the *current* job; [`QueueHandle::current_job`]).
    /// Jobs no longer stored end the chain at that side.
    pub async fn replay_chain(&self, id: &JobId) -> Result<Vec<JobRecord>, QueueError> {
        let Some(start) = self.job(id).await? else {
            return Err(QueueError::NotFound(id.to_string()));
        };
        let mut back = Vec::new();
        let mut cur = start.replay_of.clone();
        while let Some(prev) = cur.take() {
            if back.len() >= 100 {
                break;
            }
            if let Some(r) = self.job(&prev).await? {
                cur = r.replay_of.clone();
                back.push(r);
            }
        }
        back.reverse();
        let mut next = start.replayed_as.clone();
        back.push(start);
        while let Some(n) = next.take() {
            if back.len() >= 200 {
                break;
            }
            if let Some(r) = self.job(&n).await? {
                next = r.replayed_as.clone();
                back.push(r);
            }
        }
        Ok(back)
    }

    /// The job that replaced `id` last through replays (itself when never replayed).
    pub async fn current_job(&self, id: &JobId) -> Result<JobRecord, QueueError> {
        self.replay_chain(id)
            .await?
            .pop()
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// Succeeded jobs, failed attempts and dead letters per hour over the last `hours` hours
    /// (kept 8 days), oldest first, the current hour last.
    pub async fn hourly_counts(&self, hours: u32) -> Result<Vec<HourCount>, QueueError> {
        let now_hour = Utc::now().timestamp().div_euclid(3600);
        let first = now_hour - i64::from(hours.clamp(1, 8 * 24)) + 1;
        let mut pipe = redis::pipe();
        let days: Vec<i64> = (first.div_euclid(24)..=now_hour.div_euclid(24)).collect();
        for day in &days {
            pipe.hgetall(self.keys.hourly(*day));
        }
        let mut conn = self.conn.clone();
        let maps: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
        let mut all: HashMap<String, u64> = HashMap::new();
        for m in maps {
            all.extend(m);
        }
        let get = |kind: &str, hour: i64| all.get(&format!("{kind}:{hour}")).copied().unwrap_or(0);
        Ok((first..=now_hour)
            .map(|h| HourCount {
                hour: Utc
                    .timestamp_opt(h * 3600, 0)
                    .single()
                    .unwrap_or_else(Utc::now),
                succeeded: get("succeeded", h),
                failed: get("failed", h),
                dead: get("dead", h),
            })
            .collect())
    }

    /// Audit lines (replays and deletes), newest first, older than `before` (a previous
    /// page's `next_before`).
    pub async fn audit_page(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, QueueError> {
        let mut conn = self.conn.clone();
        let end = match before {
            Some(b) => {
                let valid = b.split_once('-').is_some_and(|(ms, seq)| {
                    ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
                });
                if !valid {
                    return Err(invalid_cursor(b));
                }
                format!("({b}")
            }
            None => "+".to_owned(),
        };
        let limit = limit.clamp(1, 1_000);
        let page: StreamRangeReply = conn
            .xrevrange_count(self.keys.audit(), end, "-", limit + 1)
            .await?;
        let mut items: Vec<AuditEntry> = page.ids.iter().map(parse_audit).collect();
        let next_before = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.entry_id.clone())
        } else {
            None
        };
        Ok(AuditPage { items, next_before })
    }
}
