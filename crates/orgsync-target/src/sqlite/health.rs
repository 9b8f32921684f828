//! The SQLite health check: the database opens, is migrated, reads, and takes a write lock.

use rusqlite::Connection;

use super::SqliteOptions;
use super::db::storage;
use crate::{Health, TargetError};

pub(super) fn check(conn: &mut Connection, options: &SqliteOptions) -> Result<Health, TargetError> {
    let users: i64 = conn
        .query_row(
            "SELECT count(*) FROM users WHERE cvr = ?1",
            [options.cvr.as_str()],
            |row| row.get(0),
        )
        .map_err(storage)?;
    // Take and release the write lock: a read-only file or a stuck writer shows up here.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(storage)?;
    Ok(Health {
        summary: format!("SQLite {} (readable and writable)", options.path.display()),
        users: u64::try_from(users).ok(),
    })
}
