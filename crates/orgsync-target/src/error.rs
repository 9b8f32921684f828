//! Target errors, split by consequence: object-level rejections, retriable faults, and the rest.

use std::time::Duration;

use orgsync_model::error_class::ErrorClass;

/// What went wrong with the embedded database, decided from SQLite's result code where the error
/// happened (never from its message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFault {
    /// Locked or busy beyond the busy timeout: another process holds it. Recovers by itself.
    Busy,
    /// The disk is full, the file is read-only, or an I/O error: recovers once a person frees
    /// space or fixes permissions (retried with a long backoff).
    Environment,
    /// The file is corrupt or not a database: retries cannot help; restore it.
    Corrupt,
    /// The file at the configured path is not the one the connection opened (removed, moved
    /// or replaced), or does not exist when it must: nothing is written to it, and the next
    /// attempt opens the path again.
    Gone,
    /// Anything else (a bug, a failed migration, a panicked write).
    Other,
}

impl StorageFault {
    /// From SQLite's primary result code.
    pub fn from_sqlite(error: &rusqlite::Error) -> StorageFault {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StorageFault::Busy,
            Some(
                ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory,
            ) => StorageFault::Environment,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StorageFault::Corrupt,
            _ => StorageFault::Other,
        }
    }
}

/// Why a target operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target refused our credentials (401/403). Not retriable: a person must fix them.
    #[error("the target refused the credentials (HTTP {status}): {detail}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The target's explanation.
        detail: String,
    },
    /// The target could not be reached (connection refused, DNS, TLS).
    #[error("the target is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("the target did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// 429: the target asks us to slow down.
    #[error("the target asks orgsync to slow down (HTTP 429{})", .retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The target's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The target failed (5xx).
    #[error("the target failed (HTTP {status}): {detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The target's explanation.
        detail: String,
    },
    /// The target rejected one object (400, 409, ...): reported per object, the batch goes on.
    #[error("{object} was rejected (HTTP {status}{}): {detail}", .scim_type.as_deref().map(|t| format!(", {t}")).unwrap_or_default())]
    Rejected {
        /// The object, for people: `user anne@kommune.dk (5b2b…)`.
        object: String,
        /// HTTP status (SQLite uses the SCIM equivalents: 409 uniqueness, 400 invalidValue).
        status: u16,
        /// The SCIM `scimType` (`uniqueness`, `invalidValue`, ...).
        scim_type: Option<String>,
        /// The target's message.
        detail: String,
    },
    /// The object changed on the target while we wrote it, again and again (412).
    #[error("{object} kept changing on the target while orgsync wrote it (HTTP 412)")]
    Conflict {
        /// The object.
        object: String,
    },
    /// The target answered something we cannot read.
    #[error("the target answered something orgsync cannot read: {0}")]
    Malformed(String),
    /// The embedded database failed; `fault` says whether it can recover.
    #[error("the directory database failed: {message}")]
    Storage {
        /// What kind of failure (from SQLite's result code).
        fault: StorageFault,
        /// What SQLite said, with the file where known.
        message: String,
    },
    /// The target is configured wrongly (a missing token variable, a bad path).
    #[error("{0}")]
    Config(String),
}

impl TargetError {
    /// Whether trying again later may succeed (429, 5xx, timeouts, unreachable, 412 races).
    pub fn is_retriable(&self) -> bool {
        match self {
            TargetError::Unreachable(_)
            | TargetError::Timeout(_)
            | TargetError::RateLimited { .. }
            | TargetError::Server { .. }
            | TargetError::Conflict { .. } => true,
            TargetError::Storage { fault, .. } => {
                matches!(
                    fault,
                    StorageFault::Busy | StorageFault::Environment | StorageFault::Gone
                )
            }
            TargetError::Unauthorized { .. }
            | TargetError::Rejected { .. }
            | TargetError::Malformed(_)
            | TargetError::Config(_) => false,
        }
    }

    /// Whether only one object failed (the rest of a batch goes on).
    pub fn is_object_level(&self) -> bool {
        matches!(
            self,
            TargetError::Rejected { .. } | TargetError::Conflict { .. }
        )
    }

    /// The error class (see `orgsync_model::error_class`), from the variant alone.
    pub fn class(&self) -> ErrorClass {
        match self {
            TargetError::Unauthorized { .. } => ErrorClass::TargetAuth,
            TargetError::Unreachable(_)
            | TargetError::Timeout(_)
            | TargetError::RateLimited { .. }
            | TargetError::Server { .. } => ErrorClass::TargetUnavailable,
            TargetError::Rejected { .. } => ErrorClass::TargetRejected,
            TargetError::Conflict { .. } => ErrorClass::TargetConflict,
            TargetError::Malformed(_) => ErrorClass::TargetBadResponse,
            TargetError::Storage {
                fault: StorageFault::Corrupt | StorageFault::Other,
                ..
            } => ErrorClass::TargetStorageCorrupt,
            TargetError::Storage { .. } => ErrorClass::TargetStorage,
            TargetError::Config(_) => ErrorClass::ConfigInvalid,
        }
    }

    /// The shortest wait before another attempt is worth it, beyond the job's own backoff: a
    /// full disk or a read-only file needs a person, so it is retried with a long backoff rather
    /// than the job's minutes; a 429's `Retry-After` is honoured.
    pub fn retry_not_before(&self) -> Option<Duration> {
        match self {
            TargetError::Storage {
                fault: StorageFault::Environment,
                ..
            } => Some(Duration::from_secs(15 * 60)),
            TargetError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A storage error from SQLite, classified by its result code.
    pub fn storage(error: &rusqlite::Error, context: impl std::fmt::Display) -> TargetError {
        TargetError::Storage {
            fault: StorageFault::from_sqlite(error),
            message: format!("{context}{error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_are_the_passing_ones() {
        assert!(TargetError::RateLimited { retry_after: None }.is_retriable());
        assert!(
            TargetError::Server {
                status: 503,
                detail: String::new()
            }
            .is_retriable()
        );
        assert!(TargetError::Timeout(Duration::from_secs(30)).is_retriable());
        let rejected = TargetError::Rejected {
            object: "user x".into(),
            status: 409,
            scim_type: Some("uniqueness".into()),
            detail: "taken".into(),
        };
        assert!(!rejected.is_retriable() && rejected.is_object_level());
        assert_eq!(
            rejected.to_string(),
            "user x was rejected (HTTP 409, uniqueness): taken"
        );
        let unauthorized = TargetError::Unauthorized {
            status: 401,
            detail: "no".into(),
        };
        assert!(!unauthorized.is_retriable() && !unauthorized.is_object_level());
        assert_eq!(unauthorized.class(), ErrorClass::TargetAuth);
        assert_eq!(rejected.class(), ErrorClass::TargetRejected);
    }

    fn sqlite_error(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some("whatever the text says".into()),
        )
    }

    #[test]
    fn storage_errors_are_classified_by_result_code_not_by_text() {
        let busy = TargetError::storage(&sqlite_error(rusqlite::ffi::SQLITE_BUSY), "");
        assert!(busy.is_retriable());
        assert_eq!(busy.class(), ErrorClass::TargetStorage);
        assert_eq!(busy.retry_not_before(), None);
        let full = TargetError::storage(&sqlite_error(rusqlite::ffi::SQLITE_FULL), "");
        assert!(full.is_retriable());
        assert_eq!(full.class(), ErrorClass::TargetStorage);
        assert!(full.retry_not_before() >= Some(Duration::from_secs(600)));
        let readonly = TargetError::storage(&sqlite_error(rusqlite::ffi::SQLITE_READONLY), "");
        assert!(readonly.is_retriable());
        let corrupt = TargetError::storage(&sqlite_error(rusqlite::ffi::SQLITE_CORRUPT), "x.db: ");
        assert!(!corrupt.is_retriable());
        assert_eq!(corrupt.class(), ErrorClass::TargetStorageCorrupt);
        assert!(corrupt.to_string().contains("x.db: "));
        // The words "locked" or "busy" in a message no longer make anything retriable.
        let other = TargetError::Storage {
            fault: StorageFault::Other,
            message: "database is locked (not really)".into(),
        };
        assert!(!other.is_retriable());
    }
}
