//! Target errors, split by consequence: object-level rejections, retriable faults, and the rest.

use std::time::Duration;

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
    /// The embedded database failed.
    #[error("the directory database failed: {0}")]
    Storage(String),
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
            TargetError::Storage(message) => message.contains("locked") || message.contains("busy"),
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

    /// A short stable class for error logs and tickets.
    pub fn class(&self) -> &'static str {
        match self {
            TargetError::Unauthorized { .. } => "target_unauthorized",
            TargetError::Unreachable(_) => "target_unreachable",
            TargetError::Timeout(_) => "target_timeout",
            TargetError::RateLimited { .. } => "target_rate_limited",
            TargetError::Server { .. } => "target_server",
            TargetError::Rejected { .. } => "target_rejected",
            TargetError::Conflict { .. } => "target_conflict",
            TargetError::Malformed(_) => "target_malformed",
            TargetError::Storage(_) => "target_storage",
            TargetError::Config(_) => "target_config",
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
    }
}
