//! Property tests of the planner: idempotence, domain safety, held plans, parent order.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use std::collections::{BTreeSet, HashSet};

use common::*;
use orgsync_model::ids::{Domain, Email, UnitId};
use orgsync_model::plan::{self, Action, Plan};
use orgsync_model::policy::{Guards, Mappings, Policy};
use orgsync_model::snapshot::{Position, Snapshot, Unit, User};
use orgsync_model::target::{TargetState, TargetUser};
use orgsync_model::validate;
use proptest::prelude::*;
use proptest::sample::Index;

const NAMES: [&str; 8] = [
    "Anne Hansen",
    "Bo Ek",
    "Carl Emil Lærer",
    "Dorte",
    "",
    "Eva Ørum Sø",
    "Finn Holm",
    "Gitte Å",
];
const LOCALS: [&str; 5] = ["anne", "bo", "carl", "dorte", "eva"];
const DOMAINS: [&str; 3] = ["kommune.dk", "sub.kommune.dk", "firma.dk"];

#[derive(Clone, Debug)]
struct UnitSpec {
    parent: Index,
    active: bool,
    name: usize,
}

#[derive(Clone, Debug)]
struct UserSpec {
    id: u128,
    name: usize,
    email: Option<(usize, usize)>,
    active: bool,
    positions: Vec<(Index, u8, bool)>,
}

#[derive(Clone, Debug)]
struct Case {
    units: Vec<UnitSpec>,
    previous_units: Vec<bool>,
    previous_users: Vec<UserSpec>,
    users: Vec<UserSpec>,
    manual_users: Vec<(usize, usize, bool)>,
    deactivate_in_target: Vec<Index>,
    domains: Vec<bool>,
    top: Option<Index>,
    excluded: Option<Index>,
    guards: (u32, f64),
    mappings: (bool, bool, bool),
    partial: bool,
}

fn arb_user() -> impl Strategy<Value = UserSpec> {
    (
        1u128..16,
        0..NAMES.len(),
        prop::option::weighted(0.9, (0..LOCALS.len(), 0..DOMAINS.len())),
        prop::bool::weighted(0.85),
        prop::collection::vec((any::<Index>(), 0u8..4, prop::bool::weighted(0.2)), 0..3),
    )
        .prop_map(|(id, name, email, active, positions)| UserSpec {
            id,
            name,
            email,
            active,
            positions,
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (1usize..10).prop_flat_map(|n_units| {
        (
            prop::collection::vec(
                (any::<Index>(), prop::bool::weighted(0.85), 0..NAMES.len()).prop_map(
                    |(parent, active, name)| UnitSpec {
                        parent,
                        active,
                        name,
                    },
                ),
                n_units,
            ),
            prop::collection::vec(prop::bool::weighted(0.85), n_units),
            prop::collection::vec(arb_user(), 0..12),
            prop::collection::vec(arb_user(), 0..12),
            prop::collection::vec((0..LOCALS.len(), 0..DOMAINS.len(), any::<bool>()), 0..4),
            prop::collection::vec(any::<Index>(), 0..3),
            prop::collection::vec(any::<bool>(), 2),
            prop::option::weighted(0.2, any::<Index>()),
            prop::option::weighted(0.2, any::<Index>()),
            ((0u32..6), (0.0f64..=100.0)),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(
                    units,
                    previous_units,
                    previous_users,
                    users,
                    manual_users,
                    deactivate_in_target,
                    domains,
                    top,
                    excluded,
                    guards,
                    mappings,
                    partial,
                )| Case {
                    units,
                    previous_units,
                    previous_users,
                    users,
                    manual_users,
                    deactivate_in_target,
                    domains,
                    top,
                    excluded,
                    guards,
                    mappings,
                    partial,
                },
            )
    })
}

fn build_units(specs: &[UnitSpec], active: impl Fn(usize) -> bool) -> Vec<Unit> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut unit = unit(
                i as u128 + 1,
                NAMES[spec.name],
                (i > 0).then(|| spec.parent.index(i) as u128 + 1),
            );
            unit.active = i == 0 || active(i);
            unit
        })
        .collect()
}

fn build_users(specs: &[UserSpec], n_units: usize) -> Vec<User> {
    let mut seen = HashSet::new();
    specs
        .iter()
        .filter(|s| seen.insert(s.id))
        .map(|s| User {
            uuid: p(s.id),
            user_name: format!("U{}", s.id),
            name: Some(NAMES[s.name].to_owned()).filter(|n| !n.is_empty()),
            email: s
                .email
                .map(|(l, d)| format!("{}@{}", LOCALS[l], DOMAINS[d])),
            phone: Some(format!("+45 {}", s.id)),
            active: s.active,
            positions: s
                .positions
                .iter()
                .map(|(unit, validity, manager)| Position {
                    unit_uuid: u(unit.index(n_units) as u128 + 1),
                    title: Some(format!("Titel {validity}")),
                    manager: *manager,
                    valid_from: (*validity == 1).then(|| day(2030, 1, 1)),
                    valid_to: (*validity == 2).then(|| day(2020, 1, 1)),
                })
                .collect(),
        })
        .collect()
}

fn build(case: &Case) -> Option<(Snapshot, TargetState, Policy)> {
    let n = case.units.len();
    let mut policy = policy();
    policy.domains = DOMAINS[..2]
        .iter()
        .zip(&case.domains)
        .filter(|(_, on)| **on)
        .map(|(d, _)| Domain::parse(d).unwrap())
        .collect();
    policy.top_unit = case.top.map(|i| u(i.index(n) as u128 + 1));
    policy.excluded_units = case
        .excluded
        .iter()
        .map(|i| u(i.index(n) as u128 + 1))
        .collect::<BTreeSet<_>>();
    policy.guards = Guards {
        max_deactivations: case.guards.0,
        max_deactivation_percent: case.guards.1,
        max_source_drop_percent: 100.0,
    };
    policy.mappings = Mappings {
        title: case.mappings.0,
        phone: case.mappings.1,
        manager: case.mappings.2,
        ..Mappings::default()
    };
    let previous = snapshot(
        build_units(&case.units, |i| case.previous_units[i]),
        build_users(&case.previous_users, n),
    );
    let mut target = TargetState::default();
    let valid = validate::validate(previous, &policy, None).ok()?;
    target.apply(&plan::plan(&valid, &target, &policy, today()));
    for index in &case.deactivate_in_target {
        if !target.users.is_empty() {
            let i = index.index(target.users.len());
            target.users[i].active = false;
        }
    }
    for (local, domain, with_external_id) in &case.manual_users {
        let email = format!("manual.{}@{}", LOCALS[*local], DOMAINS[*domain]);
        if target.users.iter().any(|t| t.user_name == email) {
            continue;
        }
        target.users.push(TargetUser {
            // One external id per user: two target users sharing one is not a state orgsync
            // makes, and `TargetState::apply` (the test model) finds users by it.
            external_id: with_external_id
                .then(|| p(900 + (*local * DOMAINS.len() + *domain) as u128)),
            ..target_user(None, &email, "Manuel", "Bruger", &[])
        });
    }
    let mut current = snapshot(
        build_units(&case.units, |i| case.units[i].active),
        build_users(&case.users, n),
    );
    if case.partial {
        current.partial = Some(orgsync_model::snapshot::PartialRead::unknown(
            "a page failed",
        ));
    }
    Some((current, target, policy))
}

fn plan_for(snapshot: &Snapshot, target: &TargetState, policy: &Policy) -> Option<Plan> {
    let valid = validate::validate(snapshot.clone(), policy, None).ok()?;
    Some(plan::plan(&valid, target, policy, today()))
}

proptest! {
    // Cases whose generated snapshot does not validate are rejected with `prop_assume!`, which
    // proptest counts: more than 60 rejects for 400 accepted cases (measured: between 5 and 30)
    // fails the test, so the properties cannot pass by discarding what they should check.
    #![proptest_config(ProptestConfig { cases: 400, max_global_rejects: 60, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_and_planning_again_changes_nothing(case in arb_case()) {
        let built = build(&case);
        prop_assume!(built.is_some(), "the previous snapshot is invalid");
        let (snapshot, mut target, policy) = built.unwrap();
        let first = plan_for(&snapshot, &target, &policy);
        prop_assume!(first.is_some(), "the snapshot is invalid");
        let first = first.unwrap();
        target.apply(&first);
        let second = plan_for(&snapshot, &target, &policy).unwrap();
        let writes: Vec<_> = second.departments.iter().map(|d| d.action)
            .chain(second.users.iter().map(|u| u.action))
            .filter(|a| *a != Action::Deactivate)
            .collect();
        prop_assert!(writes.is_empty(), "second plan still writes: {}", second.to_text());
        if first.held.is_none() {
            prop_assert!(second.is_empty() && second.held.is_none(), "second plan: {}", second.to_text());
        } else {
            // What was held may be planned (or held) again, nothing more: the guard's percentage
            // is relative to the target, which grew, so it may now let them through.
            let key = |item: &orgsync_model::plan::UserItem| (item.external_id, item.fields.user_name.clone());
            let held_before: HashSet<_> = first.held.iter().flat_map(|h| h.users.iter().map(key)).collect();
            let again = second.users.iter().chain(second.held.iter().flat_map(|h| h.users.iter()));
            for item in again {
                prop_assert!(held_before.contains(&key(item)), "{} was not held before", item.fields.user_name);
            }
            let depts_before: HashSet<_> = first.held.iter().flat_map(|h| h.departments.iter().map(|d| d.external_id)).collect();
            let again = second.departments.iter().chain(second.held.iter().flat_map(|h| h.departments.iter()));
            for item in again {
                prop_assert!(depts_before.contains(&item.external_id));
            }
        }
    }

    #[test]
    fn no_plan_deactivates_a_user_outside_the_customers_domains(case in arb_case()) {
        let built = build(&case);
        prop_assume!(built.is_some(), "the previous snapshot is invalid");
        let (snapshot, target, policy) = built.unwrap();
        let plan = plan_for(&snapshot, &target, &policy);
        prop_assume!(plan.is_some(), "the snapshot is invalid");
        let plan = plan.unwrap();
        let held = plan.held.iter().flat_map(|h| h.users.iter());
        for item in plan.users.iter().filter(|u| u.action == Action::Deactivate).chain(held) {
            let email = item.fields.email.as_deref().unwrap_or(&item.fields.user_name);
            let email = Email::parse(email).unwrap();
            prop_assert!(email.is_in(&policy.domains), "{} deactivated outside {:?}", email, policy.domains);
        }
    }

    #[test]
    fn a_held_or_partial_plan_deactivates_nothing(case in arb_case()) {
        let built = build(&case);
        prop_assume!(built.is_some(), "the previous snapshot is invalid");
        let (snapshot, target, policy) = built.unwrap();
        let plan = plan_for(&snapshot, &target, &policy);
        prop_assume!(plan.is_some(), "the snapshot is invalid");
        let plan = plan.unwrap();
        if plan.held.is_some() || snapshot.partial.is_some() {
            prop_assert!(plan.departments.iter().all(|d| d.action != Action::Deactivate));
            prop_assert!(plan.users.iter().all(|u| u.action != Action::Deactivate));
        }
        if let Some(held) = &plan.held {
            prop_assert_eq!(held.deactivations as usize, held.departments.len() + held.users.len());
            prop_assert!(held.deactivations > 0);
        }
    }

    #[test]
    fn departments_come_before_their_children(case in arb_case()) {
        let built = build(&case);
        prop_assume!(built.is_some(), "the previous snapshot is invalid");
        let (snapshot, target, policy) = built.unwrap();
        let plan = plan_for(&snapshot, &target, &policy);
        prop_assume!(plan.is_some(), "the snapshot is invalid");
        let plan = plan.unwrap();
        let mut present: HashSet<UnitId> = target.departments.iter()
            .filter(|d| d.active)
            .filter_map(|d| d.external_id)
            .filter(|id| !plan.departments.iter().any(|i| i.external_id == *id && i.action == Action::Deactivate))
            .collect();
        for item in &plan.departments {
            match item.action {
                Action::Deactivate => {
                    prop_assert!(!plan.departments.iter().any(|other| other.action == Action::Deactivate
                        && other.fields.parent == Some(item.external_id)
                        && plan.departments.iter().position(|x| x == other) > plan.departments.iter().position(|x| x == item)),
                        "a child is deactivated after its parent");
                }
                _ => {
                    if let Some(parent) = item.fields.parent {
                        prop_assert!(present.contains(&parent), "{} written before its parent {}", item.external_id, parent);
                    }
                    present.insert(item.external_id);
                }
            }
        }
    }
}
