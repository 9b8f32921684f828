//! The run-state store: locks with an owner and expiry, opaque values and maps with
//! expiry, and JSON records with retention and one index. Keys live under `P:state:` and,
//! like every other key, are known only to this crate.

use std::time::Duration;

use redis::AsyncCommands;

use crate::client::QueueHandle;
use crate::error::QueueError;
use crate::scripts;

/// Map fields written per Redis call by [`QueueHandle::put_map_fields`].
const MAP_CHUNK: usize = 500;

/// The answer of [`QueueHandle::try_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// The lock is ours now, for the ttl given (also when we held it already: re-taking a
    /// lock we hold renews it, so a retried job with the same owner token gets it back).
    Acquired,
    /// Someone else holds it.
    Held {
        /// Their owner token.
        owner: String,
        /// Until it expires unless they extend it.
        ttl_left: Duration,
    },
}

/// The answer of [`QueueHandle::release_shared_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRelease {
    /// The lock is not the group's (expired, or someone else's): nothing was done.
    NotHeld,
    /// This was the last holder: the lock is free.
    Freed,
    /// Other holders of the group still hold it.
    Kept,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn validate_collection(collection: &str) -> Result<(), QueueError> {
    let ok = !collection.is_empty()
        && collection.len() <= 64
        && collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidName {
            kind: "collection",
            name: collection.to_owned(),
            rule: "use 1 to 64 ASCII letters, digits, '_', '-' or '.'",
        })
    }
}

impl QueueHandle {
    /// Reserves the next slot of pacer `name`: slots are `interval` apart across every process
    /// sharing this Redis (a system-wide calls-per-second limit). Returns how long the caller
    /// waits for its slot.
    pub async fn reserve_slot(
        &self,
        name: &str,
        interval: Duration,
    ) -> Result<Duration, QueueError> {
        let mut conn = self.conn.clone();
        // Whole milliseconds, rounded up: the rate may only come out lower than asked.
        let interval_ms = u64::try_from(interval.as_micros().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
        let wait_ms: i64 = scripts::RESERVE_SLOT
            .key(self.keys.pacer(name))
            .arg(interval_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
    }

    /// Takes lock `name` for `owner` for `ttl` (`SET NX PX`). Taking a lock `owner` holds
    /// already renews it and is `Acquired`.
    pub async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, QueueError> {
        let mut conn = self.conn.clone();
        let (outcome, holder, ttl_left): (String, String, i64) = scripts::TRY_LOCK
            .key(self.keys.lock(name))
            .arg(owner)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(lock_attempt(&outcome, holder, ttl_left))
    }

    /// Renews lock `name` for `ttl` from now if `owner` holds it; false when it is not
    /// `owner`'s any more (expired, or taken by someone else).
    pub async fn extend_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let extended: i64 = scripts::EXTEND_LOCK
            .key(self.keys.lock(name))
            .arg(owner)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(extended == 1)
    }

    /// Releases lock `name` if `owner` holds it; false when it was not `owner`'s.
    pub async fn release_lock(&self, name: &str, owner: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let released: i64 = scripts::RELEASE_LOCK
            .key(self.keys.lock(name))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// Takes lock `name` for the group `group`, as one of its holders (`holder`), for `ttl`:
    /// the holders of one group share the lock (none waits for another), while anyone else
    /// ([`try_lock`](Self::try_lock) with another owner, or another group) finds it held by
    /// `group`. Each holder renews its hold with [`extend_shared_lock`](Self::extend_shared_lock)
    /// and ends it with [`release_shared_lock`](Self::release_shared_lock); the last holder's
    /// release frees the lock. A holder that crashed stops renewing: its hold ends `ttl` after
    /// its last renewal, and the lock expires `ttl` after the last renewal of any holder.
    pub async fn try_shared_lock(
        &self,
        name: &str,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, QueueError> {
        let mut conn = self.conn.clone();
        let (outcome, owner, ttl_left): (String, String, i64) = scripts::TRY_SHARED_LOCK
            .key(self.keys.lock(name))
            .key(self.keys.lock_holders(name))
            .arg(group)
            .arg(holder)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(lock_attempt(&outcome, owner, ttl_left))
    }

    /// Renews `holder`'s hold of shared lock `name` (and the lock) for `ttl` from now while
    /// `group` holds it; false when the lock is not `group`'s any more.
    pub async fn extend_shared_lock(
        &self,
        name: &str,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let extended: i64 = scripts::EXTEND_SHARED_LOCK
            .key(self.keys.lock(name))
            .key(self.keys.lock_holders(name))
            .arg(group)
            .arg(holder)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(extended == 1)
    }

    /// Ends `holder`'s hold of shared lock `name`; the last holder of `group` frees the lock.
    /// A lock that is not `group`'s is never touched.
    pub async fn release_shared_lock(
        &self,
        name: &str,
        group: &str,
        holder: &str,
    ) -> Result<SharedRelease, QueueError> {
        let mut conn = self.conn.clone();
        let released: i64 = scripts::RELEASE_SHARED_LOCK
            .key(self.keys.lock(name))
            .key(self.keys.lock_holders(name))
            .arg(group)
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(match released {
            1 => SharedRelease::Freed,
            2 => SharedRelease::Kept,
            _ => SharedRelease::NotHeld,
        })
    }

    /// Who holds lock `name`, if anyone.
    pub async fn lock_owner(&self, name: &str) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.keys.lock(name)).await?)
    }

    /// Stores opaque bytes under `name`, replacing any value; `ttl: None` keeps it until
    /// deleted.
    pub async fn put_value(
        &self,
        name: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let key = self.keys.value(name);
        match ttl {
            Some(ttl) => conn.pset_ex::<_, _, ()>(key, value, ms(ttl)).await?,
            None => conn.set::<_, _, ()>(key, value).await?,
        }
        Ok(())
    }

    /// The bytes stored under `name`, if any (and not expired).
    pub async fn get_value(&self, name: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.keys.value(name)).await?)
    }

    /// Deletes the value under `name` (no error when there is none).
    pub async fn delete_value(&self, name: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.keys.value(name)).await?;
        Ok(())
    }

    /// Adds one to the counter under `name` and returns the new count. The counter is created
    /// at 1 and expires `ttl` after it was created (a fixed window: name it per window, e.g.
    /// per hour, to count events per window across processes).
    pub async fn increment_value(&self, name: &str, ttl: Duration) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let count: i64 = scripts::INCREMENT_VALUE
            .key(self.keys.value(name))
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Writes fields of map `name` (replacing those that exist), `MAP_CHUNK` fields per
    /// Redis call, and sets the whole map to expire `ttl` from now.
    pub async fn put_map_fields(
        &self,
        name: &str,
        fields: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let key = self.keys.map(name);
        for chunk in fields.chunks(MAP_CHUNK) {
            let _: () = redis::pipe()
                .atomic()
                .hset_multiple(&key, chunk)
                .ignore()
                .pexpire(&key, i64::try_from(ms(ttl)).unwrap_or(i64::MAX))
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// How many fields map `name` has (0 when it does not exist).
    pub async fn map_len(&self, name: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.hlen(self.keys.map(name)).await?)
    }

    /// One field of map `name`, if the map and the field exist.
    pub async fn get_map_field(
        &self,
        name: &str,
        field: &str,
    ) -> Result<Option<Vec<u8>>, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.keys.map(name), field).await?)
    }

    /// Stores JSON record `id` in `collection`, listed under `index` (`""`: in no index),
    /// kept for `retention` from now. Putting an existing id replaces the document and its
    /// retention but keeps its creation time, so lists order it by first creation.
    pub async fn put_record(
        &self,
        collection: &str,
        id: &str,
        index: &str,
        json: &str,
        retention: Duration,
    ) -> Result<(), QueueError> {
        validate_collection(collection)?;
        let mut conn = self.conn.clone();
        let _: String = scripts::PUT_RECORD
            .key(self.keys.types())
            .arg(self.keys.records(collection))
            .arg(id)
            .arg(index)
            .arg(json)
            .arg(ms(retention))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Record `id` of `collection`, if stored and within its retention.
    pub async fn get_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<String>, QueueError> {
        validate_collection(collection)?;
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.keys.record(collection, id), "json").await?)
    }

    /// Up to `limit` records of `collection`, newest (by first creation) first; `index:
    /// None` lists all. Entries past their retention are pruned from the lists as met.
    pub async fn list_records(
        &self,
        collection: &str,
        index: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        validate_collection(collection)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        Ok(scripts::LIST_RECORDS
            .key(self.keys.types())
            .arg(self.keys.records(collection))
            .arg(index.unwrap_or(""))
            .arg(limit)
            .invoke_async(&mut conn)
            .await?)
    }
}

/// A lock script's answer `(outcome, holder, ttl_left_ms)` as a [`LockAttempt`].
fn lock_attempt(outcome: &str, holder: String, ttl_left_ms: i64) -> LockAttempt {
    match outcome {
        "acquired" => LockAttempt::Acquired,
        _ => LockAttempt::Held {
            owner: holder,
            ttl_left: Duration::from_millis(u64::try_from(ttl_left_ms).unwrap_or(0)),
        },
    }
}
