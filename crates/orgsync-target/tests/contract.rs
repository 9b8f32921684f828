//! One contract suite, run unchanged against both adapters: the SCIM adapter talking to a real
//! scim2-server, and the SQLite adapter. Each scenario syncs through the planner as a run would.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use std::collections::BTreeSet;

use common::{Harness, ScimHarness, both};
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{self, Action, Plan, UserFields, UserItem};
use orgsync_model::policy::{Mappings, Policy};
use orgsync_model::snapshot::{Snapshot, Unit, UnitContact, User};
use orgsync_model::target::TargetState;
use orgsync_model::testing::{self, p, snapshot, u};
use orgsync_model::validate::validate;
use orgsync_target::batch::{BatchReport, write_departments, write_users};
use orgsync_target::{TargetError, WriteOutcome};

/// A user of the shared builders with a work phone and a title per unit; user 1 manages the top.
fn user(n: u128, name: &str, email: &str, units: &[u128]) -> User {
    let mut user = testing::user(n, name, email, units);
    user.phone = Some(format!("+45 1000 00{n:02}"));
    for position in &mut user.positions {
        let unit = position.unit_uuid.0.as_u128();
        position.title = Some(format!("Titel {unit}"));
        position.manager = unit == 1 && n == 1;
    }
    user
}

fn tree() -> Vec<Unit> {
    testing::small_tree()
}

fn people() -> Vec<User> {
    vec![
        user(1, "Dorte Direktør", "dorte@kommune.dk", &[1]),
        user(2, "Anne Marie Hansen", "anne@kommune.dk", &[2]),
        user(3, "Bo Ek", "bo@kommune.dk", &[3, 4]),
        user(4, "Søren Ørum", "soren@kommune.dk", &[4]),
    ]
}

fn policy(mappings: Mappings) -> Policy {
    let mut policy = testing::policy();
    policy.mappings = mappings;
    policy
}

/// Plans against what the target holds and writes the plan; returns the plan, the target's
/// state before, and the two batch reports.
async fn sync(
    h: &dyn Harness,
    snap: &Snapshot,
    policy: &Policy,
) -> (Plan, TargetState, BatchReport, BatchReport) {
    let before = h.target().read_state().await.unwrap();
    let valid = validate(snap.clone(), policy, None).unwrap();
    let plan = plan::plan(&valid, &before, policy, testing::today());
    let departments = write_departments(h.target(), &plan.departments, 4)
        .await
        .unwrap();
    let users = write_users(h.target(), &plan.users, 4).await.unwrap();
    (plan, before, departments, users)
}

fn sorted(mut state: TargetState) -> TargetState {
    state
        .departments
        .sort_by_key(|d| (d.external_id, d.title.clone()));
    state.users.sort_by_key(|u| u.user_name.clone());
    state
}

/// The target holds exactly what the plan, applied to the state before, says.
async fn assert_applied(h: &dyn Harness, plan: &Plan, before: TargetState) {
    let mut expected = before;
    expected.apply(plan);
    let actual = h.target().read_state().await.unwrap();
    assert_eq!(
        sorted(actual),
        sorted(expected),
        "{}: the target differs from the applied plan",
        h.name()
    );
}

async fn assert_nothing_left_to_do(h: &dyn Harness, snap: &Snapshot, policy: &Policy) {
    let state = h.target().read_state().await.unwrap();
    let plan = plan::plan(
        &validate(snap.clone(), policy, None).unwrap(),
        &state,
        policy,
        testing::today(),
    );
    assert!(
        plan.is_empty(),
        "{}: a second plan still writes:\n{}",
        h.name(),
        plan.to_text()
    );
}

#[tokio::test]
async fn a_tree_and_its_users_are_created_and_read_back_as_planned() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let snap = snapshot(tree(), people());
        let (plan, before, departments, users) = sync(h.as_ref(), &snap, &policy).await;
        assert_eq!((departments.written, users.written), (4, 4), "{}", h.name());
        assert!(
            departments.rejected.is_empty() && users.rejected.is_empty(),
            "{}: {users:?}",
            h.name()
        );
        assert_applied(h.as_ref(), &plan, before).await;
        assert_nothing_left_to_do(h.as_ref(), &snap, &policy).await;
    }
}

#[tokio::test]
async fn renaming_moving_deactivating_and_reactivating_departments_is_written() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        sync(h, &snapshot(tree(), people()), &policy).await;

        let mut changed = tree();
        changed[3].name = "Køkken".to_owned(); // rename u4
        changed[3].parent_uuid = Some(u(2)); // and move it under Økonomi
        changed[2].active = false; // u3 Skole becomes inactive
        let users = vec![
            people()[0].clone(),
            people()[1].clone(),
            user(4, "Søren Ørum", "soren@kommune.dk", &[4]),
        ];
        let snap = snapshot(changed, users);
        let (plan, before, departments, _) = sync(h, &snap, &policy).await;
        let actions: Vec<(Action, UnitId)> = plan
            .departments
            .iter()
            .map(|d| (d.action, d.external_id))
            .collect();
        assert_eq!(
            actions,
            [(Action::Update, u(4)), (Action::Deactivate, u(3))],
            "{}",
            h.name()
        );
        assert_eq!(departments.written, 2, "{}", h.name());
        assert_applied(h, &plan, before).await;
        let school = h.target().find_department(u(3)).await.unwrap().unwrap();
        assert!(
            !school.active,
            "{}: departments are deactivated, never deleted",
            h.name()
        );

        // Skole comes back.
        let snap = snapshot(tree(), snap.users.clone());
        let (plan, before, departments, _) = sync(h, &snap, &policy).await;
        assert!(
            plan.departments
                .iter()
                .any(|d| d.action == Action::Reactivate && d.external_id == u(3))
        );
        assert!(departments.written >= 2, "{}", h.name());
        assert_applied(h, &plan, before).await;
        assert_nothing_left_to_do(h, &snap, &policy).await;
    }
}

#[tokio::test]
async fn users_are_updated_deactivated_and_reactivated() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        sync(h, &snapshot(tree(), people()), &policy).await;

        // Anne changes name and e-mail; Bo leaves.
        let mut users = people();
        users[1].name = Some("Anne Marie Jensen".to_owned());
        users[1].email = Some("anne.jensen@kommune.dk".to_owned());
        users.remove(2);
        let snap = snapshot(tree(), users.clone());
        let (plan, before, _, report) = sync(h, &snap, &policy).await;
        let actions: Vec<(Action, Option<UserId>)> = plan
            .users
            .iter()
            .map(|u| (u.action, u.external_id))
            .collect();
        assert_eq!(
            actions,
            [
                (Action::Update, Some(p(2))),
                (Action::Deactivate, Some(p(3)))
            ],
            "{}",
            h.name()
        );
        assert_eq!(report.written, 2, "{}", h.name());
        assert_applied(h, &plan, before).await;
        let anne = h
            .target()
            .find_user(p(2), "anne.jensen@kommune.dk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(anne.user_name, "anne.jensen@kommune.dk");
        assert_eq!(anne.last_name.as_deref(), Some("Jensen"));

        // Bo returns.
        let snap = snapshot(
            tree(),
            people()
                .into_iter()
                .map(|mut u| {
                    if u.uuid == p(2) {
                        u.name = Some("Anne Marie Jensen".to_owned());
                        u.email = Some("anne.jensen@kommune.dk".to_owned());
                    }
                    u
                })
                .collect(),
        );
        let (plan, before, _, _) = sync(h, &snap, &policy).await;
        assert_eq!(
            plan.users.iter().map(|u| u.action).collect::<Vec<_>>(),
            [Action::Reactivate],
            "{}",
            h.name()
        );
        assert_applied(h, &plan, before).await;
        assert!(
            h.target()
                .find_user(p(3), "bo@kommune.dk")
                .await
                .unwrap()
                .unwrap()
                .active
        );
        assert_nothing_left_to_do(h, &snap, &policy).await;
    }
}

#[tokio::test]
async fn memberships_follow_positions_and_can_be_set_directly() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        sync(h, &snapshot(tree(), people()), &policy).await;
        let bo = h
            .target()
            .find_user(p(3), "bo@kommune.dk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bo.memberships, BTreeSet::from([u(3), u(4)]), "{}", h.name());

        // Bo moves to Økonomi only.
        let mut users = people();
        users[2] = user(3, "Bo Ek", "bo@kommune.dk", &[2]);
        let snap = snapshot(tree(), users);
        let (plan, before, _, _) = sync(h, &snap, &policy).await;
        let changes = plan.users[0].changes.as_ref().unwrap();
        assert!(changes.contains_key("memberships") && changes.contains_key("primary_department"));
        assert_applied(h, &plan, before).await;

        // set_memberships writes exactly the set, and nothing when it is already so.
        let set = BTreeSet::from([u(1), u(4)]);
        assert_eq!(
            h.target().set_memberships(p(3), &set).await.unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(
            h.target()
                .find_user(p(3), "bo@kommune.dk")
                .await
                .unwrap()
                .unwrap()
                .memberships,
            set
        );
        let writes = h.writes().await;
        assert_eq!(
            h.target().set_memberships(p(3), &set).await.unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(h.writes().await, writes, "{}", h.name());
    }
}

#[tokio::test]
async fn users_outside_the_customers_domains_are_untouched() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        h.seed_user("consultant@firma.dk", None).await;
        h.seed_user("leftover@kommune.dk", None).await;
        let snap = snapshot(tree(), people());
        let (plan, before, _, _) = sync(h, &snap, &policy).await;
        assert_eq!(plan.summary.kept_outside_domains, 1, "{}", h.name());
        assert_applied(h, &plan, before).await;
        let state = h.target().read_state().await.unwrap();
        let consultant = state
            .users
            .iter()
            .find(|u| u.user_name == "consultant@firma.dk")
            .unwrap();
        assert!(
            consultant.active && consultant.external_id.is_none(),
            "{}: {consultant:?}",
            h.name()
        );
        let leftover = state
            .users
            .iter()
            .find(|u| u.user_name == "leftover@kommune.dk")
            .unwrap();
        assert!(
            !leftover.active,
            "{}: a user in the customer's domain absent from STS is deactivated",
            h.name()
        );
    }
}

#[tokio::test]
async fn writing_the_same_desired_state_twice_sends_no_write_the_second_time() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        let (plan, _, _, _) = sync(h, &snapshot(tree(), people()), &policy).await;
        let writes = h.writes().await;
        assert!(writes > 0, "{}", h.name());
        // A retry or a replay writes the same items again: nothing may change.
        let departments = write_departments(h.target(), &plan.departments, 4)
            .await
            .unwrap();
        let users = write_users(h.target(), &plan.users, 4).await.unwrap();
        assert_eq!(
            (departments.written, departments.unchanged),
            (0, 4),
            "{}",
            h.name()
        );
        assert_eq!((users.written, users.unchanged), (0, 4), "{}", h.name());
        assert_eq!(
            h.writes().await,
            writes,
            "{}: the repeat sent write requests",
            h.name()
        );
    }
}

fn created(n: u128, user_name: &str) -> UserItem {
    UserItem {
        action: Action::Create,
        external_id: Some(p(n)),
        fields: UserFields {
            user_name: user_name.to_owned(),
            email: Some(user_name.to_owned()).filter(|u| !u.is_empty()),
            first_name: Some("Ny".to_owned()),
            last_name: Some("Bruger".to_owned()),
            memberships: vec![],
            primary_department: None,
            title: None,
            phone: None,
            manager: None,
        },
        defaults: None,
        changes: None,
    }
}

#[tokio::test]
async fn rejected_objects_are_reported_per_object_and_the_rest_is_written() {
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        // Another source already holds this user name under its own external id.
        h.seed_user("taken@kommune.dk", Some("another-system-42"))
            .await;
        let items = [
            created(7, "taken@kommune.dk"),
            created(8, ""),
            created(9, "fine@kommune.dk"),
        ];
        let report = write_users(h.target(), &items, 1).await.unwrap();
        assert_eq!(report.written, 1, "{}: {report:?}", h.name());
        assert_eq!(report.rejected.len(), 2, "{}: {report:?}", h.name());
        let duplicate = report
            .rejected
            .iter()
            .find(|r| r.external_id == p(7).to_string())
            .unwrap();
        assert_eq!(
            (duplicate.status, duplicate.scim_type.as_deref()),
            (Some(409), Some("uniqueness")),
            "{}",
            h.name()
        );
        assert!(
            duplicate.message.contains("user taken@kommune.dk"),
            "{}",
            duplicate.message
        );
        let empty = report
            .rejected
            .iter()
            .find(|r| r.external_id == p(8).to_string())
            .unwrap();
        assert_eq!(
            (empty.status, empty.scim_type.as_deref()),
            (Some(400), Some("invalidValue")),
            "{}",
            h.name()
        );
        assert!(
            h.target()
                .find_user(p(9), "fine@kommune.dk")
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn optional_mappings_round_trip_title_phone_and_managers() {
    let mappings = Mappings {
        title: true,
        phone: true,
        manager: true,
        ..Mappings::default()
    };
    let policy = policy(mappings);
    for h in both(mappings).await {
        let h = h.as_ref();
        let snap = snapshot(tree(), people());
        let (_, _, _, report) = sync(h, &snap, &policy).await;
        assert!(report.rejected.is_empty(), "{}: {report:?}", h.name());
        // A manager is a reference: a second run writes those whose manager did not exist yet
        // when they were created (SCIM); then nothing is left.
        sync(h, &snap, &policy).await;
        let anne = h
            .target()
            .find_user(p(2), "anne@kommune.dk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(anne.title.as_deref(), Some("Titel 2"), "{}", h.name());
        assert_eq!(anne.phone.as_deref(), Some("+45 1000 0002"), "{}", h.name());
        assert_eq!(anne.manager, Some(p(1)), "{}", h.name());
        let top = h.target().find_department(u(1)).await.unwrap().unwrap();
        assert_eq!(top.manager, Some(p(1)), "{}", h.name());
        assert_nothing_left_to_do(h, &snap, &policy).await;
    }
}

fn contact(address: &str, ean: Option<&str>) -> UnitContact {
    UnitContact {
        postal_address: Some(address.to_owned()),
        email: Some("skole@kommune.dk".to_owned()),
        phone: Some("+45 8765 4321".to_owned()),
        ean: ean.map(str::to_owned),
        p_number: Some("1012345678".to_owned()),
        cvr: Some("29189838".to_owned()),
    }
}

#[tokio::test]
async fn unit_contact_data_round_trips_and_a_changed_address_is_written() {
    let mappings = Mappings {
        unit_contact: true,
        ..Mappings::default()
    };
    let policy = policy(mappings);
    for h in both(mappings).await {
        let h = h.as_ref();
        let mut units = tree();
        units[2].contact = contact("Skolevej 1, 8000 Aarhus C", Some("5798000000001"));
        let snap = snapshot(units.clone(), people());
        let (_, _, departments, _) = sync(h, &snap, &policy).await;
        assert!(
            departments.rejected.is_empty(),
            "{}: {departments:?}",
            h.name()
        );
        let school = h.target().find_department(u(3)).await.unwrap().unwrap();
        assert_eq!(
            school.contact,
            contact("Skolevej 1, 8000 Aarhus C", Some("5798000000001")),
            "{}",
            h.name()
        );
        let top = h.target().find_department(u(1)).await.unwrap().unwrap();
        assert_eq!(top.contact, UnitContact::default(), "{}", h.name());
        assert_nothing_left_to_do(h, &snap, &policy).await;

        // The school moves and loses its EAN: one update, the address replaced, the EAN removed.
        units[2].contact = contact("Havnegade 2, 8000 Aarhus C", None);
        let snap = snapshot(units, people());
        let (plan, _, departments, _) = sync(h, &snap, &policy).await;
        assert_eq!(plan.departments.len(), 1, "{}", h.name());
        assert_eq!(plan.departments[0].action, Action::Update);
        let changes = plan.departments[0].changes.as_ref().unwrap();
        assert_eq!(
            changes.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ean", "postal_address"],
            "{}",
            h.name()
        );
        assert_eq!(departments.written, 1, "{}: {departments:?}", h.name());
        let school = h.target().find_department(u(3)).await.unwrap().unwrap();
        assert_eq!(
            school.contact,
            contact("Havnegade 2, 8000 Aarhus C", None),
            "{}",
            h.name()
        );
        assert_nothing_left_to_do(h, &snap, &policy).await;

        // With the mapping off, nothing of it is compared or written: the data stays.
        let plain = policy_off();
        let (plan, _, _, _) = sync(h, &snap, &plain).await;
        assert!(plan.departments.is_empty(), "{}: {plan:?}", h.name());
        let school = h.target().find_department(u(3)).await.unwrap().unwrap();
        assert_eq!(
            school.contact.postal_address.as_deref(),
            Some("Havnegade 2, 8000 Aarhus C")
        );
    }
}

fn policy_off() -> Policy {
    policy(Mappings::default())
}

#[tokio::test]
async fn health_checks_exercise_the_real_operations() {
    for h in both(Mappings::default()).await {
        let health = h.target().health().await.unwrap();
        assert_eq!(health.users, Some(0), "{}", h.name());
        assert!(!health.summary.is_empty());
    }
    let wrong = ScimHarness::start_with_token(Mappings::default(), "not-the-token").await;
    let error = common::Harness::target(&wrong).health().await.unwrap_err();
    assert!(
        matches!(error, TargetError::Unauthorized { status: 401, .. }),
        "{error}"
    );
    assert!(!error.is_retriable());
    assert!(!error.to_string().contains("not-the-token"), "{error}");
}

#[tokio::test]
async fn a_rename_and_a_create_taking_the_freed_user_name_succeed_in_one_batch() {
    let policy = policy(Mappings::default());
    for h in both(Mappings::default()).await {
        let h = h.as_ref();
        let before = vec![user(1, "Dorte Direktør", "x@kommune.dk", &[1])];
        sync(h, &snapshot(tree(), before), &policy).await;
        let after = vec![
            user(1, "Dorte Direktør", "y@kommune.dk", &[1]),
            user(2, "Anne Marie Hansen", "x@kommune.dk", &[2]),
        ];
        let snap = snapshot(tree(), after);
        let (_, _, _, report) = sync(h, &snap, &policy).await;
        assert!(report.rejected.is_empty(), "{}: {report:?}", h.name());
        assert_eq!(report.written, 2, "{}", h.name());
        assert_nothing_left_to_do(h, &snap, &policy).await;
    }
}
