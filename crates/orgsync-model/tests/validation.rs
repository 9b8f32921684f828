//! Snapshot validation (docs/design.md §2 step 2): structural faults refuse, the rest are issues.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use common::*;
use orgsync_model::validate::{Fault, IssueCode, SourceCounts, validate};

fn faults(
    units: Vec<orgsync_model::snapshot::Unit>,
    policy: &orgsync_model::policy::Policy,
) -> Vec<Fault> {
    validate(snapshot(units, vec![]), policy, None)
        .expect_err("snapshot should be refused")
        .faults
}

#[test]
fn an_empty_snapshot_is_refused() {
    assert_eq!(faults(vec![], &policy()), [Fault::Empty]);
}

#[test]
fn several_roots_are_refused_unless_a_top_unit_is_configured() {
    let units = vec![
        unit(1, "A", None),
        unit(2, "B", None),
        unit(3, "C", Some(2)),
    ];
    let found = faults(units.clone(), &policy());
    assert_eq!(
        found,
        [Fault::SeveralRoots {
            roots: vec![u(1), u(2)]
        }]
    );
    assert!(
        found[0].to_string().contains("set top_unit"),
        "{}",
        found[0]
    );

    let mut with_top = policy();
    with_top.top_unit = Some(u(2));
    assert!(validate(snapshot(units, vec![]), &with_top, None).is_ok());
}

#[test]
fn a_unit_whose_parent_is_missing_is_refused_without_a_top_unit_and_reported_with_one() {
    let units = vec![
        unit(1, "Root", None),
        unit(2, "Child", Some(1)),
        unit(3, "Orphan", Some(42)),
    ];
    assert_eq!(
        faults(units.clone(), &policy()),
        [Fault::MissingParent {
            unit: u(3),
            parent: u(42)
        }]
    );

    let mut with_top = policy();
    with_top.top_unit = Some(u(1));
    let valid = validate(snapshot(units, vec![]), &with_top, None).unwrap();
    assert_eq!(valid.issues()[0].code, IssueCode::MissingParent);
    assert_eq!(valid.issues()[0].object, Some(u(3).0));
}

#[test]
fn a_parent_cycle_is_refused_naming_its_units() {
    let units = vec![
        unit(1, "Root", None),
        unit(2, "A", Some(3)),
        unit(3, "B", Some(4)),
        unit(4, "C", Some(2)),
    ];
    let found = faults(units, &policy());
    assert_eq!(
        found,
        [Fault::Cycle {
            units: vec![u(2), u(3), u(4)]
        }]
    );
    assert!(found[0].to_string().contains(&u(3).to_string()));
}

#[test]
fn a_tree_that_is_only_a_cycle_has_no_root_and_is_refused_for_both() {
    let units = vec![unit(1, "A", Some(2)), unit(2, "B", Some(1))];
    assert_eq!(
        faults(units, &policy()),
        [
            Fault::Cycle {
                units: vec![u(1), u(2)]
            },
            Fault::NoRoot
        ]
    );
}

#[test]
fn a_duplicate_unit_is_refused() {
    let units = vec![
        unit(1, "Root", None),
        unit(2, "A", Some(1)),
        unit(2, "A again", Some(1)),
    ];
    assert_eq!(
        faults(units, &policy()),
        [Fault::DuplicateUnit { unit: u(2) }]
    );
}

#[test]
fn a_configured_top_unit_must_exist_and_be_active() {
    let mut p = policy();
    p.top_unit = Some(u(9));
    assert_eq!(
        faults(small_tree(), &p),
        [Fault::TopUnitMissing { unit: u(9) }]
    );
    p.top_unit = Some(u(3));
    let mut units = small_tree();
    units[2].active = false;
    assert_eq!(faults(units, &p), [Fault::TopUnitInactive { unit: u(3) }]);
}

#[test]
fn several_faults_are_reported_together() {
    let units = vec![
        unit(1, "A", None),
        unit(2, "B", None),
        unit(3, "C", Some(7)),
        unit(3, "C", Some(7)),
    ];
    let refused = validate(snapshot(units, vec![]), &policy(), None).unwrap_err();
    assert_eq!(refused.faults.len(), 4, "{:?}", refused.faults);
    let message = refused.to_string();
    assert!(
        message.contains("appears more than once") && message.contains("names parent"),
        "{message}"
    );
}

#[test]
fn duplicate_users_and_positions_in_unknown_units_are_issues_not_faults() {
    let users = vec![
        user(1, "Anne Hansen", "anne@kommune.dk", &[2, 77]),
        user(1, "Anne Again", "anne2@kommune.dk", &[2]),
    ];
    let valid = validate(snapshot(small_tree(), users), &policy(), None).unwrap();
    let codes: Vec<IssueCode> = valid.issues().iter().map(|i| i.code).collect();
    assert_eq!(
        codes,
        [IssueCode::UnknownPositionUnit, IssueCode::DuplicateUser]
    );
    assert_eq!(valid.snapshot().users.len(), 1);
    assert_eq!(
        valid.snapshot().users[0].positions.len(),
        1,
        "the dangling position is dropped"
    );
    assert_eq!(
        valid.snapshot().users[0].name.as_deref(),
        Some("Anne Hansen")
    );
}

#[test]
fn an_unknown_excluded_unit_is_reported() {
    let mut p = policy();
    p.excluded_units.insert(u(55));
    let valid = validate(snapshot(small_tree(), vec![]), &p, None).unwrap();
    assert_eq!(valid.issues()[0].code, IssueCode::UnknownExcludedUnit);
}

#[test]
fn a_drop_beyond_the_limit_is_an_issue_and_within_it_is_not() {
    let mut p = policy();
    p.guards.max_source_drop_percent = 20.0;
    let previous = SourceCounts { units: 5, users: 0 };
    let valid = validate(snapshot(small_tree(), vec![]), &p, Some(previous)).unwrap();
    assert_eq!(valid.source_drop(), None);
    assert!(valid.issues().is_empty(), "20 % is within a 20 % limit");

    let previous = SourceCounts { units: 6, users: 0 };
    let valid = validate(snapshot(small_tree(), vec![]), &p, Some(previous)).unwrap();
    assert_eq!(
        valid.source_drop(),
        Some("active units fell from 6 to 4 (33.3 % fewer, limit 20 %)")
    );
    assert_eq!(valid.issues()[0].code, IssueCode::SourceDrop);
}

#[test]
fn the_snapshot_json_format_round_trips_with_the_documented_keys() {
    let mut users = vec![user(1, "Anne Marie Hansen", "anne@kommune.dk", &[2])];
    users[0].positions[0].manager = true;
    let snap = snapshot(small_tree(), users);
    let json = serde_json::to_value(&snap).unwrap();
    for key in ["uuid", "name", "user_key", "parent_uuid", "active"] {
        assert!(json["units"][1].get(key).is_some(), "unit key {key}");
    }
    for key in [
        "uuid",
        "user_name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "active",
        "positions",
    ] {
        assert!(json["users"][0].get(key).is_some(), "user key {key}");
    }
    for key in ["unit_uuid", "title", "manager"] {
        assert!(
            json["users"][0]["positions"][0].get(key).is_some(),
            "position key {key}"
        );
    }
    assert_eq!(json["users"][0]["first_name"], "Anne Marie");
    let back: orgsync_model::snapshot::Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snap);
}
