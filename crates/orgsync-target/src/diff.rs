//! What a write would change: the comparison both adapters make before writing, so that an
//! item already in place sends nothing. Unmapped optional fields are never compared or written.

use orgsync_model::fields::{UserField, department_differences, user_differences};
use orgsync_model::ids::UserId;
use orgsync_model::plan::{Action, DepartmentItem, UserItem};
use orgsync_model::policy::Mappings;
use orgsync_model::target::{TargetDepartment, TargetUser};

/// The user fields where `current` differs from what `item` writes ([`UserField::Active`]
/// when the activation state must change): the planner's comparison
/// ([`orgsync_model::fields::user_differences`]), so planner and targets agree.
pub fn user_changes(current: &TargetUser, item: &UserItem, mappings: Mappings) -> Vec<UserField> {
    let want_active = item.action != Action::Deactivate;
    let mut changed = Vec::new();
    if current.active != want_active {
        changed.push(UserField::Active);
    }
    if item.action == Action::Deactivate {
        return changed; // a deactivation writes nothing else
    }
    changed.extend(user_differences(
        current,
        item.external_id,
        &item.fields,
        mappings,
    ));
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
    item.action != Action::Deactivate
        && !department_differences(current, &item.fields, mappings).is_empty()
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
            .and_then(|c| c.get(UserField::ExternalId.as_str()))
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
