//! The provisioning log: per department and user, what each run did to it or why it did
//! nothing (modelled on Entra's provisioning logs: the action, the fields changed old → new,
//! how the target object was matched, the skip or hold reason, the target's answer for a
//! rejection). Kept for `[runs] report_retention_days`, looked up by STS UUID, user name or
//! e-mail (`orgsync explain`), scanned by time and action.
//!
//! Entries record what was *achieved*: the pipeline appends them after the write (a rejected
//! write becomes `rejected` with the target's answer; a department job that died appends
//! nothing, so its users show no `create` until a replay writes them). A user skipped for the
//! same reason night after night is one entry, not one per night (the queue's object log drops
//! an entry repeating its object's newest fingerprint), so a run without changes adds nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orgsync_model::plan::{Action, DepartmentItem, SkippedUser, UserItem};
use orgsync_queue::{ObjectLogEntry, QueueError, QueueHandle, StoredLogEntry};
use orgsync_target::batch::BatchReport;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Entries kept per object (older ones drop out before their retention ends).
const PER_OBJECT: usize = 50;

/// What a run did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAction {
    /// Created in the target.
    Create,
    /// Fields overwritten.
    Update,
    /// Marked inactive.
    Deactivate,
    /// Marked active again.
    Reactivate,
    /// Not synced (see `reason`): the target object, if any, was left alone.
    Skip,
    /// A deactivation waits for a person (see `reason`).
    Held,
    /// The target refused the write (see `target_answer`).
    Rejected,
}

impl LogAction {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogAction::Create => "create",
            LogAction::Update => "update",
            LogAction::Deactivate => "deactivate",
            LogAction::Reactivate => "reactivate",
            LogAction::Skip => "skip",
            LogAction::Held => "held",
            LogAction::Rejected => "rejected",
        }
    }

    pub(crate) fn of(action: Action) -> LogAction {
        match action {
            Action::Create => LogAction::Create,
            Action::Update => LogAction::Update,
            Action::Deactivate => LogAction::Deactivate,
            Action::Reactivate => LogAction::Reactivate,
        }
    }
}

/// A department or a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// An STS unit / target department.
    Department,
    /// An STS Bruger / target user.
    User,
}

/// How the target object was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    /// By its external id (the STS UUID).
    ExternalId,
    /// By user name: a user made by hand (or by another STS person) was adopted.
    UserNameAdopted,
    /// None: the object was new.
    Created,
}

/// One field's change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Before (null: unset).
    pub old: Value,
    /// After.
    pub new: Value,
}

/// One entry of the provisioning log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProvisioningEntry {
    /// The run.
    pub run_id: String,
    /// When the entry was made (after the write).
    pub at: DateTime<Utc>,
    /// The municipality.
    pub cvr: String,
    /// Department or user.
    pub kind: ObjectKind,
    /// The STS UUID (`None` for a target user made by hand, which has none).
    pub uuid: Option<Uuid>,
    /// User name (users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// E-mail (users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Department title, or the user's full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What was done.
    pub action: LogAction,
    /// Fields changed, old → new (updates and reactivations).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, FieldChange>,
    /// Why it was skipped or held, or what a person did (`released by anne`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the target object was matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<Matched>,
    /// The target's answer to a rejected write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_answer: Option<String>,
}

impl ProvisioningEntry {
    fn new(run_id: &str, cvr: &str, kind: ObjectKind, action: LogAction) -> Self {
        ProvisioningEntry {
            run_id: run_id.to_owned(),
            at: Utc::now(),
            cvr: cvr.to_owned(),
            kind,
            uuid: None,
            user_name: None,
            email: None,
            name: None,
            action,
            changes: BTreeMap::new(),
            reason: None,
            matched: None,
            target_answer: None,
        }
    }

    /// A user item as planned; `matched` and `changes` from the item.
    pub fn user(run_id: &str, cvr: &str, item: &UserItem, action: LogAction) -> Self {
        let mut entry = ProvisioningEntry::new(run_id, cvr, ObjectKind::User, action);
        entry.uuid = item.external_id.map(|id| id.0);
        entry.user_name = Some(item.fields.user_name.clone());
        entry.email = item.fields.email.clone();
        let name = [&item.fields.first_name, &item.fields.last_name]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        entry.name = (!name.is_empty()).then_some(name);
        entry.changes = changes(item.changes.as_ref());
        entry.matched = Some(match item.action {
            Action::Create => Matched::Created,
            _ if entry.changes.contains_key("external_id") => Matched::UserNameAdopted,
            _ => Matched::ExternalId,
        });
        entry
    }

    /// A department item as planned.
    pub fn department(run_id: &str, cvr: &str, item: &DepartmentItem, action: LogAction) -> Self {
        let mut entry = ProvisioningEntry::new(run_id, cvr, ObjectKind::Department, action);
        entry.uuid = Some(item.external_id.0);
        entry.name = Some(item.fields.title.clone());
        entry.changes = changes(item.changes.as_ref());
        entry.matched = Some(if item.action == Action::Create {
            Matched::Created
        } else {
            Matched::ExternalId
        });
        entry
    }

    /// A user the planner skipped.
    pub fn skipped(run_id: &str, cvr: &str, skipped: &SkippedUser) -> Self {
        let mut entry = ProvisioningEntry::new(run_id, cvr, ObjectKind::User, LogAction::Skip);
        entry.uuid = Some(skipped.external_id.0);
        entry.user_name = Some(skipped.sts_user_name.clone());
        entry.reason = Some(skipped.reason.as_str().to_owned());
        entry
    }

    /// The object key in the log: the UUID, or `user:<user name>` for a hand-made user.
    pub fn object(&self) -> String {
        match (self.uuid, &self.user_name) {
            (Some(uuid), _) => uuid.to_string(),
            (None, Some(name)) => format!("user:{}", name.to_lowercase()),
            (None, None) => String::new(),
        }
    }

    fn to_log_entry(&self) -> Option<ObjectLogEntry> {
        let object = self.object();
        if object.is_empty() {
            return None;
        }
        let aliases = [&self.user_name, &self.email]
            .into_iter()
            .flatten()
            .map(|a| a.to_lowercase())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Skips repeat every night: one entry per reason. Everything else is once per run
        // and action (a retried job does not log twice).
        let fingerprint = match self.action {
            LogAction::Skip => format!("skip:{}", self.reason.as_deref().unwrap_or("")),
            action => format!("{}:{}", self.run_id, action.as_str()),
        };
        Some(ObjectLogEntry {
            object,
            aliases,
            fingerprint,
            payload: serde_json::to_vec(self).ok()?,
        })
    }
}

fn changes(changes: Option<&orgsync_model::plan::Changes>) -> BTreeMap<String, FieldChange> {
    changes
        .into_iter()
        .flatten()
        .map(|(field, (old, new))| {
            (
                field.clone(),
                FieldChange {
                    old: old.clone(),
                    new: new.clone(),
                },
            )
        })
        .collect()
}

/// Entries for a batch of user writes: `rejected` (with the target's answer) for what the
/// target refused, the item's action for the rest.
pub fn user_writes(
    run_id: &str,
    cvr: &str,
    items: &[UserItem],
    batch: &BatchReport,
) -> Vec<ProvisioningEntry> {
    writes(items, batch, |item, action| {
        let id = item
            .external_id
            .map_or_else(|| item.fields.user_name.clone(), |id| id.to_string());
        let action = action.unwrap_or(LogAction::of(item.action));
        (
            id,
            item.action,
            ProvisioningEntry::user(run_id, cvr, item, action),
        )
    })
}

/// Entries for a batch of department writes, as [`user_writes`].
pub fn department_writes(
    run_id: &str,
    cvr: &str,
    items: &[DepartmentItem],
    batch: &BatchReport,
) -> Vec<ProvisioningEntry> {
    writes(items, batch, |item, action| {
        let action = action.unwrap_or(LogAction::of(item.action));
        (
            item.external_id.to_string(),
            item.action,
            ProvisioningEntry::department(run_id, cvr, item, action),
        )
    })
}

/// One entry per item: `entry(item, None)` gives the item's id (as the batch reports
/// rejections), its planned action and its entry; a rejected item's entry is made with
/// `Some(Rejected)` and carries the target's answer.
fn writes<T>(
    items: &[T],
    batch: &BatchReport,
    entry: impl Fn(&T, Option<LogAction>) -> (String, Action, ProvisioningEntry),
) -> Vec<ProvisioningEntry> {
    let rejected: HashMap<&str, &str> = batch
        .rejected
        .iter()
        .map(|r| (r.external_id.as_str(), r.message.as_str()))
        .collect();
    items
        .iter()
        .map(|item| {
            let (id, action, written) = entry(item, None);
            match rejected.get(id.as_str()) {
                None => written,
                Some(answer) => {
                    let (_, _, mut e) = entry(item, Some(LogAction::Rejected));
                    e.reason = Some(format!("{} refused", action_name(action)));
                    e.target_answer = Some((*answer).to_owned());
                    e
                }
            }
        })
        .collect()
}

fn action_name(action: Action) -> &'static str {
    LogAction::of(action).as_str()
}

/// The provisioning log of one customer in the queue's object-log store.
#[derive(Clone, Debug)]
pub struct ProvisioningLog {
    queue: QueueHandle,
    retention: Duration,
}

fn log_name(cvr: &str) -> String {
    format!("provisioning:{cvr}")
}

impl ProvisioningLog {
    /// The log on `queue`, entries kept for `retention`.
    pub fn new(queue: QueueHandle, retention: Duration) -> Self {
        ProvisioningLog { queue, retention }
    }

    /// Appends entries (all of one customer). Returns how many were new.
    pub async fn append(
        &self,
        cvr: &str,
        entries: &[ProvisioningEntry],
    ) -> Result<u64, QueueError> {
        let encoded: Vec<ObjectLogEntry> = entries
            .iter()
            .filter_map(ProvisioningEntry::to_log_entry)
            .collect();
        if encoded.is_empty() {
            return Ok(0);
        }
        self.queue
            .append_object_log(&log_name(cvr), &encoded, self.retention, PER_OBJECT)
            .await
    }

    /// One object's history, newest first: by STS UUID, user name or e-mail.
    pub async fn history(
        &self,
        cvr: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<ProvisioningEntry>, QueueError> {
        let mut found = self
            .queue
            .object_history(&log_name(cvr), key, self.retention, limit)
            .await?;
        if found.is_empty() && !key.contains('-') {
            // A hand-made user is logged under its user name.
            found = self
                .queue
                .object_history(
                    &log_name(cvr),
                    &format!("user:{}", key.to_lowercase()),
                    self.retention,
                    limit,
                )
                .await?;
        }
        Ok(decode(found))
    }

    /// Entries of a customer, newest first, filtered by time and action, with a cursor (the
    /// second value: pass it as `before` for the next page).
    pub async fn search(
        &self,
        cvr: &str,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<(Vec<ProvisioningEntry>, Option<String>), QueueError> {
        let mut out = Vec::new();
        let mut before = filter.before.clone();
        // Scan in pages until `limit` entries match (bounded: at most 20 pages per call).
        for _ in 0..20 {
            let page = self
                .queue
                .scan_object_log(
                    &log_name(cvr),
                    filter.since,
                    filter.until,
                    before.as_deref(),
                    500,
                )
                .await?;
            let Some(last) = page.last() else {
                return Ok((out, None));
            };
            before = Some(last.id.clone());
            let n = page.len();
            for stored in page {
                let id = stored.id.clone();
                let Some(entry) = decode_one(stored) else {
                    continue;
                };
                if filter.matches(&entry) {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok((out, Some(id)));
                    }
                }
            }
            if n < 500 {
                return Ok((out, None));
            }
        }
        Ok((out, before))
    }
}

/// What [`ProvisioningLog::search`] keeps.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// Only these actions (empty: all).
    pub actions: Vec<LogAction>,
    /// Only this run.
    pub run_id: Option<String>,
    /// Not before.
    pub since: Option<DateTime<Utc>>,
    /// Not after.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this cursor.
    pub before: Option<String>,
}

impl LogFilter {
    fn matches(&self, entry: &ProvisioningEntry) -> bool {
        (self.actions.is_empty() || self.actions.contains(&entry.action))
            && self.run_id.as_ref().is_none_or(|r| *r == entry.run_id)
    }
}

fn decode_one(stored: StoredLogEntry) -> Option<ProvisioningEntry> {
    serde_json::from_slice(&stored.payload).ok()
}

fn decode(found: Vec<StoredLogEntry>) -> Vec<ProvisioningEntry> {
    found.into_iter().filter_map(decode_one).collect()
}
