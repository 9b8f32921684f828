//! A compact plan rendering shared by the planner tests; the builders are `orgsync_model::testing`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::collections::HashMap;

use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{self, Action, Plan};
pub use orgsync_model::testing::*;
use uuid::Uuid;

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
