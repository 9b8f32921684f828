//! The SQLite adapter: an embedded directory database (departments, users, memberships) in one
//! file, the demo's default target and a result anyone can query with `sqlite3`.
//!
//! The schema lives in `migrations/sqlite/` and is applied on open. One file may hold several
//! customers (every row carries the CVR); each [`SqliteTarget`] sees only its own.

mod config;
mod db;
mod health;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{DepartmentItem, UserItem};
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};
use rusqlite::Connection;

pub use config::SqliteOptions;

use crate::{Capabilities, Health, Target, TargetError, WriteOutcome};

/// One customer's view of a directory database.
///
/// The connection belongs to the file it opened: before and after every operation the file at
/// the configured path is compared (device and inode) with it, so a file removed or replaced
/// under a running worker fails the operation with [`crate::StorageFault::Gone`] instead of
/// writing into an unlinked file; after that or any other storage error (read-only, full,
/// locked) the connection is dropped and the next operation opens the path again, so a fixed
/// file works without a restart. Only [`SqliteTarget::open`] creates a missing file; a reopen
/// never does.
#[derive(Clone)]
pub struct SqliteTarget {
    options: Arc<SqliteOptions>,
    conn: Arc<Mutex<Option<Opened>>>,
}

/// A connection and the identity (device, inode) of the file it opened.
struct Opened {
    conn: Connection,
    identity: (u64, u64),
}

impl std::fmt::Debug for SqliteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTarget")
            .field("path", &self.options.path)
            .field("cvr", &self.options.cvr)
            .finish()
    }
}

/// A failure of our own around the database (a panicked or cancelled blocking task).
fn internal(message: String) -> TargetError {
    TargetError::Storage {
        fault: crate::StorageFault::Other,
        message,
    }
}

impl SqliteTarget {
    /// Opens (creating and migrating) the database.
    pub async fn open(options: SqliteOptions) -> Result<SqliteTarget, TargetError> {
        SqliteTarget::open_with(options, true).await
    }

    /// Opens (and migrates) the database only if the file exists: a missing file is a
    /// [`crate::StorageFault::Gone`] error naming the path, and is not created.
    pub async fn open_existing(options: SqliteOptions) -> Result<SqliteTarget, TargetError> {
        SqliteTarget::open_with(options, false).await
    }

    async fn open_with(options: SqliteOptions, create: bool) -> Result<SqliteTarget, TargetError> {
        let path = options.path.clone();
        let (conn, identity) = tokio::task::spawn_blocking(move || db::open(&path, create))
            .await
            .map_err(|e| internal(e.to_string()))??;
        Ok(SqliteTarget {
            options: Arc::new(options),
            conn: Arc::new(Mutex::new(Some(Opened { conn, identity }))),
        })
    }

    /// Runs `work` on the connection on tokio's blocking pool, checking that the file at the
    /// configured path is the one the connection has open, before and after.
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &SqliteOptions) -> Result<T, TargetError> + Send + 'static,
    ) -> Result<T, TargetError> {
        let conn = Arc::clone(&self.conn);
        let options = Arc::clone(&self.options);
        tokio::task::spawn_blocking(move || {
            let mut slot = conn
                .lock()
                .map_err(|_| internal("a previous write panicked".to_owned()))?;
            let path = &options.path;
            let opened = match slot.take() {
                Some(opened) if db::identity(path) == Some(opened.identity) => opened,
                Some(_) => {
                    return Err(db::gone(
                        path,
                        "was removed or replaced since orgsync opened it; nothing was written to it, and the next attempt opens the path again",
                    ));
                }
                None => {
                    let (conn, identity) = db::open(path, false)?;
                    Opened { conn, identity }
                }
            };
            let mut opened = opened;
            let result = work(&mut opened.conn, &options);
            if db::identity(path) != Some(opened.identity) {
                return Err(db::gone(
                    path,
                    "was removed or replaced while orgsync used it; what was written went to the old file, and the next attempt opens the path again",
                ));
            }
            // After a storage error (read-only, full, locked, I/O) the next operation opens
            // the file again rather than keeping a connection that may stay broken.
            if !matches!(result, Err(TargetError::Storage { .. })) {
                *slot = Some(opened);
            }
            result
        })
        .await
        .map_err(|e| internal(e.to_string()))?
    }

    /// How many rows every write so far changed (SQLite's `total_changes`): what tests count
    /// to prove that a repeated write writes nothing.
    pub async fn total_changes(&self) -> Result<u64, TargetError> {
        self.with_conn(|conn, _| Ok(conn.total_changes())).await
    }
}

#[async_trait]
impl Target for SqliteTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "sqlite",
            etags: false,
            cursor_paging: false,
            max_in_flight: 1,
        }
    }

    async fn health(&self) -> Result<Health, TargetError> {
        self.with_conn(health::check).await
    }

    async fn read_state(&self) -> Result<TargetState, TargetError> {
        self.with_conn(|conn, o| {
            Ok(TargetState {
                departments: db::read_departments(conn, o.cvr.as_str()).map_err(db::storage)?,
                users: db::read_users(conn, o.cvr.as_str()).map_err(db::storage)?,
            })
        })
        .await
    }

    async fn find_user(
        &self,
        external_id: UserId,
        user_name: &str,
    ) -> Result<Option<TargetUser>, TargetError> {
        let user_name = user_name.to_owned();
        self.with_conn(move |conn, o| {
            db::find_user(conn, o.cvr.as_str(), external_id, &user_name).map_err(db::storage)
        })
        .await
    }

    async fn find_department(
        &self,
        external_id: UnitId,
    ) -> Result<Option<TargetDepartment>, TargetError> {
        self.with_conn(move |conn, o| {
            db::find_department(conn, o.cvr.as_str(), external_id).map_err(db::storage)
        })
        .await
    }

    async fn write_department(&self, item: &DepartmentItem) -> Result<WriteOutcome, TargetError> {
        let item = item.clone();
        self.with_conn(move |conn, o| db::write_department(conn, o.cvr.as_str(), &item, o.mappings))
            .await
    }

    async fn write_user(&self, item: &UserItem) -> Result<WriteOutcome, TargetError> {
        let item = item.clone();
        self.with_conn(move |conn, o| db::write_user(conn, o.cvr.as_str(), &item, o.mappings))
            .await
    }

    async fn set_memberships(
        &self,
        user: UserId,
        departments: &BTreeSet<UnitId>,
    ) -> Result<WriteOutcome, TargetError> {
        let departments = departments.clone();
        self.with_conn(move |conn, o| db::set_memberships(conn, o.cvr.as_str(), user, &departments))
            .await
    }
}
