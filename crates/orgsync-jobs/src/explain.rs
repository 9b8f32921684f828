//! `orgsync explain <cvr> <e-mail | user name | UUID>`: why a user or department is as it is.
//! The object's history from the provisioning log (newest first), and what the next run would
//! do to it now and why: its STS state (active, e-mail, name, positions valid today), the
//! target's state, the planner's decision (action and changes, or the skip reason) and the
//! guards. The answer to "why was X deactivated (or never created)?" in one command.

use std::fmt::Write as _;

use chrono::{NaiveDate, Utc};
use orgsync_model::plan::{Action, Plan};
use orgsync_model::snapshot::{Snapshot, Unit, User};
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};
use orgsync_model::validate::validate;
use serde::Serialize;
use uuid::Uuid;

use crate::pipeline::{Pipeline, PipelineError};
use crate::provisioning::{LogAction, ProvisioningEntry};

/// Entries of history shown.
const HISTORY: usize = 50;

/// The answer of `orgsync explain`.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The municipality.
    pub cvr: String,
    /// What was asked for.
    pub key: String,
    /// The provisioning log's entries, newest first.
    pub history: Vec<ProvisioningEntry>,
    /// What the next run would do now (absent with `--history-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<Now>,
}

/// The object as STS and the target hold it now, and the planner's decision.
#[derive(Clone, Debug, Serialize)]
pub struct Now {
    /// The date the planner used (what "valid today" means).
    pub today: NaiveDate,
    /// The STS user, when the key names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_user: Option<StsUserView>,
    /// The STS unit, when the key names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_unit: Option<Unit>,
    /// The target user, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_user: Option<TargetUser>,
    /// The target department, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_department: Option<TargetDepartment>,
    /// The next run's action (`create`, `update`, `deactivate`, `reactivate`, `skip`, `held`),
    /// or `none`.
    pub next_action: String,
    /// Why, for people.
    pub why: String,
    /// Fields that would change, old → new.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// The guards, when they would hold the run's deactivations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guards: Option<String>,
    /// Set when STS could not be read or its data was refused: the next run fails, nothing else
    /// is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// An STS user as `explain` shows it (never a CPR number: STS reads never ask for one).
#[derive(Clone, Debug, Serialize)]
pub struct StsUserView {
    /// The Bruger UUID.
    pub uuid: Uuid,
    /// The STS login name.
    pub user_name: String,
    /// The person's name.
    pub name: Option<String>,
    /// The e-mail as STS holds it.
    pub email: Option<String>,
    /// Whether the Bruger is active.
    pub active: bool,
    /// Positions: unit name (UUID), valid from-to, valid today or not.
    pub positions: Vec<String>,
}

impl StsUserView {
    fn of(user: &User, snapshot: &Snapshot, today: NaiveDate) -> Self {
        let positions = user
            .positions
            .iter()
            .map(|p| {
                let unit = snapshot
                    .units
                    .iter()
                    .find(|u| u.uuid == p.unit_uuid)
                    .map_or("an unknown unit".to_owned(), |u| {
                        format!("{}{}", u.name, if u.active { "" } else { " (inactive)" })
                    });
                format!(
                    "{}{} in {unit} ({}), {} to {}: {}",
                    if p.manager { "manager " } else { "" },
                    p.title.as_deref().unwrap_or("position"),
                    p.unit_uuid,
                    p.valid_from.map_or("always".to_owned(), |d| d.to_string()),
                    p.valid_to.map_or("open".to_owned(), |d| d.to_string()),
                    if p.is_valid_on(today) {
                        "valid today"
                    } else {
                        "NOT valid today"
                    }
                )
            })
            .collect();
        StsUserView {
            uuid: user.uuid.0,
            user_name: user.user_name.clone(),
            name: user.name.clone(),
            email: user.email.clone(),
            active: user.active,
            positions,
        }
    }
}

fn matches_user(user: &User, key: &str, uuid: Option<Uuid>) -> bool {
    Some(user.uuid.0) == uuid
        || user.user_name.eq_ignore_ascii_case(key)
        || user
            .email
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(key))
}

impl Pipeline {
    /// The explanation of one object of customer `cvr`; `with_now` also reads STS and the
    /// target and plans (what `plan` does), to say what the next run would do.
    pub async fn explain(
        &self,
        cvr: &str,
        key: &str,
        with_now: bool,
    ) -> Result<Explanation, PipelineError> {
        let customer = self.customer(cvr)?;
        let cvr = customer.cvr.as_str().to_owned();
        let history = self.provisioning().history(&cvr, key, HISTORY).await?;
        // What the log knows the key as (an e-mail found the UUID, say).
        let uuid = Uuid::parse_str(key)
            .ok()
            .or_else(|| history.iter().find_map(|e| e.uuid));
        let now = if with_now {
            Some(self.explain_now(&customer, key, uuid).await?)
        } else {
            None
        };
        Ok(Explanation {
            cvr,
            key: key.to_owned(),
            history,
            now,
        })
    }

    async fn explain_now(
        &self,
        customer: &crate::sources::Customer,
        key: &str,
        uuid: Option<Uuid>,
    ) -> Result<Now, PipelineError> {
        let today = orgsync_model::time::danish_date(&Utc::now());
        let mut now = Now {
            today,
            sts_user: None,
            sts_unit: None,
            target_user: None,
            target_department: None,
            next_action: "none".to_owned(),
            why: String::new(),
            changes: Vec::new(),
            guards: None,
            problem: None,
        };
        let state: TargetState = self.sources().target_state(&customer.cvr).await?;
        now.target_user = state
            .users
            .iter()
            .find(|u| {
                u.external_id.map(|id| id.0) == uuid && uuid.is_some()
                    || u.user_name.eq_ignore_ascii_case(key)
                    || u.email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(key))
            })
            .cloned();
        now.target_department = uuid.and_then(|id| {
            state
                .departments
                .iter()
                .find(|d| d.external_id.map(|e| e.0) == Some(id))
                .cloned()
        });
        let read = match self.sources().read_snapshot(&customer.cvr).await {
            Ok(read) => read,
            Err(e) => {
                now.problem = Some(format!("STS cannot be read now: {e}"));
                now.why = "the next run fails unless STS answers; nothing is changed".to_owned();
                return Ok(now);
            }
        };
        let uuid = uuid.or_else(|| {
            now.target_user
                .as_ref()
                .and_then(|u| u.external_id.map(|e| e.0))
        });
        let snapshot = read.snapshot;
        if let Some(user) = snapshot.users.iter().find(|u| matches_user(u, key, uuid)) {
            now.sts_user = Some(StsUserView::of(user, &snapshot, today));
        }
        let unit_id = uuid.filter(|_| now.sts_user.is_none());
        now.sts_unit =
            unit_id.and_then(|id| snapshot.units.iter().find(|u| u.uuid.0 == id).cloned());
        let previous = self.store().last_counts(customer.cvr.as_str()).await?;
        let valid = match validate(snapshot, &customer.policy, previous) {
            Ok(valid) => valid,
            Err(invalid) => {
                now.problem = Some(format!("the STS data is refused: {invalid}"));
                now.why = "the next run fails before writing anything".to_owned();
                return Ok(now);
            }
        };
        let plan = orgsync_model::plan::plan(&valid, &state, &customer.policy, today);
        decide(&mut now, &plan, key, uuid, customer);
        Ok(now)
    }
}

/// Finds the object in the plan and says what happens to it.
fn decide(
    now: &mut Now,
    plan: &Plan,
    key: &str,
    uuid: Option<Uuid>,
    customer: &crate::sources::Customer,
) {
    let held = plan.held.as_ref();
    now.guards = held.map(|h| h.reason.clone());
    let user_item = |items: &[orgsync_model::plan::UserItem]| {
        items
            .iter()
            .find(|i| {
                (uuid.is_some() && i.external_id.map(|id| id.0) == uuid)
                    || i.fields.user_name.eq_ignore_ascii_case(key)
            })
            .cloned()
    };
    let department_item = |items: &[orgsync_model::plan::DepartmentItem]| {
        items
            .iter()
            .find(|i| Some(i.external_id.0) == uuid)
            .cloned()
    };
    let describe = |changes: Option<&orgsync_model::plan::Changes>| -> Vec<String> {
        changes
            .into_iter()
            .flatten()
            .map(|(field, (old, new))| format!("{field}: {old} -> {new}"))
            .collect()
    };
    if let Some(item) = user_item(&plan.users) {
        now.next_action = LogAction::of(item.action).as_str().to_owned();
        now.changes = describe(item.changes.as_ref());
        now.why = match item.action {
            Action::Create => "eligible in STS (active, e-mail, first and last name, a position valid today in a synced department) and not in the target".to_owned(),
            Action::Update => "STS is primary: the target's values differ from STS".to_owned(),
            Action::Reactivate => "active and eligible in STS again".to_owned(),
            Action::Deactivate => deactivation_reason(now),
        };
        return;
    }
    if let Some(item) = held.and_then(|h| user_item(&h.users)) {
        now.next_action = LogAction::Held.as_str().to_owned();
        now.why = format!(
            "would be deactivated ({}), but the run's deactivations are held: {}",
            deactivation_reason(now),
            held.map(|h| h.reason.as_str()).unwrap_or_default()
        );
        now.changes = describe(item.changes.as_ref());
        return;
    }
    if let Some(skipped) = plan
        .skipped_users
        .iter()
        .find(|s| Some(s.external_id.0) == uuid || s.sts_user_name.eq_ignore_ascii_case(key))
    {
        now.next_action = LogAction::Skip.as_str().to_owned();
        now.why = format!(
            "skipped: {} ({}){}",
            skipped.reason.as_str(),
            skip_meaning(skipped.reason),
            if skipped.reason.keeps_target_user() {
                "; its target user, if any, is left alone (never deactivated for missing data)"
            } else {
                ""
            }
        );
        return;
    }
    if let Some(item) = department_item(&plan.departments) {
        now.next_action = LogAction::of(item.action).as_str().to_owned();
        now.changes = describe(item.changes.as_ref());
        now.why = match item.action {
            Action::Create => "an active unit in the synced tree, not in the target".to_owned(),
            Action::Update => "STS is primary: the department differs from the unit".to_owned(),
            Action::Reactivate => "the unit is active in the synced tree again".to_owned(),
            Action::Deactivate => {
                "the unit is absent from STS, inactive, outside the top unit or excluded".to_owned()
            }
        };
        return;
    }
    if held.and_then(|h| department_item(&h.departments)).is_some() {
        now.next_action = LogAction::Held.as_str().to_owned();
        now.why = format!(
            "would be deactivated, but the run's deactivations are held: {}",
            held.map(|h| h.reason.as_str()).unwrap_or_default()
        );
        return;
    }
    now.why = match (
        &now.sts_user,
        &now.target_user,
        &now.sts_unit,
        &now.target_department,
    ) {
        (Some(_), Some(t), _, _) if t.active => {
            "nothing: the target user is in step with STS".to_owned()
        }
        (Some(_), None, _, _) => {
            "nothing: the STS user is not eligible and has no target user".to_owned()
        }
        (None, Some(t), _, _) => {
            let inside = t
                .email
                .as_deref()
                .or(Some(t.user_name.as_str()))
                .is_some_and(|e| {
                    customer
                        .policy
                        .domains
                        .iter()
                        .any(|d| e.to_lowercase().ends_with(&format!("@{}", d.as_str())))
                });
            if !inside {
                "nothing: not in STS, and its e-mail is outside the customer's domains, so orgsync never touches it".to_owned()
            } else if !t.active {
                "nothing: not in STS and already inactive".to_owned()
            } else {
                "nothing: the target user carries another source's external id".to_owned()
            }
        }
        (_, _, Some(_), Some(_)) => "nothing: the department is in step with the unit".to_owned(),
        (None, None, None, None) => format!("{key} is neither in STS nor in the target"),
        _ => "nothing".to_owned(),
    };
}

fn deactivation_reason(now: &Now) -> String {
    match &now.sts_user {
        None => "absent from STS (or passivated), and its e-mail is in the customer's domains"
            .to_owned(),
        Some(u) if !u.active => "the Bruger is inactive in STS".to_owned(),
        Some(_) => "no position valid today in a synced department".to_owned(),
    }
}

fn skip_meaning(reason: orgsync_model::plan::SkipReason) -> &'static str {
    use orgsync_model::plan::SkipReason;
    match reason {
        SkipReason::Inactive => "the Bruger is inactive in STS",
        SkipReason::NoEmail => {
            "STS holds no e-mail address for the person: ask the municipality to add one"
        }
        SkipReason::InvalidEmail => {
            "the e-mail address in STS is not valid: ask the municipality to correct it"
        }
        SkipReason::NoLastName => "STS holds no name for the person",
        SkipReason::NoFirstName => "the person's name in STS is one word: no first name",
        SkipReason::NoPosition => "no position valid today in an active unit",
        SkipReason::OutsideTopUnit => "positions only outside the synced tree or in excluded units",
        SkipReason::DuplicateEmail => {
            "another user has the same e-mail (user names must be unique)"
        }
    }
}

impl Explanation {
    /// For people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} in customer {}", self.key, self.cvr);
        if self.history.is_empty() {
            let _ = writeln!(
                out,
                "history: nothing in the provisioning log (kept for [runs] report_retention_days)"
            );
        } else {
            let _ = writeln!(out, "history (newest first):");
            for e in &self.history {
                let who = e
                    .user_name
                    .clone()
                    .or_else(|| e.name.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  run {}  {:<10} {who}{}",
                    e.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    e.run_id,
                    e.action.as_str(),
                    e.matched
                        .map(|m| format!(
                            "  (matched by {})",
                            match m {
                                crate::provisioning::Matched::ExternalId => "external id",
                                crate::provisioning::Matched::UserNameAdopted =>
                                    "user name: adopted",
                                crate::provisioning::Matched::Created => "nothing: new",
                            }
                        ))
                        .unwrap_or_default()
                );
                if let Some(reason) = &e.reason {
                    let _ = writeln!(out, "      why: {reason}");
                }
                for (field, change) in &e.changes {
                    let _ = writeln!(out, "      {field}: {} -> {}", change.old, change.new);
                }
                if let Some(answer) = &e.target_answer {
                    let _ = writeln!(out, "      target answered: {answer}");
                }
            }
        }
        if let Some(now) = &self.now {
            let _ = writeln!(out, "now ({}):", now.today);
            if let Some(u) = &now.sts_user {
                let _ = writeln!(
                    out,
                    "  STS user {} ({}): {}, name {}, e-mail {}",
                    u.user_name,
                    u.uuid,
                    if u.active { "active" } else { "INACTIVE" },
                    u.name.as_deref().unwrap_or("(none)"),
                    u.email.as_deref().unwrap_or("(none)")
                );
                if u.positions.is_empty() {
                    let _ = writeln!(out, "    no positions");
                }
                for p in &u.positions {
                    let _ = writeln!(out, "    {p}");
                }
            } else if let Some(unit) = &now.sts_unit {
                let _ = writeln!(
                    out,
                    "  STS unit {} ({}): {}",
                    unit.name,
                    unit.uuid,
                    if unit.active { "active" } else { "INACTIVE" }
                );
            } else if now.problem.is_none() {
                let _ = writeln!(out, "  STS: not found");
            }
            if let Some(t) = &now.target_user {
                let _ = writeln!(
                    out,
                    "  target user {}: {}, {} memberships, external id {}",
                    t.user_name,
                    if t.active { "active" } else { "inactive" },
                    t.memberships.len(),
                    t.external_id
                        .map_or("none (made by hand)".to_owned(), |e| e.to_string())
                );
            } else if let Some(d) = &now.target_department {
                let _ = writeln!(
                    out,
                    "  target department {}: {}",
                    d.title,
                    if d.active { "active" } else { "inactive" }
                );
            } else {
                let _ = writeln!(out, "  target: not found");
            }
            if let Some(problem) = &now.problem {
                let _ = writeln!(out, "  PROBLEM: {problem}");
            }
            let _ = writeln!(out, "  next run: {}: {}", now.next_action, now.why);
            for c in &now.changes {
                let _ = writeln!(out, "    {c}");
            }
            if let Some(guards) = &now.guards {
                let _ = writeln!(
                    out,
                    "  guards: the run's deactivations would be held: {guards}"
                );
            }
        }
        out
    }
}
