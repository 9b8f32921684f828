//! What a write would change: the comparison both adapters make before writing, so that an
//! item already in place sends nothing. Unmapped optional fields are never compared or written.

use orgsync_model::ids::UserId;
use orgsync_model::plan::{Action, DepartmentItem, UserItem};
use orgsync_model::policy::Mappings;
use orgsync_model::target::{TargetDepartment, TargetUser};

/// The user fields (by name) where `current` differs from what `item` writes. `active` is
/// included when the activation state must change.
pub fn user_changes(
    current: &TargetUser,
    item: &UserItem,
    mappings: Mappings,
) -> Vec<&'static str> {
    let want_active = item.action != Action::Deactivate;
    let mut changed = Vec::new();
    if current.active != want_active {
        changed.push("active");
    }
    if item.action == Action::Deactivate {
        return changed; // a deactivation writes nothing else
    }
    let f = &item.fields;
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check(
        "external_id",
        item.external_id.is_some() && current.external_id != item.external_id,
    );
    check(
        "user_name",
        !current.user_name.eq_ignore_ascii_case(&f.user_name) || current.user_name != f.user_name,
    );
    check("email", current.email != f.email);
    check("first_name", current.first_name != f.first_name);
    check("last_name", current.last_name != f.last_name);
    check(
        "primary_department",
        current.primary_department != f.primary_department,
    );
    check(
        "memberships",
        current.memberships.iter().copied().collect::<Vec<_>>() != f.memberships,
    );
    if mappings.title {
        check("title", current.title != f.title);
    }
    if mappings.phone {
        check("phone", current.phone != f.phone);
    }
    if mappings.manager {
        check("manager", current.manager != f.manager);
    }
    changed
}

/// Whether `current` differs from what `item` writes (active state included).
pub fn department_differs(
    current: &TargetDepartment,
    item: &DepartmentItem,
    mappings: Mappings,
) -> bool {
    let want_active = item.action != Action::Deactivate;
    if current.active != want_active {
        return true;
    }
    if item.action == Action::Deactivate {
        return false;
    }
    let f = &item.fields;
    current.title != f.title
        || current.custom_id != f.custom_id
        || current.parent != f.parent
        || (mappings.manager && current.manager != f.manager)
}

/// Whether a target user found by user name (not by external id) may be taken over by `item`:
/// one made by hand (no external id), or one whose old external id the planner decided to
/// replace (the item's `changes.external_id` names it). A user from another source is not
/// taken over; writing over it is refused by the target as a duplicate user name.
pub fn may_adopt(found_external_id: Option<UserId>, item: &UserItem) -> bool {
    match found_external_id {
        None => true,
        Some(found) if Some(found) == item.external_id => true,
        Some(found) => item
            .changes
            .as_ref()
            .and_then(|c| c.get("external_id"))
            .is_some_and(|(old, _)| old.as_str() == Some(found.to_string().as_str())),
    }
}

/// How errors name a user item: `user anne@kommune.dk (5b2b…)`.
pub fn user_label(item: &UserItem) -> String {
    match item.external_id {
        Some(id) => format!("user {} ({id})", item.fields.user_name),
        None => format!("user {}", item.fields.user_name),
    }
}
