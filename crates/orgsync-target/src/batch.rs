//! Writing many items: object-level failures are collected per object and the rest of the batch
//! is written; the first run-level failure stops the batch and is returned.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use orgsync_model::ids::UnitId;
use orgsync_model::plan::{Action, DepartmentItem, UserItem};
use serde::Serialize;

use crate::{Target, TargetError, WriteOutcome};

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    /// Items that changed the target.
    pub written: u64,
    /// Items already in place (nothing sent).
    pub unchanged: u64,
    /// Items the target rejected, one by one.
    pub rejected: Vec<Rejection>,
}

impl BatchReport {
    fn add(
        &mut self,
        outcome: Result<WriteOutcome, TargetError>,
        external_id: String,
    ) -> Result<(), TargetError> {
        match outcome {
            Ok(WriteOutcome::Written) => self.written += 1,
            Ok(WriteOutcome::Unchanged) => self.unchanged += 1,
            Err(e) if e.is_object_level() => self.rejected.push(Rejection::new(external_id, &e)),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// One rejected object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The object's external id (or user name for a user without one).
    pub external_id: String,
    /// HTTP status (or its SQLite equivalent).
    pub status: Option<u16>,
    /// The target's `scimType`.
    pub scim_type: Option<String>,
    /// The whole message.
    pub message: String,
}

impl Rejection {
    fn new(external_id: String, error: &TargetError) -> Rejection {
        let (status, scim_type) = match error {
            TargetError::Rejected {
                status, scim_type, ..
            } => (Some(*status), scim_type.clone()),
            _ => (None, None),
        };
        Rejection {
            external_id,
            status,
            scim_type,
            message: error.to_string(),
        }
    }
}

/// Writes department items. Items whose parent is written in the same batch wait for it; the
/// others are written `concurrency` at a time. A rejected parent's children are still tried
/// (the target reports them if it cares).
///
/// The write futures are built before they are streamed (no closure is held across an await),
/// so that job handlers, which apalis requires to be `Send` for every lifetime, can await it.
pub async fn write_departments(
    target: &dyn Target,
    items: &[DepartmentItem],
    concurrency: usize,
) -> Result<BatchReport, TargetError> {
    let mut report = BatchReport::default();
    // Creates, updates and reactivations: a child waits for its parent in the same batch.
    // Deactivations afterwards, one by one in plan order (deepest first).
    let (deactivations, mut pending): (Vec<&DepartmentItem>, Vec<&DepartmentItem>) =
        items.iter().partition(|i| i.action == Action::Deactivate);
    while !pending.is_empty() {
        let waiting: HashSet<UnitId> = pending.iter().map(|i| i.external_id).collect();
        let (ready, later): (Vec<&DepartmentItem>, Vec<&DepartmentItem>) =
            pending.into_iter().partition(|i| {
                i.fields
                    .parent
                    .is_none_or(|p| !waiting.contains(&p) || p == i.external_id)
            });
        // A parent cycle inside the batch cannot happen for validated plans; write the rest anyway.
        let (ready, later) = if ready.is_empty() {
            (later, Vec::new())
        } else {
            (ready, later)
        };
        // The futures are built before streaming them: a closure held by the stream would make
        // the whole future impossible to prove `Send`.
        let writes: Vec<_> = ready
            .into_iter()
            .map(|item| write_department(target, item))
            .collect();
        let mut results = stream::iter(writes).buffer_unordered(concurrency.max(1));
        while let Some((id, outcome)) = results.next().await {
            report.add(outcome, id.to_string())?;
        }
        pending = later;
    }
    for item in deactivations {
        report.add(
            target.write_department(item).await,
            item.external_id.to_string(),
        )?;
    }
    Ok(report)
}

/// Writes user items, `concurrency` at a time, in three phases that each finish before the
/// next starts: updates and reactivations (a rename frees its old user name), creates (which
/// may take it), deactivations. Built like [`write_departments`] for the same reason.
pub async fn write_users(
    target: &dyn Target,
    items: &[UserItem],
    concurrency: usize,
) -> Result<BatchReport, TargetError> {
    let mut report = BatchReport::default();
    for current in 0..3 {
        let mut writes = Vec::new();
        for item in items {
            if phase(item) == current {
                writes.push(write_user(target, item));
            }
        }
        let mut results = stream::iter(writes).buffer_unordered(concurrency.max(1));
        while let Some((id, outcome)) = results.next().await {
            report.add(outcome, id)?;
        }
    }
    Ok(report)
}

fn phase(item: &UserItem) -> u8 {
    match item.action {
        Action::Update | Action::Reactivate => 0,
        Action::Create => 1,
        Action::Deactivate => 2,
    }
}

async fn write_department(
    target: &dyn Target,
    item: &DepartmentItem,
) -> (UnitId, Result<WriteOutcome, TargetError>) {
    (item.external_id, target.write_department(item).await)
}

async fn write_user(
    target: &dyn Target,
    item: &UserItem,
) -> (String, Result<WriteOutcome, TargetError>) {
    let id = item
        .external_id
        .map_or_else(|| item.fields.user_name.clone(), |id| id.to_string());
    (id, target.write_user(item).await)
}
