//! The [`Target`] trait orgsync writes departments and users through, and its adapters:
//! [`scim`] (a SCIM 2.0 service provider) and [`sqlite`] (an embedded directory database).
//!
//! Every write is an idempotent upsert keyed by external id (the STS UUID), then user name:
//! the adapter reads the object's current state, writes only what differs, and answers
//! [`WriteOutcome::Unchanged`] when nothing does. Repeating a write therefore changes nothing
//! and sends no write request. Failures of one object ([`TargetError::is_object_level`]) are
//! reported per object by [`batch`]; everything else is a run-level error.

pub mod batch;
mod diff;
mod error;
pub mod scim;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeSet;

use async_trait::async_trait;
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{DepartmentItem, UserItem};
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};

pub use diff::{department_differs, may_adopt, user_changes, user_label};
pub use error::{StorageFault, TargetError};

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The target changed.
    Written,
    /// The target already held the desired state; nothing was sent.
    Unchanged,
}

/// What a target can do, for the pipeline and `config check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `sqlite` or `scim`.
    pub kind: &'static str,
    /// Optimistic concurrency with ETags (`If-Match`).
    pub etags: bool,
    /// Cursor paging (RFC 9865) rather than `startIndex`.
    pub cursor_paging: bool,
    /// At most this many requests in flight for one customer.
    pub max_in_flight: usize,
}

/// The result of a health check that exercised the real operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// What was checked, for people (`SCIM https://… (etag, bulk)`).
    pub summary: String,
    /// How many users the target holds for the customer, when cheap to know.
    pub users: Option<u64>,
}

/// The target-side operations of a sync, for one customer.
#[async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// What the target supports.
    fn capabilities(&self) -> Capabilities;

    /// Exercises the target's real operations (authentication, a read) and reports.
    async fn health(&self) -> Result<Health, TargetError>;

    /// Every department and user the target holds for the customer (read in pages).
    async fn read_state(&self) -> Result<TargetState, TargetError>;

    /// One user, by external id, else by user name.
    async fn find_user(
        &self,
        external_id: UserId,
        user_name: &str,
    ) -> Result<Option<TargetUser>, TargetError>;

    /// One department, by external id.
    async fn find_department(
        &self,
        external_id: UnitId,
    ) -> Result<Option<TargetDepartment>, TargetError>;

    /// Creates, updates, reactivates or deactivates a department (an upsert).
    async fn write_department(&self, item: &DepartmentItem) -> Result<WriteOutcome, TargetError>;

    /// Creates, updates, reactivates or deactivates a user (an upsert), memberships included.
    async fn write_user(&self, item: &UserItem) -> Result<WriteOutcome, TargetError>;

    /// Sets a user's department memberships to exactly `departments` (by external id).
    async fn set_memberships(
        &self,
        user: UserId,
        departments: &BTreeSet<UnitId>,
    ) -> Result<WriteOutcome, TargetError>;
}
