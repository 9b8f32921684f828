//! Builders and a compact plan rendering shared by the planner tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use orgsync_model::ids::{Cvr, Domain, UnitId, UserId};
use orgsync_model::plan::{self, Action, Plan};
use orgsync_model::policy::{CustomIdSource, Guards, Mappings, Policy, UserDefaults};
use orgsync_model::snapshot::{Position, Snapshot, Unit, User};
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};
use orgsync_model::validate::{self, SourceCounts};
use uuid::Uuid;

pub const TODAY: (i32, u32, u32) = (2026, 11, 22);

pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(TODAY.0, TODAY.1, TODAY.2).unwrap()
}

pub fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Unit n has UUID 00000000-0000-0000-0000-0000000000nn (in hex) and is printed `uN`.
pub fn u(n: u128) -> UnitId {
    UnitId(Uuid::from_u128(n))
}

/// User n has UUID with the high bit set and is printed `pN`.
pub fn p(n: u128) -> UserId {
    UserId(Uuid::from_u128((1 << 100) | n))
}

pub fn unit(n: u128, name: &str, parent: Option<u128>) -> Unit {
    Unit {
        uuid: u(n),
        name: name.to_owned(),
        user_key: Some(format!("K{n}")),
        parent_uuid: parent.map(u),
        active: true,
        kind: None,
        extra: Default::default(),
    }
}

pub fn inactive(mut unit: Unit) -> Unit {
    unit.active = false;
    unit
}

pub fn position(unit: u128) -> Position {
    Position {
        unit_uuid: u(unit),
        title: Some("Medarbejder".to_owned()),
        manager: false,
        valid_from: None,
        valid_to: None,
    }
}

pub fn user(n: u128, name: &str, email: &str, units: &[u128]) -> User {
    User {
        uuid: p(n),
        user_name: format!("U{n}"),
        name: (!name.is_empty()).then(|| name.to_owned()),
        email: (!email.is_empty()).then(|| email.to_owned()),
        phone: None,
        active: true,
        positions: units.iter().map(|unit| position(*unit)).collect(),
    }
}

/// Root 1 "Kommune" with children 2 "Økonomi" and 3 "Skole", and 4 "Kantine" under 3.
pub fn small_tree() -> Vec<Unit> {
    vec![
        unit(1, "Kommune", None),
        unit(2, "Økonomi", Some(1)),
        unit(3, "Skole", Some(1)),
        unit(4, "Kantine", Some(3)),
    ]
}

pub fn snapshot(units: Vec<Unit>, users: Vec<User>) -> Snapshot {
    Snapshot {
        cvr: Cvr::parse("11111111").unwrap(),
        units,
        users,
        partial: None,
    }
}

pub fn policy() -> Policy {
    Policy {
        cvr: Cvr::parse("11111111").unwrap(),
        domains: vec![Domain::parse("kommune.dk").unwrap()],
        top_unit: None,
        excluded_units: BTreeSet::new(),
        custom_id: CustomIdSource::UserKey,
        defaults: UserDefaults {
            user_type: "employee".to_owned(),
            language: "da".to_owned(),
            timezone: "Europe/Copenhagen".to_owned(),
            currency: "DKK".to_owned(),
        },
        guards: Guards {
            max_deactivations: 1000,
            max_deactivation_percent: 100.0,
            max_source_drop_percent: 100.0,
        },
        mappings: Mappings::default(),
    }
}

/// The target as a full sync of `snapshot` under `policy` would leave it.
pub fn synced(snapshot: &Snapshot, policy: &Policy) -> TargetState {
    let mut target = TargetState::default();
    target.apply(&make_plan(snapshot, &target, policy));
    target
}

pub fn make_plan(snapshot: &Snapshot, target: &TargetState, policy: &Policy) -> Plan {
    make_plan_after(snapshot, target, policy, None)
}

pub fn make_plan_after(
    snapshot: &Snapshot,
    target: &TargetState,
    policy: &Policy,
    previous: Option<SourceCounts>,
) -> Plan {
    let valid = validate::validate(snapshot.clone(), policy, previous).expect("snapshot is valid");
    plan::plan(&valid, target, policy, today())
}

pub fn target_department(n: u128, title: &str, parent: Option<u128>) -> TargetDepartment {
    TargetDepartment {
        external_id: Some(u(n)),
        title: title.to_owned(),
        custom_id: Some(format!("K{n}")),
        parent: parent.map(u),
        manager: None,
        active: true,
    }
}

pub fn target_user(
    external: Option<u128>,
    email: &str,
    first: &str,
    last: &str,
    units: &[u128],
) -> TargetUser {
    TargetUser {
        external_id: external.map(p),
        user_name: email.to_owned(),
        email: Some(email.to_owned()),
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
        memberships: units.iter().map(|n| u(*n)).collect(),
        primary_department: units.first().map(|n| u(*n)),
        title: None,
        phone: None,
        manager: None,
        active: true,
    }
}

/// One line per item, ids printed as `uN`/`pN`, e.g. `dept create u2 parent=u1`,
/// `user update p3 [first_name, memberships]`, `skip p4 no_email`, `held 2 [over_count]`.
pub fn compact(plan: &Plan) -> String {
    let names = IdNames::default();
    let mut lines = Vec::new();
    for item in &plan.departments {
        let mut line = format!(
            "dept {} {}",
            action(item.action),
            names.unit(item.external_id)
        );
        match item.action {
            Action::Create => line.push_str(&format!(
                " parent={} custom_id={}",
                item.fields.parent.map_or("-".to_owned(), |p| names.unit(p)),
                item.fields.custom_id.as_deref().unwrap_or("-")
            )),
            Action::Update | Action::Reactivate => line.push_str(&changed(item.changes.as_ref())),
            Action::Deactivate => {}
        }
        lines.push(line);
    }
    for item in &plan.users {
        let id = item
            .external_id
            .map_or_else(|| item.fields.user_name.clone(), |id| names.user(id));
        let mut line = format!("user {} {id}", action(item.action));
        match item.action {
            Action::Create => line.push_str(&format!(
                " {} first={:?} last={:?} in={}",
                item.fields.user_name,
                item.fields.first_name.as_deref().unwrap_or("-"),
                item.fields.last_name.as_deref().unwrap_or("-"),
                item.fields
                    .memberships
                    .iter()
                    .map(|m| names.unit(*m))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            Action::Update | Action::Reactivate => line.push_str(&changed(item.changes.as_ref())),
            Action::Deactivate => {}
        }
        lines.push(line);
    }
    for skipped in &plan.skipped_users {
        lines.push(format!(
            "skip {} {}",
            names.user(skipped.external_id),
            skipped.reason.as_str()
        ));
    }
    if let Some(held) = &plan.held {
        let reasons: Vec<String> = held
            .reasons
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        lines.push(format!(
            "held {} [{}]",
            held.deactivations,
            reasons.join(", ")
        ));
    }
    lines.join("\n")
}

fn action(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Deactivate => "deactivate",
        Action::Reactivate => "reactivate",
    }
}

fn changed(changes: Option<&plan::Changes>) -> String {
    let fields: Vec<&str> = changes
        .into_iter()
        .flat_map(|c| c.keys().map(String::as_str))
        .collect();
    format!(" [{}]", fields.join(", "))
}

#[derive(Default)]
struct IdNames(HashMap<Uuid, String>);

impl IdNames {
    fn unit(&self, id: UnitId) -> String {
        format!("u{}", id.0.as_u128())
    }
    fn user(&self, id: UserId) -> String {
        format!("p{}", id.0.as_u128() & !(1 << 100))
    }
}

/// Asserts the compact rendering, with a readable diff on failure.
#[track_caller]
pub fn check(plan: &Plan, expected: &str) {
    let actual = compact(plan);
    let expected = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        actual, expected,
        "\n--- actual ---\n{actual}\n--- expected ---\n{expected}\n"
    );
}
