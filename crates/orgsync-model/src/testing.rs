//! Builders for tests of orgsync and of crates built on it (enabled by the `testing` feature):
//! small municipalities, users, policies and targets, with UUIDs derived from small numbers
//! so that expectations stay readable (`u(3)` is unit 3, `p(7)` is user 7).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test builders: a panic is the failure message

use std::collections::BTreeSet;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::ids::{Cvr, Domain, UnitId, UserId};
use crate::plan::{self, Plan};
use crate::policy::{CustomIdSource, Guards, Mappings, Policy, UserDefaults};
use crate::snapshot::{Position, Snapshot, Unit, User};
use crate::target::{TargetDepartment, TargetState, TargetUser};
use crate::validate::{self, SourceCounts};

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
        contact: Default::default(),
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
        contact: Default::default(),
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
