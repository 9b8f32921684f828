//! Data-driven tests of the sync rules (docs/design.md §2 steps 3-5), one or more per rule.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use std::collections::BTreeSet;

use common::*;
use orgsync_model::error_class::ErrorClass;
use orgsync_model::plan::{Action, HoldReason};
use orgsync_model::policy::{CustomIdSource, Mappings};
use orgsync_model::snapshot::{PartialRead, ReadFailure, ReadPart, UnitContact};
use orgsync_model::validate::SourceCounts;

// ---- Departments (step 3) -------------------------------------------------------------------

#[test]
fn every_active_unit_becomes_a_department_with_parents_before_children() {
    let snapshot = snapshot(small_tree(), vec![]);
    let plan = make_plan(&snapshot, &Default::default(), &policy());
    check(
        &plan,
        "dept create u1 parent=- custom_id=K1
         dept create u3 parent=u1 custom_id=K3
         dept create u4 parent=u3 custom_id=K4
         dept create u2 parent=u1 custom_id=K2",
    );
    assert_eq!(plan.summary.departments.create, 4);
}

#[test]
fn an_inactive_unit_and_everything_below_it_are_not_synced() {
    let mut units = small_tree();
    units[2] = inactive(units[2].clone()); // u3 Skole; u4 Kantine below it stays active in STS
    let plan = make_plan(&snapshot(units, vec![]), &Default::default(), &policy());
    check(
        &plan,
        "dept create u1 parent=- custom_id=K1
         dept create u2 parent=u1 custom_id=K2",
    );
    assert!(
        plan.issues
            .iter()
            .any(|i| i.message.contains("1 active units below it")),
        "{:?}",
        plan.issues
    );
}

#[test]
fn the_top_unit_limits_the_sync_to_its_subtree_and_has_no_parent() {
    let mut policy = policy();
    policy.top_unit = Some(u(3));
    let plan = make_plan(
        &snapshot(small_tree(), vec![]),
        &Default::default(),
        &policy,
    );
    check(
        &plan,
        "dept create u3 parent=- custom_id=K3
         dept create u4 parent=u3 custom_id=K4",
    );
}

#[test]
fn excluded_units_are_left_out_with_their_subtrees() {
    let mut policy = policy();
    policy.excluded_units = BTreeSet::from([u(3)]);
    let plan = make_plan(
        &snapshot(small_tree(), vec![]),
        &Default::default(),
        &policy,
    );
    check(
        &plan,
        "dept create u1 parent=- custom_id=K1
         dept create u2 parent=u1 custom_id=K2",
    );
}

#[test]
fn the_custom_id_is_the_user_key_falling_back_to_the_uuid_or_the_uuid_when_configured() {
    let mut units = small_tree();
    units[1].user_key = None;
    let plan = make_plan(
        &snapshot(units.clone(), vec![]),
        &Default::default(),
        &policy(),
    );
    let custom_ids: Vec<String> = plan
        .departments
        .iter()
        .map(|d| d.fields.custom_id.clone().unwrap())
        .collect();
    assert_eq!(custom_ids, ["K1", "K3", "K4", &u(2).to_string()]);

    let mut by_uuid = policy();
    by_uuid.custom_id = CustomIdSource::Uuid;
    let plan = make_plan(&snapshot(units, vec![]), &Default::default(), &by_uuid);
    assert!(
        plan.departments
            .iter()
            .all(|d| d.fields.custom_id == Some(d.external_id.to_string()))
    );
}

#[test]
fn a_renamed_or_moved_unit_is_updated_with_old_and_new_values() {
    let policy = policy();
    let before = snapshot(small_tree(), vec![]);
    let target = synced(&before, &policy);
    let mut units = small_tree();
    units[3].name = "Køkken".to_owned(); // u4 renamed
    units[3].parent_uuid = Some(u(2)); // and moved under Økonomi
    let plan = make_plan(&snapshot(units, vec![]), &target, &policy);
    check(&plan, "dept update u4 [parent, title]");
    let changes = plan.departments[0].changes.as_ref().unwrap();
    assert_eq!(changes["title"].0, "Kantine");
    assert_eq!(changes["title"].1, "Køkken");
    assert_eq!(changes["parent"].1, u(2).to_string());
}

#[test]
fn managed_departments_absent_or_inactive_in_sts_are_deactivated_children_first() {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), vec![]), &policy);
    let units = vec![
        unit(1, "Kommune", None),
        inactive(unit(2, "Økonomi", Some(1))),
    ];
    let plan = make_plan(&snapshot(units, vec![]), &target, &policy);
    check(
        &plan,
        "dept deactivate u4
         dept deactivate u3
         dept deactivate u2",
    );
}

#[test]
fn a_department_that_comes_back_is_reactivated() {
    let policy = policy();
    let mut target = synced(&snapshot(small_tree(), vec![]), &policy);
    target.departments.iter_mut().for_each(|d| {
        if d.external_id == Some(u(2)) {
            d.active = false;
            d.title = "Old name".to_owned();
        }
    });
    let plan = make_plan(&snapshot(small_tree(), vec![]), &target, &policy);
    check(&plan, "dept reactivate u2 [title]");
}

#[test]
fn departments_created_by_hand_in_the_target_are_never_touched() {
    let policy = policy();
    let mut target = synced(&snapshot(small_tree(), vec![]), &policy);
    let mut manual = target_department(99, "Made by hand", None);
    manual.external_id = None;
    target.departments.push(manual);
    let plan = make_plan(&snapshot(small_tree(), vec![]), &target, &policy);
    check(&plan, "");
    assert_eq!(plan.summary.departments.unchanged, 4);
}

// ---- Users (step 4) -------------------------------------------------------------------------

#[test]
fn an_eligible_user_is_created_with_lower_cased_email_split_name_and_customer_defaults() {
    let users = vec![
        user(1, "Anne Marie Hansen", "Anne@Kommune.DK", &[2]),
        user(2, "Bo Ek", "bo@kommune.dk", &[4, 3]),
    ];
    let plan = make_plan(
        &snapshot(small_tree(), users),
        &Default::default(),
        &policy(),
    );
    let rendered = compact(&plan);
    let users: Vec<&str> = rendered.lines().filter(|l| l.starts_with("user")).collect();
    assert_eq!(
        users,
        [
            "user create p2 bo@kommune.dk first=\"Bo\" last=\"Ek\" in=u3,u4",
            "user create p1 anne@kommune.dk first=\"Anne Marie\" last=\"Hansen\" in=u2",
        ]
    );
    let anne = &plan.users[1];
    let defaults = anne.defaults.as_ref().unwrap();
    assert_eq!(
        (
            defaults.user_type.as_str(),
            defaults.language.as_str(),
            defaults.timezone.as_str(),
            defaults.currency.as_str()
        ),
        ("employee", "da", "Europe/Copenhagen", "DKK")
    );
    assert!(defaults.must_change_password);
    assert_eq!(anne.fields.primary_department, Some(u(2)));
}

#[test]
fn every_ineligible_user_is_counted_by_reason_never_dropped_silently() {
    let mut inactive_user = user(1, "Ida Inaktiv", "ida@kommune.dk", &[2]);
    inactive_user.active = false;
    let mut ended = user(6, "Eva Slut", "eva@kommune.dk", &[2]);
    ended.positions[0].valid_to = Some(day(2026, 1, 1));
    let mut future = user(7, "Finn Snart", "finn@kommune.dk", &[2]);
    future.positions[0].valid_from = Some(day(2027, 1, 1));
    let mut policy = policy();
    policy.top_unit = Some(u(3));
    let users = vec![
        inactive_user,
        user(2, "Nils Nomail", "", &[3]),
        user(3, "Cher", "cher@kommune.dk", &[3]),
        user(4, "", "noname@kommune.dk", &[3]),
        user(5, "Pia Ingen", "pia@kommune.dk", &[]),
        ended,
        future,
        user(8, "Otto Ude", "otto@kommune.dk", &[2]), // Økonomi is outside the top unit Skole
        user(9, "Bad Mail", "bad@@kommune.dk", &[3]),
        user(10, "Ok Person", "ok@kommune.dk", &[4]),
    ];
    let plan = make_plan(&snapshot(small_tree(), users), &Default::default(), &policy);
    check(
        &plan,
        "dept create u3 parent=- custom_id=K3
         dept create u4 parent=u3 custom_id=K4
         user create p10 ok@kommune.dk first=\"Ok\" last=\"Person\" in=u4
         skip p1 inactive
         skip p2 no_email
         skip p9 invalid_email
         skip p4 no_last_name
         skip p3 no_first_name
         skip p5 no_position
         skip p6 no_position
         skip p7 no_position
         skip p8 outside_top_unit",
    );
    let skipped = serde_json::to_value(&plan.skipped).unwrap();
    assert_eq!(
        skipped,
        serde_json::json!({"inactive": 1, "no_email": 1, "invalid_email": 1, "no_first_name": 1,
                           "no_last_name": 1, "no_position": 3, "outside_top_unit": 1})
    );
    assert_eq!(plan.summary.skipped, 9);
}

#[test]
fn a_position_in_an_inactive_or_excluded_unit_does_not_make_a_user_eligible() {
    let mut units = small_tree();
    units[1] = inactive(units[1].clone()); // u2
    let mut policy = policy();
    policy.excluded_units = BTreeSet::from([u(4)]);
    let users = vec![
        user(1, "A B", "a@kommune.dk", &[2]),
        user(2, "C D", "c@kommune.dk", &[4]),
    ];
    let plan = make_plan(&snapshot(units, users), &Default::default(), &policy);
    let skips: Vec<String> = compact(&plan)
        .lines()
        .filter(|l| l.starts_with("skip"))
        .map(str::to_owned)
        .collect();
    assert_eq!(skips, ["skip p1 no_position", "skip p2 outside_top_unit"]);
}

#[test]
fn sts_is_primary_name_email_and_memberships_overwrite_the_target_but_defaults_do_not() {
    let policy = policy();
    let target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anne Hansen", "anne@kommune.dk", &[2])],
        ),
        &policy,
    );
    let changed = user(1, "Anne Jensen", "Anne.Jensen@kommune.dk", &[3, 4]);
    let plan = make_plan(&snapshot(small_tree(), vec![changed]), &target, &policy);
    check(
        &plan,
        "user update p1 [email, last_name, memberships, primary_department, user_name]",
    );
    assert!(
        plan.users[0].defaults.is_none(),
        "defaults are written on create only"
    );
    let changes = plan.users[0].changes.as_ref().unwrap();
    assert_eq!(changes["email"].1, "anne.jensen@kommune.dk");
    assert_eq!(changes["memberships"].1, serde_json::json!([u(3), u(4)]));
}

#[test]
fn a_target_user_is_matched_by_external_id_first_then_by_user_name() {
    let policy = policy();
    let target = orgsync_model::target::TargetState {
        departments: synced(&snapshot(small_tree(), vec![]), &policy).departments,
        users: vec![
            // Matched by external id although the e-mail differs: an update, not a create.
            target_user(Some(1), "old@kommune.dk", "Anne", "Hansen", &[2]),
            // Created by hand with the same user name: adopted (external id written).
            target_user(None, "bo@kommune.dk", "Bo", "Ek", &[2]),
        ],
    };
    let users = vec![
        user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
        user(2, "Bo Ek", "bo@kommune.dk", &[2]),
    ];
    let plan = make_plan(&snapshot(small_tree(), users), &target, &policy);
    check(
        &plan,
        "user update p1 [email, user_name]
         user update p2 [external_id]",
    );
}

#[test]
fn absent_users_in_the_customers_domains_are_deactivated_and_others_are_never_touched() {
    let policy = policy();
    let mut target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anne Hansen", "anne@kommune.dk", &[2])],
        ),
        &policy,
    );
    target.users.push(target_user(
        Some(7),
        "gone@kommune.dk",
        "Gone",
        "Away",
        &[2],
    ));
    target.users.push(target_user(
        None,
        "manual@kommune.dk",
        "Made",
        "Byhand",
        &[],
    ));
    target.users.push(target_user(
        Some(8),
        "consultant@firma.dk",
        "Con",
        "Sultant",
        &[2],
    ));
    target
        .users
        .push(target_user(None, "external@gmail.com", "Ex", "Ternal", &[]));
    let plan = make_plan(
        &snapshot(
            small_tree(),
            vec![user(1, "Anne Hansen", "anne@kommune.dk", &[2])],
        ),
        &target,
        &policy,
    );
    check(
        &plan,
        "user deactivate p7
         user deactivate manual@kommune.dk",
    );
    assert_eq!(plan.summary.kept_outside_domains, 2);
    assert_eq!(plan.summary.users.unchanged, 1);
}

#[test]
fn a_user_who_left_sts_or_lost_every_position_is_deactivated() {
    let policy = policy();
    let users = vec![
        user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
        user(2, "Bo Ek", "bo@kommune.dk", &[2]),
    ];
    let target = synced(&snapshot(small_tree(), users), &policy);
    let mut anne = user(1, "Anne Hansen", "anne@kommune.dk", &[2]);
    anne.active = false;
    let bo = user(2, "Bo Ek", "bo@kommune.dk", &[]);
    let plan = make_plan(&snapshot(small_tree(), vec![anne, bo]), &target, &policy);
    check(
        &plan,
        "user deactivate p1
         user deactivate p2
         skip p1 inactive
         skip p2 no_position",
    );
}

#[test]
fn a_user_skipped_for_missing_data_keeps_their_target_user() {
    let policy = policy();
    let target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anne Hansen", "anne@kommune.dk", &[2])],
        ),
        &policy,
    );
    let plan = make_plan(
        &snapshot(small_tree(), vec![user(1, "Anne Hansen", "", &[2])]),
        &target,
        &policy,
    );
    check(&plan, "skip p1 no_email");
}

#[test]
fn a_returning_user_is_reactivated() {
    let policy = policy();
    let users = vec![user(1, "Anne Hansen", "anne@kommune.dk", &[2])];
    let mut target = synced(&snapshot(small_tree(), users.clone()), &policy);
    target.users[0].active = false;
    let plan = make_plan(&snapshot(small_tree(), users), &target, &policy);
    check(&plan, "user reactivate p1 []");
    assert_eq!(plan.summary.users.reactivate, 1);
}

#[test]
fn two_sts_users_with_one_email_sync_once_and_the_target_holder_wins() {
    let users = vec![
        user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
        user(2, "Anne Hansen", "anne@kommune.dk", &[3]),
    ];
    let plan = make_plan(
        &snapshot(small_tree(), users.clone()),
        &Default::default(),
        &policy(),
    );
    assert_eq!(
        compact(&plan)
            .lines()
            .filter(|l| l.starts_with("user create p1"))
            .count(),
        1
    );
    assert!(compact(&plan).contains("skip p2 duplicate_email"));

    // When the target already holds the e-mail under p2, p2 keeps it.
    let target = synced(&snapshot(small_tree(), vec![users[1].clone()]), &policy());
    let plan = make_plan(&snapshot(small_tree(), users), &target, &policy());
    assert!(
        compact(&plan).contains("skip p1 duplicate_email"),
        "{}",
        compact(&plan)
    );
    assert!(plan.users.is_empty(), "{}", compact(&plan));
}

#[test]
fn optional_mappings_write_title_phone_and_managers_only_when_enabled() {
    let mut boss = user(1, "Bente Boss", "bente@kommune.dk", &[3]);
    boss.positions[0].manager = true;
    boss.positions[0].title = Some("Skoleleder".to_owned());
    let mut worker = user(2, "Carl Lærer", "carl@kommune.dk", &[4]);
    worker.phone = Some(" 12 34 56 78 ".to_owned());
    worker.positions[0].title = Some("Lærer".to_owned());
    let mut top = user(3, "Dorte Direktør", "dorte@kommune.dk", &[1]);
    top.positions[0].manager = true;
    let snap = snapshot(small_tree(), vec![boss, worker, top]);

    let plain = make_plan(&snap, &Default::default(), &policy());
    assert!(plain.users.iter().all(|u| u.fields.title.is_none()
        && u.fields.phone.is_none()
        && u.fields.manager.is_none()));
    assert!(plain.departments.iter().all(|d| d.fields.manager.is_none()));

    let mut mapped = policy();
    mapped.mappings = Mappings {
        title: true,
        phone: true,
        manager: true,
        ..Mappings::default()
    };
    let plan = make_plan(&snap, &Default::default(), &mapped);
    let get = |n| {
        plan.users
            .iter()
            .find(|u| u.external_id == Some(p(n)))
            .unwrap()
    };
    assert_eq!(get(2).fields.title.as_deref(), Some("Lærer"));
    assert_eq!(get(2).fields.phone.as_deref(), Some("12 34 56 78"));
    // Carl works in Kantine (no manager) → the manager of Skole above it.
    assert_eq!(get(2).fields.manager, Some(p(1)));
    // Bente manages Skole herself → the manager of Kommune above it.
    assert_eq!(get(1).fields.manager, Some(p(3)));
    assert_eq!(get(3).fields.manager, None);
    let school = plan
        .departments
        .iter()
        .find(|d| d.external_id == u(3))
        .unwrap();
    assert_eq!(school.fields.manager, Some(p(1)));

    // And the mapped fields are compared on the next run.
    let mut target = orgsync_model::target::TargetState::default();
    target.apply(&plan);
    let mut retitled = snap.clone();
    retitled.users[1].positions[0].title = Some("Overlærer".to_owned());
    check(
        &make_plan(&retitled, &target, &mapped),
        "user update p2 [title]",
    );
}

fn contact(address: &str) -> UnitContact {
    UnitContact {
        postal_address: Some(address.to_owned()),
        email: Some("skole@kommune.dk".to_owned()),
        phone: Some("87 65 43 21".to_owned()),
        ean: Some("5798000000001".to_owned()),
        p_number: Some("1012345678".to_owned()),
        cvr: Some("29189838".to_owned()),
    }
}

#[test]
fn unit_contact_data_is_written_with_the_mapping_and_a_changed_address_is_an_update() {
    let mut units = small_tree();
    units[2].contact = contact("Skolevej 1, 8000 Aarhus C");
    let snap = snapshot(units.clone(), vec![]);

    // Off (the default): nothing of it is planned, and a target holding none is unchanged.
    let plain = policy();
    let created = make_plan(&snap, &Default::default(), &plain);
    assert_eq!(created.departments.len(), 4);
    assert!(
        created
            .departments
            .iter()
            .all(|d| d.fields.contact == UnitContact::default())
    );
    let target = synced(&snapshot(small_tree(), vec![]), &plain);
    check(&make_plan(&snap, &target, &plain), "");

    let mut mapped = policy();
    mapped.mappings.unit_contact = true;
    let created = make_plan(&snap, &Default::default(), &mapped);
    let school = created
        .departments
        .iter()
        .find(|d| d.external_id == u(3))
        .unwrap();
    assert_eq!(school.fields.contact, contact("Skolevej 1, 8000 Aarhus C"));
    let json: serde_json::Value = serde_json::from_str(&created.to_json()).unwrap();
    let school_json = json["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["external_id"] == u(3).to_string())
        .unwrap();
    assert_eq!(school_json["postal_address"], "Skolevej 1, 8000 Aarhus C");
    assert_eq!(school_json["ean"], "5798000000001");
    assert_eq!(school_json["p_number"], "1012345678");
    assert_eq!(school_json["cvr"], "29189838");

    // Turning the mapping on for departments that exist fills them in as updates.
    check(
        &make_plan(&snap, &target, &mapped),
        "dept update u3 [cvr, ean, email, p_number, phone, postal_address]",
    );

    // A moved unit: the address is an update with old and new values, in JSON and in text.
    let mut target = orgsync_model::target::TargetState::default();
    target.apply(&created);
    check(&make_plan(&snap, &target, &mapped), "");
    units[2].contact.postal_address = Some("Havnegade 2, 8000 Aarhus C".to_owned());
    let moved = make_plan(&snapshot(units, vec![]), &target, &mapped);
    check(&moved, "dept update u3 [postal_address]");
    let json: serde_json::Value = serde_json::from_str(&moved.to_json()).unwrap();
    assert_eq!(
        json["departments"][0]["changes"]["postal_address"],
        serde_json::json!(["Skolevej 1, 8000 Aarhus C", "Havnegade 2, 8000 Aarhus C"])
    );
    let text = moved.to_text();
    assert!(
        text.contains(
            "postal_address: \"Skolevej 1, 8000 Aarhus C\" → \"Havnegade 2, 8000 Aarhus C\""
        ),
        "{text}"
    );
}

// ---- Guards (step 5) ------------------------------------------------------------------------

fn five_users() -> Vec<orgsync_model::snapshot::User> {
    (1..=5)
        .map(|n| {
            user(
                n,
                &format!("Person Nummer{n}"),
                &format!("p{n}@kommune.dk"),
                &[2],
            )
        })
        .collect()
}

#[test]
fn deactivations_over_the_count_limit_are_held_and_written_nowhere() {
    let mut policy = policy();
    policy.guards.max_deactivations = 1;
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let plan = make_plan(
        &snapshot(small_tree(), five_users()[..3].to_vec()),
        &target,
        &policy,
    );
    check(&plan, "held 2 [over_count]");
    let held = plan.held.as_ref().unwrap();
    assert!(
        held.reason
            .contains("2 users would be deactivated, more than max_deactivations = 1"),
        "{}",
        held.reason
    );
    assert_eq!(held.users.len(), 2);
    assert_eq!(plan.summary.held, 2);
    assert_eq!(plan.summary.users.deactivate, 0);
}

#[test]
fn deactivations_over_the_percent_limit_are_held() {
    let mut policy = policy();
    policy.guards.max_deactivation_percent = 20.0;
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    // 1 of 5 = 20 %: allowed.
    let plan = make_plan(
        &snapshot(small_tree(), five_users()[..4].to_vec()),
        &target,
        &policy,
    );
    check(&plan, "user deactivate p5");
    // 2 of 5 = 40 %: held.
    let plan = make_plan(
        &snapshot(small_tree(), five_users()[..3].to_vec()),
        &target,
        &policy,
    );
    check(&plan, "held 2 [over_percent]");
    assert!(
        plan.held
            .unwrap()
            .reason
            .contains("2 of 5 active users (40.0 %)")
    );
}

#[test]
fn a_plan_from_a_partial_read_deactivates_nothing() {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let mut partial = snapshot(small_tree(), five_users()[..4].to_vec());
    partial.partial = Some(orgsync_model::snapshot::PartialRead::unknown(
        "Bruger list batch 3 failed",
    ));
    let plan = make_plan(&partial, &target, &policy);
    check(&plan, "held 1 [partial_read]");
    assert!(
        plan.held
            .unwrap()
            .reason
            .contains("Bruger list batch 3 failed")
    );
}

fn failure(part: ReadPart, unread: Option<Vec<uuid::Uuid>>) -> ReadFailure {
    ReadFailure {
        part,
        class: ErrorClass::StsUnavailable,
        retriable: true,
        message: format!("{} list failed: HTTP 503", part.as_str()),
        unread,
    }
}

/// Anne in Økonomi (2, her primary) and Skole (3), Bo in Skole, Carl in Kantine (4).
fn placed_users() -> Vec<orgsync_model::snapshot::User> {
    vec![
        user(1, "Anne Hansen", "anne@kommune.dk", &[2, 3]),
        user(2, "Bo Jensen", "bo@kommune.dk", &[3]),
        user(3, "Carl Nielsen", "carl@kommune.dk", &[4]),
    ]
}

#[test]
fn a_partial_read_that_may_have_missed_positions_removes_no_membership_and_moves_no_primary_department()
 {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), placed_users()), &policy);
    // The read missed Anne's position in Økonomi and all of Carl's; Bo gained one in Kantine.
    let mut read = snapshot(
        small_tree(),
        vec![
            user(1, "Anne Hansen", "anne@kommune.dk", &[3]),
            user(2, "Bo Jensen", "bo@kommune.dk", &[3, 4]),
            user(3, "Carl Nielsen", "carl@kommune.dk", &[]),
        ],
    );
    read.partial = Some(PartialRead {
        failures: vec![failure(
            ReadPart::Positions,
            Some(vec![uuid::Uuid::from_u128(99)]),
        )],
    });
    let plan = make_plan(&read, &target, &policy);
    // Anne keeps Økonomi as membership and primary department; Bo's new membership is added
    // (a position read is verified), his primary stays; Carl's deactivation is held as unread.
    check(
        &plan,
        "user update p2 [memberships]
         skip p3 no_position
         held 1 [partial_read]",
    );
    let bo = plan
        .users
        .iter()
        .find(|i| i.external_id == Some(p(2)))
        .unwrap();
    assert_eq!(bo.fields.memberships, vec![u(3), u(4)]);
    assert_eq!(bo.fields.primary_department, Some(u(3)));
    let held = plan.held.as_ref().unwrap();
    assert_eq!(held.unread.users, vec!["carl@kommune.dk".to_owned()]);
    assert!(held.is_unread_user(&held.users[0]));

    // The same changes read completely are made: Anne leaves Økonomi and moves to Skole.
    read.partial = None;
    let plan = make_plan(&read, &target, &policy);
    check(
        &plan,
        "user update p1 [memberships, primary_department]
         user update p2 [memberships]
         user deactivate p3
         skip p3 no_position",
    );
}

#[test]
fn held_deactivations_of_users_a_partial_read_did_not_read_are_marked_unread_not_absent() {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), placed_users()), &policy);
    // Bo and Carl are absent: Bo's Bruger list batch failed (unread), Carl is gone from STS.
    let mut read = snapshot(small_tree(), placed_users()[..1].to_vec());
    read.partial = Some(PartialRead {
        failures: vec![failure(ReadPart::Users, Some(vec![p(2).0]))],
    });
    let plan = make_plan(&read, &target, &policy);
    check(&plan, "held 2 [partial_read]");
    let held = plan.held.as_ref().unwrap();
    assert_eq!(held.unread.users, vec!["bo@kommune.dk".to_owned()]);
    assert_eq!(held.unread.len(), 1);
    // Positions were read completely: memberships and primary departments are verified.
    assert!(read.partial.as_ref().unwrap().positions_complete());

    // A failed user search page leaves an unknown set unread: every absent user is unread.
    read.partial = Some(PartialRead {
        failures: vec![failure(ReadPart::Users, None)],
    });
    let plan = make_plan(&read, &target, &policy);
    let held = plan.held.as_ref().unwrap();
    assert_eq!(
        held.unread.users,
        vec!["bo@kommune.dk".to_owned(), "carl@kommune.dk".to_owned()]
    );
}

#[test]
fn a_partial_read_stored_as_text_by_an_older_version_still_loads() {
    let json = r#"{"cvr":"11111111","units":[],"users":[],"partial":"Bruger list failed"}"#;
    let snapshot: orgsync_model::snapshot::Snapshot = serde_json::from_str(json).unwrap();
    let partial = snapshot.partial.unwrap();
    assert_eq!(partial.to_string(), "Bruger list failed");
    assert!(!partial.is_retriable());
    assert!(!partial.positions_complete());
    assert!(partial.may_have_missed_user(Some(p(1))));
    // The typed form round-trips.
    let typed = PartialRead {
        failures: vec![failure(ReadPart::Users, Some(vec![p(2).0]))],
    };
    let back: PartialRead = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
    assert_eq!(back, typed);
}

#[test]
fn a_drop_against_the_last_successful_run_holds_deactivations() {
    let mut policy = policy();
    policy.guards.max_source_drop_percent = 30.0;
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let previous = Some(SourceCounts { units: 4, users: 5 });
    let plan = make_plan_after(
        &snapshot(small_tree(), five_users()[..3].to_vec()),
        &target,
        &policy,
        previous,
    );
    check(&plan, "held 2 [source_drop]");
    assert!(
        plan.held
            .unwrap()
            .reason
            .contains("active users fell from 5 to 3 (40.0 % fewer, limit 30 %)")
    );
    // A drop within the limit holds nothing.
    let plan = make_plan_after(
        &snapshot(small_tree(), five_users()[..4].to_vec()),
        &target,
        &policy,
        previous,
    );
    check(&plan, "user deactivate p5");
}

#[test]
fn department_deactivations_are_guarded_too() {
    let mut policy = policy();
    policy.guards.max_deactivations = 2;
    let target = synced(&snapshot(small_tree(), vec![]), &policy);
    let plan = make_plan(
        &snapshot(vec![unit(1, "Kommune", None)], vec![]),
        &target,
        &policy,
    );
    check(&plan, "held 3 [over_count]");
    assert_eq!(plan.held.unwrap().departments.len(), 3);
}

#[test]
fn the_pipeline_can_hold_deactivations_when_part_of_a_run_failed() {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let mut plan = make_plan(
        &snapshot(small_tree(), five_users()[..4].to_vec()),
        &target,
        &policy,
    );
    plan.hold_deactivations(HoldReason::RunFailed, "department Økonomi failed");
    check(&plan, "held 1 [run_failed]");
    assert!(plan.users.iter().all(|u| u.action != Action::Deactivate));
}

#[test]
fn a_second_run_without_changes_plans_nothing() {
    let policy = policy();
    let snap = snapshot(small_tree(), five_users());
    let target = synced(&snap, &policy);
    let plan = make_plan(&snap, &target, &policy);
    check(&plan, "");
    assert!(plan.is_empty());
    assert!(plan.to_text().contains("Nothing to change."));
}

// ---- Output ---------------------------------------------------------------------------------

#[test]
fn the_json_plan_has_every_documented_key() {
    let policy = policy();
    let mut users = five_users();
    users.push(user(9, "", "x@kommune.dk", &[2]));
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let mut changed = small_tree();
    changed[1].name = "Økonomi og Løn".to_owned();
    users[0].name = Some("Person Omdøbt".to_owned());
    users.remove(1);
    users.push(user(6, "Ny Person", "ny@kommune.dk", &[3]));
    let json: serde_json::Value =
        serde_json::from_str(&make_plan(&snapshot(changed, users), &target, &policy).to_json())
            .unwrap();
    for key in ["cvr", "departments", "users", "skipped", "held", "summary"] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["cvr"], "11111111");
    assert_eq!(json["held"], serde_json::Value::Null);
    assert_eq!(json["departments"][0]["action"], "update");
    assert_eq!(json["departments"][0]["external_id"], u(2).to_string());
    assert_eq!(
        json["departments"][0]["changes"]["title"],
        serde_json::json!(["Økonomi", "Økonomi og Løn"])
    );
    let actions: Vec<&str> = json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["update", "create", "deactivate"]);
    assert_eq!(json["users"][1]["user_name"], "ny@kommune.dk");
    assert_eq!(json["users"][1]["defaults"]["currency"], "DKK");
    assert_eq!(
        json["users"][0]["changes"]["last_name"],
        serde_json::json!(["Nummer1", "Omdøbt"])
    );
    assert_eq!(json["users"][2]["external_id"], p(2).to_string());
    assert_eq!(json["skipped"]["no_last_name"], 1);
    assert_eq!(json["summary"]["users"]["create"], 1);
    assert_eq!(json["summary"]["users"]["deactivate"], 1);
    assert_eq!(json["summary"]["users"]["unchanged"], 3);
    assert_eq!(json["summary"]["departments"]["update"], 1);
}

#[test]
fn the_text_plan_names_every_change_for_a_person() {
    let policy = policy();
    let target = synced(&snapshot(small_tree(), five_users()), &policy);
    let mut changed = small_tree();
    changed[1].name = "Løn".to_owned();
    let plan = make_plan(
        &snapshot(changed, five_users()[1..].to_vec()),
        &target,
        &policy,
    );
    let text = plan.to_text();
    assert!(
        text.contains("departments: 0 create, 1 update, 0 reactivate, 0 deactivate, 3 unchanged"),
        "{text}"
    );
    assert!(text.contains("~ update     \"Løn\""), "{text}");
    assert!(text.contains("title: \"Økonomi\" → \"Løn\""), "{text}");
    assert!(
        text.contains("- deactivate p1@kommune.dk (Person Nummer1)"),
        "{text}"
    );
}

#[test]
fn the_hand_made_account_of_a_user_skipped_for_a_missing_name_is_left_alone() {
    let policy = policy();
    let mut target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anna Berg", "anna@kommune.dk", &[2])],
        ),
        &policy,
    );
    target
        .users
        .push(target_user(None, "madonna@kommune.dk", "", "Madonna", &[]));
    let snap = snapshot(
        small_tree(),
        vec![
            user(1, "Anna Berg", "anna@kommune.dk", &[2]),
            user(2, "Madonna", "madonna@kommune.dk", &[2]),
        ],
    );
    check(&make_plan(&snap, &target, &policy), "skip p2 no_first_name");
}

#[test]
fn a_rename_onto_a_user_name_another_account_holds_is_skipped_and_both_are_left_alone() {
    let policy = policy();
    let mut target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anna Berg", "anna@kommune.dk", &[2])],
        ),
        &policy,
    );
    target.users.push(target_user(
        None,
        "anna.berg@kommune.dk",
        "Anna",
        "Berg",
        &[],
    ));
    let renamed = snapshot(
        small_tree(),
        vec![user(1, "Anna Berg", "anna.berg@kommune.dk", &[2])],
    );
    let plan = make_plan(&renamed, &target, &policy);
    check(&plan, "skip p1 duplicate_email");
    assert_eq!(
        plan.skipped[&orgsync_model::plan::SkipReason::DuplicateEmail],
        1
    );
}

#[test]
fn a_user_name_freed_by_a_rename_can_be_taken_in_the_same_run() {
    let policy = policy();
    let target = synced(
        &snapshot(
            small_tree(),
            vec![user(1, "Anna Berg", "x@kommune.dk", &[2])],
        ),
        &policy,
    );
    // Anna moves to y@; a new colleague gets x@.
    let snap = snapshot(
        small_tree(),
        vec![
            user(1, "Anna Berg", "y@kommune.dk", &[2]),
            user(2, "Bo Ek", "x@kommune.dk", &[2]),
        ],
    );
    check(
        &make_plan(&snap, &target, &policy),
        "user update p1 [email, user_name]
         user create p2 x@kommune.dk first=\"Bo\" last=\"Ek\" in=u2",
    );
}

// ---- The department tree (what the dashboard draws) -----------------------------------------

#[test]
fn the_department_tree_has_the_synced_departments_parents_first_with_their_primary_users() {
    let mut units = small_tree();
    units.push(unit(5, "Arkiv", Some(1)));
    units.push(inactive(unit(6, "Lukket", Some(1))));
    let mut policy = policy();
    policy.excluded_units.insert(u(5));
    let snapshot = snapshot(
        units,
        vec![
            user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
            user(2, "Bo Jensen", "bo@kommune.dk", &[4, 2]),
            user(3, "Carl Nielsen", "carl@kommune.dk", &[4]),
            user(4, "Eva Lund", "eva@andet-firma.dk", &[4]),
        ],
    );
    let valid = orgsync_model::validate::validate(snapshot.clone(), &policy, None).unwrap();
    let tree = orgsync_model::plan::department_tree(&valid, &Default::default(), &policy, today());
    let compact: Vec<String> = tree
        .iter()
        .map(|d| {
            let parent = d.parent.map_or("-".to_owned(), |p| p.to_string());
            format!("{} parent={parent} users={}", d.title, d.users)
        })
        .collect();
    assert_eq!(
        compact,
        vec![
            "Kommune parent=- users=0".to_owned(),
            format!("Skole parent={} users=0", u(1)),
            format!("Kantine parent={} users=2", u(3)),
            format!("Økonomi parent={} users=2", u(1)),
        ],
        "the excluded Arkiv and the inactive Lukket are left out; Bo counts once, in his primary department (the lowest UUID of equal positions)"
    );
    let plan = make_plan(&snapshot, &Default::default(), &policy);
    assert_eq!(plan.summary.departments.create as usize, tree.len());
    assert_eq!(
        tree.iter().map(|d| d.users).sum::<u64>(),
        plan.summary.users.create
    );
}
