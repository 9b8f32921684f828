//! Snapshot validation (docs/design.md §2 step 2): structural faults refuse the snapshot, everything
//! else becomes an issue in the run report while the usable rest goes on to the planner.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{UnitId, UserId};
use crate::policy::Policy;
use crate::snapshot::{Snapshot, Unit, User};

/// A snapshot that passed validation, with the issues found on the way.
///
/// Only [`validate`] builds one, so a plan can only be made from a validated snapshot.
#[derive(Clone, Debug)]
pub struct ValidSnapshot {
    snapshot: Snapshot,
    issues: Vec<Issue>,
    source_drop: Option<String>,
}

impl ValidSnapshot {
    /// The usable snapshot (duplicates and dangling positions removed).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// What validation noticed but did not refuse.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// `Some(explanation)` when STS returned implausibly fewer objects than the last successful run.
    pub fn source_drop(&self) -> Option<&str> {
        self.source_drop.as_deref()
    }

    /// Counts to compare the next run against.
    pub fn counts(&self) -> SourceCounts {
        SourceCounts::of(&self.snapshot)
    }
}

/// Active unit and user counts of a snapshot, kept from the last successful run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Active units.
    pub units: u64,
    /// Active users.
    pub users: u64,
}

impl SourceCounts {
    /// Counts the active units and users of a snapshot.
    pub fn of(snapshot: &Snapshot) -> SourceCounts {
        SourceCounts {
            units: snapshot.units.iter().filter(|u| u.active).count() as u64,
            users: snapshot.users.iter().filter(|u| u.active).count() as u64,
        }
    }
}

/// Something validation noticed that does not make the snapshot unusable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Stable machine-readable code.
    pub code: IssueCode,
    /// The unit or user concerned, when there is one.
    pub object: Option<Uuid>,
    /// What happened, for people.
    pub message: String,
}

/// The kinds of [`Issue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueCode {
    /// A unit's parent is not in the snapshot, so the unit is outside the synced tree.
    MissingParent,
    /// An inactive unit has active units below it; they are not synced.
    ActiveBelowInactive,
    /// A configured excluded unit is not in the snapshot.
    UnknownExcludedUnit,
    /// The same user UUID appeared more than once; the first was kept.
    DuplicateUser,
    /// A position refers to a unit that is not in the snapshot; the position was dropped.
    UnknownPositionUnit,
    /// STS returned implausibly fewer units or users than the last successful run.
    SourceDrop,
    /// The read was incomplete.
    PartialRead,
}

/// Why a snapshot was refused. Nothing is written for a refused snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Fault {
    /// No units at all.
    Empty,
    /// No unit without a parent, and no top unit configured.
    NoRoot,
    /// Several units without a parent, and no top unit configured.
    SeveralRoots {
        /// The roots.
        roots: Vec<UnitId>,
    },
    /// A unit's parent is not in the snapshot (and no top unit is configured).
    MissingParent {
        /// The unit.
        unit: UnitId,
        /// The parent it names.
        parent: UnitId,
    },
    /// Units whose parents form a cycle.
    Cycle {
        /// The units on the cycle, sorted.
        units: Vec<UnitId>,
    },
    /// Two units share a UUID.
    DuplicateUnit {
        /// The UUID.
        unit: UnitId,
    },
    /// The configured top unit is not in the snapshot.
    TopUnitMissing {
        /// The configured unit.
        unit: UnitId,
    },
    /// The configured top unit is inactive.
    TopUnitInactive {
        /// The configured unit.
        unit: UnitId,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Empty => write!(f, "STS returned no units"),
            Fault::NoRoot => write!(f, "no unit is without a parent, so there is no root"),
            Fault::SeveralRoots { roots } => write!(
                f,
                "{} units have no parent ({}); set top_unit to the one to sync",
                roots.len(),
                join(roots)
            ),
            Fault::MissingParent { unit, parent } => {
                write!(
                    f,
                    "unit {unit} names parent {parent}, which STS did not return"
                )
            }
            Fault::Cycle { units } => write!(f, "units form a parent cycle: {}", join(units)),
            Fault::DuplicateUnit { unit } => write!(f, "unit {unit} appears more than once"),
            Fault::TopUnitMissing { unit } => {
                write!(f, "the configured top_unit {unit} is not in STS")
            }
            Fault::TopUnitInactive { unit } => {
                write!(f, "the configured top_unit {unit} is inactive")
            }
        }
    }
}

fn join(ids: &[UnitId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A refused snapshot: every structural fault found, plus the issues.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("the STS snapshot is unusable: {}", self.faults.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidSnapshot {
    /// The faults, at least one.
    pub faults: Vec<Fault>,
    /// The non-fatal issues found before refusing.
    pub issues: Vec<Issue>,
}

/// Validates a snapshot against a customer's scope and the previous successful run's counts.
pub fn validate(
    mut snapshot: Snapshot,
    policy: &Policy,
    previous: Option<SourceCounts>,
) -> Result<ValidSnapshot, InvalidSnapshot> {
    let mut faults = Vec::new();
    let mut issues = Vec::new();

    if snapshot.units.is_empty() {
        faults.push(Fault::Empty);
    }

    let mut seen = HashSet::new();
    let mut duplicates = BTreeSet::new();
    for unit in &snapshot.units {
        if !seen.insert(unit.uuid) {
            duplicates.insert(unit.uuid);
        }
    }
    faults.extend(
        duplicates
            .into_iter()
            .map(|unit| Fault::DuplicateUnit { unit }),
    );

    let by_id: HashMap<UnitId, &Unit> = snapshot.units.iter().map(|u| (u.uuid, u)).collect();
    let tree_faults = check_tree(&snapshot.units, &by_id, policy, &mut issues);
    faults.extend(tree_faults);

    for excluded in &policy.excluded_units {
        if !by_id.contains_key(excluded) {
            issues.push(Issue {
                code: IssueCode::UnknownExcludedUnit,
                object: Some(excluded.0),
                message: format!("excluded unit {excluded} is not in STS"),
            });
        }
    }
    report_active_below_inactive(&snapshot.units, &by_id, &mut issues);

    let unit_ids: HashSet<UnitId> = by_id.keys().copied().collect();
    snapshot.users = clean_users(std::mem::take(&mut snapshot.users), &unit_ids, &mut issues);

    if let Some(reason) = &snapshot.partial {
        issues.push(Issue {
            code: IssueCode::PartialRead,
            object: None,
            message: format!("the read was incomplete: {reason}"),
        });
    }

    let source_drop = previous.and_then(|previous| {
        let now = SourceCounts::of(&snapshot);
        let limit = policy.guards.max_source_drop_percent;
        let mut drops = Vec::new();
        for (what, before, after) in [("units", previous.units, now.units), ("users", previous.users, now.users)] {
            if before > 0 && after < before {
                let percent = (before - after) as f64 * 100.0 / before as f64;
                if percent > limit {
                    drops.push(format!(
                        "active {what} fell from {before} to {after} ({percent:.1} % fewer, limit {limit} %)"
                    ));
                }
            }
        }
        (!drops.is_empty()).then(|| drops.join("; "))
    });
    if let Some(message) = &source_drop {
        issues.push(Issue {
            code: IssueCode::SourceDrop,
            object: None,
            message: format!("since the last successful run, {message}"),
        });
    }

    if faults.is_empty() {
        Ok(ValidSnapshot {
            snapshot,
            issues,
            source_drop,
        })
    } else {
        Err(InvalidSnapshot { faults, issues })
    }
}

fn check_tree(
    units: &[Unit],
    by_id: &HashMap<UnitId, &Unit>,
    policy: &Policy,
    issues: &mut Vec<Issue>,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    // Parent pointers: find cycles by walking up from each unit with a three-colour marking.
    let mut state: HashMap<UnitId, u8> = HashMap::new(); // 1 = on the current path, 2 = done
    let mut cycles: BTreeSet<Vec<UnitId>> = BTreeSet::new();
    for unit in units {
        let mut path = Vec::new();
        let mut current = Some(unit.uuid);
        while let Some(id) = current {
            match state.get(&id) {
                Some(2) => break,
                Some(_) => {
                    let start = path.iter().position(|p| *p == id).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.sort();
                    cycles.insert(cycle);
                    break;
                }
                None => {
                    state.insert(id, 1);
                    path.push(id);
                    current = by_id
                        .get(&id)
                        .and_then(|u| u.parent_uuid)
                        .filter(|p| by_id.contains_key(p));
                }
            }
        }
        for id in path {
            state.insert(id, 2);
        }
    }
    faults.extend(cycles.into_iter().map(|units| Fault::Cycle { units }));

    let orphans: Vec<(UnitId, UnitId)> = units
        .iter()
        .filter_map(|u| {
            u.parent_uuid
                .filter(|p| !by_id.contains_key(p))
                .map(|p| (u.uuid, p))
        })
        .collect();
    match policy.top_unit {
        Some(top) => {
            match by_id.get(&top) {
                None => faults.push(Fault::TopUnitMissing { unit: top }),
                Some(unit) if !unit.active => faults.push(Fault::TopUnitInactive { unit: top }),
                Some(_) => {}
            }
            for (unit, parent) in orphans {
                issues.push(Issue {
                    code: IssueCode::MissingParent,
                    object: Some(unit.0),
                    message: format!(
                        "unit {unit} names parent {parent}, which STS did not return; it is outside the synced tree"
                    ),
                });
            }
        }
        None => {
            faults.extend(
                orphans
                    .into_iter()
                    .map(|(unit, parent)| Fault::MissingParent { unit, parent }),
            );
            let roots: Vec<UnitId> = units
                .iter()
                .filter(|u| u.parent_uuid.is_none())
                .map(|u| u.uuid)
                .collect();
            match roots.len() {
                0 if !units.is_empty() => faults.push(Fault::NoRoot),
                0 | 1 => {}
                _ => faults.push(Fault::SeveralRoots { roots }),
            }
        }
    }
    faults
}

fn report_active_below_inactive(
    units: &[Unit],
    by_id: &HashMap<UnitId, &Unit>,
    issues: &mut Vec<Issue>,
) {
    // For each active unit, the nearest inactive ancestor (if any) cuts it off.
    let mut cut_off: BTreeMap<UnitId, u64> = BTreeMap::new();
    for unit in units.iter().filter(|u| u.active) {
        let mut steps = 0;
        let mut current = unit.parent_uuid;
        while let Some(id) = current {
            steps += 1;
            if steps > units.len() {
                break; // a cycle, reported as a fault
            }
            let Some(parent) = by_id.get(&id) else { break };
            if !parent.active {
                *cut_off.entry(id).or_default() += 1;
                break;
            }
            current = parent.parent_uuid;
        }
    }
    for (inactive, n_active) in cut_off {
        issues.push(Issue {
            code: IssueCode::ActiveBelowInactive,
            object: Some(inactive.0),
            message: format!(
                "unit {inactive} is inactive but {n_active} active units below it are not synced"
            ),
        });
    }
}

fn clean_users(users: Vec<User>, unit_ids: &HashSet<UnitId>, issues: &mut Vec<Issue>) -> Vec<User> {
    let mut seen: HashSet<UserId> = HashSet::new();
    let mut kept = Vec::with_capacity(users.len());
    for mut user in users {
        if !seen.insert(user.uuid) {
            issues.push(Issue {
                code: IssueCode::DuplicateUser,
                object: Some(user.uuid.0),
                message: format!(
                    "user {} appears more than once; the first was kept",
                    user.uuid
                ),
            });
            continue;
        }
        user.positions.retain(|position| {
            let known = unit_ids.contains(&position.unit_uuid);
            if !known {
                issues.push(Issue {
                    code: IssueCode::UnknownPositionUnit,
                    object: Some(user.uuid.0),
                    message: format!(
                        "user {} has a position in unit {}, which STS did not return; the position was ignored",
                        user.uuid, position.unit_uuid
                    ),
                });
            }
            known
        });
        kept.push(user);
    }
    kept
}
