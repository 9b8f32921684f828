//! The planner: (validated snapshot, target state, customer policy, today) → the changes to make.
//!
//! It implements docs/design.md §2 steps 3-5. The plan is data: target adapters execute it, the CLI
//! prints it (text or JSON, see [`crate::render`]), and [`crate::apply`] replays it on a
//! [`TargetState`] for tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Cvr, Email, UnitId, UserId};
use crate::policy::{CustomIdSource, Policy};
use crate::snapshot::{PartialRead, Position, Snapshot, Unit, UnitContact, User};
use crate::target::{TargetDepartment, TargetState, TargetUser};
use crate::validate::{Issue, ValidSnapshot};

/// The changes one run makes for one customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The municipality.
    pub cvr: Cvr,
    /// Department changes: creates, updates and reactivations parents first, then deactivations
    /// children first.
    pub departments: Vec<DepartmentItem>,
    /// User changes: creates, updates and reactivations, then deactivations.
    pub users: Vec<UserItem>,
    /// Ineligible STS users, counted by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Ineligible STS users, one by one.
    pub skipped_users: Vec<SkippedUser>,
    /// Deactivations held back for a person to release, or `None`.
    pub held: Option<Held>,
    /// Counts of everything above.
    pub summary: Summary,
    /// Validation issues of the snapshot the plan was made from.
    pub issues: Vec<Issue>,
}

/// What an item does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create the object.
    Create,
    /// Overwrite changed fields.
    Update,
    /// Mark inactive (never delete).
    Deactivate,
    /// Mark active again, overwriting changed fields.
    Reactivate,
}

/// Field → `[old, new]`.
pub type Changes = BTreeMap<String, (Value, Value)>;

/// A department's written fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartmentFields {
    /// Title (the unit's name).
    pub title: String,
    /// Custom id (the unit's user-facing key or UUID).
    pub custom_id: Option<String>,
    /// Parent department's external id; `None` at the top.
    pub parent: Option<UnitId>,
    /// Manager's external id (only with the manager mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<UserId>,
    /// The unit's contact data (only with the `unit_contact` mapping); in JSON its fields
    /// (`postal_address`, `email`, `phone`, `ean`, `p_number`, `cvr`) sit beside the others.
    #[serde(flatten)]
    pub contact: UnitContact,
}

/// One department change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepartmentItem {
    /// What to do.
    pub action: Action,
    /// The unit UUID.
    pub external_id: UnitId,
    /// The fields written (for a deactivation: the target's current values, for reading).
    #[serde(flatten)]
    pub fields: DepartmentFields,
    /// For updates and reactivations: what changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

/// A user's written fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFields {
    /// Login name: the lower-cased e-mail.
    pub user_name: String,
    /// E-mail, lower-cased.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Department memberships (external ids), sorted.
    pub memberships: Vec<UnitId>,
    /// Primary department.
    pub primary_department: Option<UnitId>,
    /// Job title (only with the title mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Work phone (only with the phone mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Manager's external id (only with the manager mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<UserId>,
}

/// Values written on create only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDefaults {
    /// The target's user type.
    pub user_type: String,
    /// Language tag.
    pub language: String,
    /// IANA time zone.
    pub timezone: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// The target sets a random password that must be changed at first login (or invites).
    pub must_change_password: bool,
}

/// One user change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserItem {
    /// What to do.
    pub action: Action,
    /// The Bruger UUID; `None` only when deactivating a target user created by hand.
    pub external_id: Option<UserId>,
    /// The fields written (for a deactivation: the target's current values, for reading).
    #[serde(flatten)]
    pub fields: UserFields,
    /// Customer defaults, on create only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<CreateDefaults>,
    /// For updates and reactivations: what changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

/// Why an STS user is not synced. The order is the order of the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The Bruger is inactive in STS.
    Inactive,
    /// No e-mail address.
    NoEmail,
    /// An e-mail address that is not one.
    InvalidEmail,
    /// The person has no name at all (so no last name either).
    NoLastName,
    /// The person's name has one word: no first name.
    NoFirstName,
    /// No position valid today in an active unit.
    NoPosition,
    /// Positions only outside the top unit's subtree or in excluded units.
    OutsideTopUnit,
    /// Another eligible user has the same e-mail (user names must be unique).
    DuplicateEmail,
}

impl SkipReason {
    /// Data-quality reasons: the person still works here, so their target user is left alone
    /// rather than deactivated.
    pub fn keeps_target_user(self) -> bool {
        matches!(
            self,
            SkipReason::NoEmail
                | SkipReason::InvalidEmail
                | SkipReason::NoFirstName
                | SkipReason::NoLastName
                | SkipReason::DuplicateEmail
        )
    }

    /// The stable key (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Inactive => "inactive",
            SkipReason::NoEmail => "no_email",
            SkipReason::InvalidEmail => "invalid_email",
            SkipReason::NoFirstName => "no_first_name",
            SkipReason::NoLastName => "no_last_name",
            SkipReason::NoPosition => "no_position",
            SkipReason::OutsideTopUnit => "outside_top_unit",
            SkipReason::DuplicateEmail => "duplicate_email",
        }
    }
}

/// One skipped STS user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedUser {
    /// The Bruger UUID.
    pub external_id: UserId,
    /// The STS login name (not the e-mail: that may be what is missing).
    pub sts_user_name: String,
    /// Why.
    pub reason: SkipReason,
}

/// Deactivations held back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// How many deactivations are held (departments + users).
    pub deactivations: u64,
    /// Why, for people.
    pub reason: String,
    /// Why, for scripts.
    pub reasons: Vec<HoldReason>,
    /// The held department deactivations.
    pub departments: Vec<DepartmentItem>,
    /// The held user deactivations.
    pub users: Vec<UserItem>,
    /// Which of them a partial read may simply not have read (unread, not absent): `runs
    /// release` refuses to deactivate these without `--include-unread`.
    #[serde(default, skip_serializing_if = "Unread::is_empty")]
    pub unread: Unread,
}

/// Held deactivations of objects the read may have missed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    /// Departments, by external id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<UnitId>,
    /// Users, by their target user name (unique in the target; users made by hand have no
    /// external id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl Unread {
    /// Whether nothing is marked unread.
    pub fn is_empty(&self) -> bool {
        self.departments.is_empty() && self.users.is_empty()
    }

    /// How many held deactivations are of unread objects.
    pub fn len(&self) -> usize {
        self.departments.len() + self.users.len()
    }
}

impl Held {
    /// Whether this held user deactivation is of a user the read may not have read.
    pub fn is_unread_user(&self, item: &UserItem) -> bool {
        self.unread.users.contains(&item.fields.user_name)
    }

    /// Whether this held department deactivation is of a unit the read may not have read.
    pub fn is_unread_department(&self, item: &DepartmentItem) -> bool {
        self.unread.departments.contains(&item.external_id)
    }
}

/// Why deactivations are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The STS read was incomplete: absent objects may only be unread.
    PartialRead,
    /// STS returned implausibly fewer objects than the last successful run.
    SourceDrop,
    /// More deactivations than `max_deactivations`.
    OverCount,
    /// More deactivations than `max_deactivation_percent`.
    OverPercent,
    /// Part of the run failed (set by the pipeline, not the planner).
    RunFailed,
    /// A newer run of the customer started before this one finished: the newer run's plan
    /// decides (set by the pipeline, not the planner).
    Superseded,
    /// The run was finished by a replay, later than planned: a person releases the
    /// deactivations after `runs release` re-checks them (set by the pipeline).
    Replayed,
}

/// Counts per action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCounts {
    /// Creates.
    pub create: u64,
    /// Updates.
    pub update: u64,
    /// Deactivations (not counting held ones).
    pub deactivate: u64,
    /// Reactivations.
    pub reactivate: u64,
    /// Already as desired.
    pub unchanged: u64,
}

/// The plan's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Department counts.
    pub departments: ActionCounts,
    /// User counts.
    pub users: ActionCounts,
    /// Skipped STS users.
    pub skipped: u64,
    /// Held deactivations.
    pub held: u64,
    /// Active target users absent from STS that are left alone because their e-mail is
    /// outside the customer's domains.
    pub kept_outside_domains: u64,
}

impl Plan {
    /// Whether the plan writes nothing (held deactivations are not written either).
    pub fn is_empty(&self) -> bool {
        self.departments.is_empty() && self.users.is_empty()
    }

    /// Moves every deactivation into [`Plan::held`] (adding to what is held already); does
    /// nothing when there is nothing to hold. The pipeline calls this when part of a run failed.
    pub fn hold_deactivations(&mut self, reason: HoldReason, message: &str) {
        let (departments, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.departments)
            .into_iter()
            .partition(|item| item.action == Action::Deactivate);
        self.departments = kept;
        let (users, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.users)
            .into_iter()
            .partition(|item| item.action == Action::Deactivate);
        self.users = kept;
        if departments.is_empty() && users.is_empty() && self.held.is_none() {
            return; // nothing to hold
        }
        let held = self.held.get_or_insert_with(|| Held {
            deactivations: 0,
            reason: String::new(),
            reasons: Vec::new(),
            departments: Vec::new(),
            users: Vec::new(),
            unread: Unread::default(),
        });
        held.departments.extend(departments);
        held.users.extend(users);
        held.deactivations = (held.departments.len() + held.users.len()) as u64;
        if !held.reasons.contains(&reason) {
            held.reasons.push(reason);
            held.reasons.sort();
            if !held.reason.is_empty() {
                held.reason.push_str("; ");
            }
            held.reason.push_str(message);
        }
        self.recount();
    }

    fn recount(&mut self) {
        let count = |actions: &mut dyn Iterator<Item = Action>, unchanged| {
            let mut counts = ActionCounts {
                unchanged,
                ..ActionCounts::default()
            };
            for action in actions {
                match action {
                    Action::Create => counts.create += 1,
                    Action::Update => counts.update += 1,
                    Action::Deactivate => counts.deactivate += 1,
                    Action::Reactivate => counts.reactivate += 1,
                }
            }
            counts
        };
        self.summary.departments = count(
            &mut self.departments.iter().map(|i| i.action),
            self.summary.departments.unchanged,
        );
        self.summary.users = count(
            &mut self.users.iter().map(|i| i.action),
            self.summary.users.unchanged,
        );
        self.summary.skipped = self.skipped.values().sum();
        self.summary.held = self.held.as_ref().map_or(0, |h| h.deactivations);
    }
}

/// Makes the plan for one customer. `today` decides which positions are valid.
pub fn plan(
    valid: &ValidSnapshot,
    target: &TargetState,
    policy: &Policy,
    today: NaiveDate,
) -> Plan {
    let snapshot = valid.snapshot();
    let tree = Tree::new(&snapshot.units, policy);

    let eligibility = Eligibility::classify(&snapshot.users, &tree, target, today);
    let managers = policy
        .mappings
        .manager
        .then(|| tree.managers(&eligibility.eligible, today));

    let mut summary = Summary::default();
    let mut departments = plan_departments(&tree, target, policy, managers.as_ref(), &mut summary);
    let (mut users, conflicts) = plan_users(
        &eligibility,
        snapshot,
        &tree,
        target,
        policy,
        managers.as_ref(),
        &mut summary,
    );
    // Deactivations come last in each list; they are moved to `held` below when a guard trips.
    departments.sort_by_key(|item| item.action == Action::Deactivate);
    // Users: updates first (a renamed user frees its old user name before a create may take it),
    // then creates, then deactivations; within each, in department order.
    users.sort_by_key(|item| match item.action {
        Action::Update | Action::Reactivate => 0,
        Action::Create => 1,
        Action::Deactivate => 2,
    });

    let mut skipped_users = eligibility.skipped;
    skipped_users.extend(conflicts);
    skipped_users.sort_by(|a, b| {
        a.reason
            .cmp(&b.reason)
            .then(a.external_id.cmp(&b.external_id))
    });
    let mut skipped: BTreeMap<SkipReason, u64> = BTreeMap::new();
    for s in &skipped_users {
        *skipped.entry(s.reason).or_default() += 1;
    }
    let mut plan = Plan {
        cvr: policy.cvr.clone(),
        departments,
        users,
        skipped,
        skipped_users,
        held: None,
        summary,
        issues: valid.issues().to_vec(),
    };
    plan.recount();
    apply_guards(&mut plan, valid, target, policy);
    plan
}

/// One synced department of a run's department tree (what the dashboard draws).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDepartment {
    /// The unit.
    pub uuid: UnitId,
    /// Its title.
    pub title: String,
    /// Its parent department; `None` for the root (the top unit).
    pub parent: Option<UnitId>,
    /// Eligible users whose primary department it is.
    pub users: u64,
}

/// The departments a run syncs (active, in scope, not excluded), parents first and siblings by
/// title, each with the number of eligible users whose primary department it is. The same rules
/// as [`plan`], so the tree shows exactly the departments the target gets.
pub fn department_tree(
    valid: &ValidSnapshot,
    target: &TargetState,
    policy: &Policy,
    today: NaiveDate,
) -> Vec<TreeDepartment> {
    let snapshot = valid.snapshot();
    let tree = Tree::new(&snapshot.units, policy);
    let eligibility = Eligibility::classify(&snapshot.users, &tree, target, today);
    let mut users: HashMap<UnitId, u64> = HashMap::new();
    for e in &eligibility.eligible {
        *users.entry(e.primary.unit_uuid).or_default() += 1;
    }
    tree.synced
        .iter()
        .map(|unit| TreeDepartment {
            uuid: unit.uuid,
            title: unit.name.clone(),
            parent: tree.department_fields(unit, None, false).parent,
            users: users.get(&unit.uuid).copied().unwrap_or(0),
        })
        .collect()
}

/// The unit tree as the customer's scope sees it.
struct Tree<'a> {
    by_id: HashMap<UnitId, &'a Unit>,
    /// Synced units (active, in scope, not excluded, no inactive ancestor), parents first.
    synced: Vec<&'a Unit>,
    synced_set: HashSet<UnitId>,
    /// Units under the top unit and not excluded, whether active or not.
    scope: HashSet<UnitId>,
    root: Option<UnitId>,
    custom_id: CustomIdSource,
}

impl<'a> Tree<'a> {
    fn new(units: &'a [Unit], policy: &Policy) -> Tree<'a> {
        let by_id: HashMap<UnitId, &Unit> = units.iter().map(|u| (u.uuid, u)).collect();
        let mut children: HashMap<UnitId, Vec<&Unit>> = HashMap::new();
        for unit in units {
            if let Some(parent) = unit.parent_uuid {
                children.entry(parent).or_default().push(unit);
            }
        }
        for list in children.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        }
        let root = policy.top_unit.or_else(|| {
            units
                .iter()
                .find(|u| u.parent_uuid.is_none())
                .map(|u| u.uuid)
        });
        let mut synced = Vec::new();
        let mut scope = HashSet::new();
        // Iterative pre-order walk; `true` = every ancestor so far is active.
        let mut stack: Vec<(&Unit, bool)> = root
            .and_then(|r| by_id.get(&r))
            .map(|u| vec![(*u, true)])
            .unwrap_or_default();
        while let Some((unit, chain_active)) = stack.pop() {
            if policy.excluded_units.contains(&unit.uuid) || !scope.insert(unit.uuid) {
                continue;
            }
            let active = chain_active && unit.active;
            if active {
                synced.push(unit);
            }
            if let Some(kids) = children.get(&unit.uuid) {
                stack.extend(kids.iter().rev().map(|k| (*k, active)));
            }
        }
        let synced_set = synced.iter().map(|u| u.uuid).collect();
        Tree {
            by_id,
            synced,
            synced_set,
            scope,
            root,
            custom_id: policy.custom_id,
        }
    }

    fn department_fields(
        &self,
        unit: &Unit,
        managers: Option<&HashMap<UnitId, UserId>>,
        contact: bool,
    ) -> DepartmentFields {
        let custom_id = match (self.custom_id, &unit.user_key) {
            (CustomIdSource::UserKey, Some(key)) if !key.trim().is_empty() => key.clone(),
            _ => unit.uuid.to_string(),
        };
        DepartmentFields {
            title: unit.name.clone(),
            custom_id: Some(custom_id),
            parent: if Some(unit.uuid) == self.root {
                None
            } else {
                unit.parent_uuid
            },
            manager: managers.and_then(|m| m.get(&unit.uuid).copied()),
            contact: if contact {
                unit.contact.clone()
            } else {
                UnitContact::default()
            },
        }
    }

    /// Each synced unit's manager: the eligible user with a valid manager position there
    /// (the longest-standing one, then the lowest UUID).
    fn managers(&self, eligible: &[Eligible<'_>], today: NaiveDate) -> HashMap<UnitId, UserId> {
        let mut best: HashMap<UnitId, (Option<NaiveDate>, UserId)> = HashMap::new();
        for e in eligible {
            for p in e
                .user
                .positions
                .iter()
                .filter(|p| p.manager && p.is_valid_on(today))
            {
                if self.synced_set.contains(&p.unit_uuid) {
                    let candidate = (p.valid_from, e.user.uuid);
                    best.entry(p.unit_uuid)
                        .and_modify(|b| {
                            if candidate < *b {
                                *b = candidate;
                            }
                        })
                        .or_insert(candidate);
                }
            }
        }
        best.into_iter()
            .map(|(unit, (_, user))| (unit, user))
            .collect()
    }

    /// A user's manager: the manager of the primary department, or, where that is the user,
    /// of the nearest ancestor department with another manager.
    fn manager_of(
        &self,
        user: UserId,
        primary: UnitId,
        managers: &HashMap<UnitId, UserId>,
    ) -> Option<UserId> {
        let mut current = Some(primary);
        let mut steps = 0;
        while let Some(unit) = current {
            steps += 1;
            if steps > self.synced.len() + 1 || !self.synced_set.contains(&unit) {
                return None;
            }
            if let Some(manager) = managers.get(&unit).filter(|m| **m != user) {
                return Some(*manager);
            }
            current = if Some(unit) == self.root {
                None
            } else {
                self.by_id.get(&unit).and_then(|u| u.parent_uuid)
            };
        }
        None
    }
}

/// An eligible STS user with what the rules derived for it.
struct Eligible<'a> {
    user: &'a User,
    email: Email,
    first_name: String,
    last_name: String,
    memberships: BTreeSet<UnitId>,
    primary: &'a Position,
}

struct Eligibility<'a> {
    eligible: Vec<Eligible<'a>>,
    skipped: Vec<SkippedUser>,
}

impl<'a> Eligibility<'a> {
    fn classify(
        users: &'a [User],
        tree: &Tree<'_>,
        target: &TargetState,
        today: NaiveDate,
    ) -> Eligibility<'a> {
        let mut eligible = Vec::new();
        let mut skipped = Vec::new();
        for user in users {
            match Self::check(user, tree, today) {
                Ok(e) => eligible.push(e),
                Err(reason) => skipped.push(SkippedUser {
                    external_id: user.uuid,
                    sts_user_name: user.user_name.clone(),
                    reason,
                }),
            }
        }
        // User names (e-mails) must be unique: one user per e-mail is synced. The one the target
        // already holds under that name wins, otherwise the lowest UUID, so the choice is stable.
        let holder: HashMap<&str, UserId> = target
            .users
            .iter()
            .filter_map(|t| t.external_id.map(|id| (t.user_name.as_str(), id)))
            .collect();
        let mut by_email: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in eligible.iter().enumerate() {
            by_email
                .entry(e.email.as_str().to_owned())
                .or_default()
                .push(i);
        }
        let mut losers = HashSet::new();
        for (email, indices) in by_email.iter().filter(|(_, v)| v.len() > 1) {
            let winner = indices
                .iter()
                .copied()
                .find(|i| holder.get(email.as_str()) == Some(&eligible[*i].user.uuid))
                .or_else(|| {
                    indices
                        .iter()
                        .copied()
                        .min_by_key(|i| eligible[*i].user.uuid)
                });
            losers.extend(indices.iter().copied().filter(|i| Some(*i) != winner));
        }
        let mut kept = Vec::with_capacity(eligible.len());
        for (i, e) in eligible.into_iter().enumerate() {
            if losers.contains(&i) {
                skipped.push(SkippedUser {
                    external_id: e.user.uuid,
                    sts_user_name: e.user.user_name.clone(),
                    reason: SkipReason::DuplicateEmail,
                });
            } else {
                kept.push(e);
            }
        }
        skipped.sort_by(|a, b| {
            a.reason
                .cmp(&b.reason)
                .then(a.external_id.cmp(&b.external_id))
        });
        Eligibility {
            eligible: kept,
            skipped,
        }
    }

    fn check(
        user: &'a User,
        tree: &Tree<'_>,
        today: NaiveDate,
    ) -> Result<Eligible<'a>, SkipReason> {
        if !user.active {
            return Err(SkipReason::Inactive);
        }
        let raw_email = user
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let email = Email::parse(raw_email.ok_or(SkipReason::NoEmail)?)
            .map_err(|_| SkipReason::InvalidEmail)?;
        let name = user.name_parts();
        let last_name = name.last.ok_or(SkipReason::NoLastName)?;
        let first_name = name.first.ok_or(SkipReason::NoFirstName)?;
        let valid: Vec<&Position> = user
            .positions
            .iter()
            .filter(|p| p.is_valid_on(today))
            .collect();
        let synced: Vec<&Position> = valid
            .iter()
            .copied()
            .filter(|p| tree.synced_set.contains(&p.unit_uuid))
            .collect();
        let Some(primary) = synced
            .iter()
            .copied()
            .min_by_key(|p| (p.valid_from, p.unit_uuid))
        else {
            let outside = valid.iter().any(|p| !tree.scope.contains(&p.unit_uuid));
            return Err(if outside {
                SkipReason::OutsideTopUnit
            } else {
                SkipReason::NoPosition
            });
        };
        Ok(Eligible {
            user,
            email,
            first_name,
            last_name,
            memberships: synced.iter().map(|p| p.unit_uuid).collect(),
            primary,
        })
    }
}

fn plan_departments(
    tree: &Tree<'_>,
    target: &TargetState,
    policy: &Policy,
    managers: Option<&HashMap<UnitId, UserId>>,
    summary: &mut Summary,
) -> Vec<DepartmentItem> {
    let mut by_id: HashMap<UnitId, &TargetDepartment> = HashMap::new();
    for department in &target.departments {
        if let Some(id) = department.external_id {
            by_id.entry(id).or_insert(department);
        }
    }
    let mut items = Vec::new();
    for unit in &tree.synced {
        let fields = tree.department_fields(unit, managers, policy.mappings.unit_contact);
        match by_id.get(&unit.uuid) {
            None => items.push(DepartmentItem {
                action: Action::Create,
                external_id: unit.uuid,
                fields,
                changes: None,
            }),
            Some(current) => {
                let changes: Changes =
                    crate::fields::department_differences(current, &fields, policy.mappings)
                        .into_iter()
                        .map(|field| (field.as_str().to_owned(), field.values(current, &fields)))
                        .collect();
                let action = if !current.active {
                    Action::Reactivate
                } else if !changes.is_empty() {
                    Action::Update
                } else {
                    summary.departments.unchanged += 1;
                    continue;
                };
                items.push(DepartmentItem {
                    action,
                    external_id: unit.uuid,
                    fields,
                    changes: Some(changes),
                });
            }
        }
    }
    // Managed departments that are no longer synced: deactivate, deepest first.
    let depth = |mut id: UnitId| {
        let mut n = 0usize;
        while let Some(parent) = by_id.get(&id).and_then(|d| d.parent) {
            n += 1;
            if n > by_id.len() {
                break;
            }
            id = parent;
        }
        n
    };
    let mut gone: Vec<(usize, &TargetDepartment, UnitId)> = by_id
        .iter()
        .filter(|(id, d)| d.active && !tree.synced_set.contains(id))
        .map(|(id, d)| (depth(*id), *d, *id))
        .collect();
    gone.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.title.cmp(&b.1.title))
            .then(a.2.cmp(&b.2))
    });
    items.extend(gone.into_iter().map(|(_, d, id)| DepartmentItem {
        action: Action::Deactivate,
        external_id: id,
        fields: DepartmentFields {
            title: d.title.clone(),
            custom_id: d.custom_id.clone(),
            parent: d.parent,
            manager: d.manager,
            contact: d.contact.clone(),
        },
        changes: None,
    }));
    items
}

fn plan_users(
    eligibility: &Eligibility<'_>,
    snapshot: &Snapshot,
    tree: &Tree<'_>,
    target: &TargetState,
    policy: &Policy,
    managers: Option<&HashMap<UnitId, UserId>>,
    summary: &mut Summary,
) -> (Vec<UserItem>, Vec<SkippedUser>) {
    let sts_users = &snapshot.users;
    // A read that may have missed positions (or the units they name) cannot verify that a
    // membership ended or a primary department moved: those are kept as the target has them.
    let positions_verified = snapshot
        .partial
        .as_ref()
        .is_none_or(|p| p.positions_complete());
    let eligible_ids: HashSet<UserId> = eligibility.eligible.iter().map(|e| e.user.uuid).collect();
    let mut by_ext: HashMap<UserId, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, user) in target.users.iter().enumerate() {
        if let Some(id) = user.external_id {
            by_ext.entry(id).or_insert(i);
        }
        by_name.entry(user.user_name.to_lowercase()).or_insert(i);
    }
    // A target user may be adopted by user name when it was made by hand, or carries the
    // external id of someone no longer eligible (the account follows the e-mail address).
    let adoptable = |i: usize| {
        target.users[i]
            .external_id
            .is_none_or(|id| !eligible_ids.contains(&id))
    };
    let mut claimed: HashSet<usize> = HashSet::new();

    // Target users of people skipped for missing data are left alone, not deactivated: by
    // external id, and, when only the name is missing, by their (valid) e-mail as user name.
    let sts_by_id: HashMap<UserId, &User> = sts_users.iter().map(|u| (u.uuid, u)).collect();
    for skipped in eligibility
        .skipped
        .iter()
        .filter(|s| s.reason.keeps_target_user())
    {
        if let Some(i) = by_ext.get(&skipped.external_id) {
            claimed.insert(*i);
            continue;
        }
        if matches!(
            skipped.reason,
            SkipReason::NoFirstName | SkipReason::NoLastName
        ) {
            let email = sts_by_id
                .get(&skipped.external_id)
                .and_then(|u| u.email.as_deref())
                .and_then(|e| Email::parse(e).ok());
            if let Some(i) = email.and_then(|e| by_name.get(e.as_str()).copied()) {
                if !claimed.contains(&i) && adoptable(i) {
                    claimed.insert(i);
                }
            }
        }
    }

    let position_of: HashMap<UnitId, usize> = tree
        .synced
        .iter()
        .enumerate()
        .map(|(i, u)| (u.uuid, i))
        .collect();
    let mut order: Vec<&Eligible<'_>> = eligibility.eligible.iter().collect();
    order.sort_by_key(|e| {
        (
            position_of.get(&e.primary.unit_uuid).copied(),
            e.email.as_str().to_owned(),
        )
    });

    // Match: by external id first (for everyone), then by user name.
    let mut matched: HashMap<UserId, usize> = HashMap::new();
    for e in &order {
        if let Some(i) = by_ext.get(&e.user.uuid) {
            matched.insert(e.user.uuid, *i);
            claimed.insert(*i);
        }
    }
    for e in &order {
        if matched.contains_key(&e.user.uuid) {
            continue;
        }
        if let Some(i) = by_name.get(e.email.as_str()).copied() {
            if !claimed.contains(&i) && adoptable(i) {
                matched.insert(e.user.uuid, i);
                claimed.insert(i);
            }
        }
    }
    // A user name held by another target user (not one being renamed away from it) cannot be
    // taken: the target would refuse it on every run. Both accounts are left alone and the
    // person is reported as `duplicate_email`.
    let renamed_away: HashSet<usize> = order
        .iter()
        .filter_map(|e| {
            let i = *matched.get(&e.user.uuid)?;
            (!target.users[i]
                .user_name
                .eq_ignore_ascii_case(e.email.as_str()))
            .then_some(i)
        })
        .collect();
    let mut conflicts: HashSet<UserId> = HashSet::new();
    let mut extra_skips = Vec::new();
    for e in &order {
        let own = matched.get(&e.user.uuid).copied();
        if let Some(holder) = by_name.get(e.email.as_str()).copied() {
            if Some(holder) != own && !renamed_away.contains(&holder) {
                conflicts.insert(e.user.uuid);
                claimed.insert(holder);
                extra_skips.push(SkippedUser {
                    external_id: e.user.uuid,
                    sts_user_name: e.user.user_name.clone(),
                    reason: SkipReason::DuplicateEmail,
                });
            }
        }
    }
    order.retain(|e| !conflicts.contains(&e.user.uuid));

    let mut items = Vec::new();
    for e in order {
        let fields = UserFields {
            user_name: e.email.as_str().to_owned(),
            email: Some(e.email.as_str().to_owned()),
            first_name: Some(e.first_name.clone()),
            last_name: Some(e.last_name.clone()),
            memberships: e.memberships.iter().copied().collect(),
            primary_department: Some(e.primary.unit_uuid),
            title: policy
                .mappings
                .title
                .then(|| e.primary.title.clone())
                .flatten()
                .filter(|t| !t.trim().is_empty()),
            phone: policy
                .mappings
                .phone
                .then(|| {
                    e.user
                        .phone
                        .as_deref()
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                })
                .flatten(),
            manager: managers.and_then(|m| tree.manager_of(e.user.uuid, e.primary.unit_uuid, m)),
        };
        let Some(index) = matched.get(&e.user.uuid).copied() else {
            items.push(UserItem {
                action: Action::Create,
                external_id: Some(e.user.uuid),
                fields,
                defaults: Some(CreateDefaults {
                    user_type: policy.defaults.user_type.clone(),
                    language: policy.defaults.language.clone(),
                    timezone: policy.defaults.timezone.clone(),
                    currency: policy.defaults.currency.clone(),
                    must_change_password: true,
                }),
                changes: None,
            });
            continue;
        };
        let current = &target.users[index];
        let mut fields = fields;
        if !positions_verified {
            keep_unverified_placement(&mut fields, current);
        }
        let changes = user_changes(current, e.user.uuid, &fields, policy);
        let action = if !current.active {
            Action::Reactivate
        } else if !changes.is_empty() {
            Action::Update
        } else {
            summary.users.unchanged += 1;
            continue;
        };
        items.push(UserItem {
            action,
            external_id: Some(e.user.uuid),
            fields,
            defaults: None,
            changes: Some(changes),
        });
    }

    // Active target users nobody claimed: deactivate those in the customer's domains.
    let mut gone = Vec::new();
    for (i, user) in target.users.iter().enumerate() {
        if !user.active || claimed.contains(&i) {
            continue;
        }
        if in_domains(user, policy) {
            gone.push(UserItem {
                action: Action::Deactivate,
                external_id: user.external_id,
                fields: UserFields {
                    user_name: user.user_name.clone(),
                    email: user.email.clone(),
                    first_name: user.first_name.clone(),
                    last_name: user.last_name.clone(),
                    memberships: user.memberships.iter().copied().collect(),
                    primary_department: user.primary_department,
                    title: user.title.clone(),
                    phone: user.phone.clone(),
                    manager: user.manager,
                },
                defaults: None,
                changes: None,
            });
        } else {
            summary.kept_outside_domains += 1;
        }
    }
    gone.sort_by(|a, b| a.fields.user_name.cmp(&b.fields.user_name));
    items.extend(gone);
    (items, extra_skips)
}

/// For a read that may have missed positions: keeps every membership the target user has (adding
/// the ones read is verified; removing one is not) and its primary department, with the title
/// and manager that go with it, when the read would move it.
fn keep_unverified_placement(fields: &mut UserFields, current: &TargetUser) {
    let mut memberships: BTreeSet<UnitId> = fields.memberships.iter().copied().collect();
    memberships.extend(current.memberships.iter().copied());
    fields.memberships = memberships.into_iter().collect();
    if let Some(primary) = current.primary_department {
        if fields.primary_department != Some(primary) {
            fields.primary_department = Some(primary);
            fields.title.clone_from(&current.title);
            fields.manager = current.manager;
        }
    }
}

/// Whether a target user is in the customer's domains (by e-mail, else by user name).
pub fn in_domains(user: &TargetUser, policy: &Policy) -> bool {
    user.email
        .as_deref()
        .or(Some(user.user_name.as_str()))
        .and_then(|e| Email::parse(e).ok())
        .is_some_and(|e| e.is_in(&policy.domains))
}

fn user_changes(current: &TargetUser, id: UserId, fields: &UserFields, policy: &Policy) -> Changes {
    crate::fields::user_differences(current, Some(id), fields, policy.mappings)
        .into_iter()
        .map(|field| {
            (
                field.as_str().to_owned(),
                field.values(current, Some(id), fields),
            )
        })
        .collect()
}

/// The deactivations in `plan` of objects a partial read may not have read: users it may have
/// missed, users it read but whose positions (or their units) it may have missed (not inactive
/// ones: their state was read), and units it may have missed.
fn unread_deactivations(plan: &Plan, valid: &ValidSnapshot, partial: &PartialRead) -> Unread {
    let read: HashMap<UserId, &User> = valid.snapshot().users.iter().map(|u| (u.uuid, u)).collect();
    let users = plan
        .users
        .iter()
        .filter(|item| item.action == Action::Deactivate)
        .filter(|item| match item.external_id.and_then(|id| read.get(&id)) {
            Some(user) => user.active && !partial.positions_complete(),
            None => partial.may_have_missed_user(item.external_id),
        })
        .map(|item| item.fields.user_name.clone())
        .collect();
    let departments = plan
        .departments
        .iter()
        .filter(|item| item.action == Action::Deactivate)
        .filter(|item| partial.may_have_missed_unit(item.external_id))
        .map(|item| item.external_id)
        .collect();
    Unread { departments, users }
}

fn apply_guards(plan: &mut Plan, valid: &ValidSnapshot, target: &TargetState, policy: &Policy) {
    if let Some(partial) = &valid.snapshot().partial {
        let unread = unread_deactivations(plan, valid, partial);
        plan.hold_deactivations(
            HoldReason::PartialRead,
            &format!(
                "the STS read was incomplete ({partial}), so absent objects may only be unread"
            ),
        );
        if let Some(held) = plan.held.as_mut() {
            held.unread = unread;
        }
    }
    if let Some(drop) = valid.source_drop() {
        plan.hold_deactivations(
            HoldReason::SourceDrop,
            &format!("STS returned fewer objects than the last run: {drop}"),
        );
    }
    let guards = policy.guards;
    let n_departments = plan.summary.departments.deactivate;
    let n_users = plan.summary.users.deactivate;
    let base_departments = target
        .departments
        .iter()
        .filter(|d| d.active && d.external_id.is_some())
        .count() as u64;
    let base_users = target
        .users
        .iter()
        .filter(|u| u.active && in_domains(u, policy))
        .count() as u64;
    for (what, n, base) in [
        ("departments", n_departments, base_departments),
        ("users", n_users, base_users),
    ] {
        if n == 0 {
            continue;
        }
        if n > u64::from(guards.max_deactivations) {
            plan.hold_deactivations(
                HoldReason::OverCount,
                &format!(
                    "{n} {what} would be deactivated, more than max_deactivations = {}",
                    guards.max_deactivations
                ),
            );
        }
        let percent = if base == 0 {
            100.0
        } else {
            n as f64 * 100.0 / base as f64
        };
        if percent > guards.max_deactivation_percent {
            plan.hold_deactivations(
                HoldReason::OverPercent,
                &format!(
                    "{n} of {base} active {what} ({percent:.1} %) would be deactivated, more than max_deactivation_percent = {} %",
                    guards.max_deactivation_percent
                ),
            );
        }
    }
}
