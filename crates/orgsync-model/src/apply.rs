//! Applying a plan to a [`TargetState`] in memory: what a target that executed every item
//! successfully would hold afterwards. Tests use it to check that planning again changes nothing.

use std::collections::BTreeSet;

use crate::plan::{Action, DepartmentItem, Plan, UserItem};
use crate::target::{TargetDepartment, TargetState, TargetUser};

impl TargetState {
    /// Applies every item of `plan` (held deactivations are not applied).
    pub fn apply(&mut self, plan: &Plan) {
        for item in &plan.departments {
            self.apply_department(item);
        }
        for item in &plan.users {
            self.apply_user(item);
        }
    }

    /// Applies one department item.
    pub fn apply_department(&mut self, item: &DepartmentItem) {
        let existing = self
            .departments
            .iter_mut()
            .find(|d| d.external_id == Some(item.external_id));
        let active = item.action != Action::Deactivate;
        match existing {
            Some(department) if item.action == Action::Deactivate => department.active = false,
            Some(department) => {
                department.title = item.fields.title.clone();
                department.custom_id = item.fields.custom_id.clone();
                department.parent = item.fields.parent;
                department.manager = item.fields.manager;
                department.contact = item.fields.contact.clone();
                department.active = true;
            }
            None => self.departments.push(TargetDepartment {
                external_id: Some(item.external_id),
                title: item.fields.title.clone(),
                custom_id: item.fields.custom_id.clone(),
                parent: item.fields.parent,
                manager: item.fields.manager,
                contact: item.fields.contact.clone(),
                active,
            }),
        }
    }

    /// Applies one user item. A create always adds a user; other actions find theirs by
    /// external id, then by user name, as the planner matched it.
    pub fn apply_user(&mut self, item: &UserItem) {
        let by_ext = item
            .external_id
            .and_then(|id| self.users.iter().position(|u| u.external_id == Some(id)));
        let index = by_ext.or_else(|| {
            self.users
                .iter()
                .position(|u| u.user_name.eq_ignore_ascii_case(&item.fields.user_name))
        });
        let index = index.filter(|_| item.action != Action::Create);
        let fields = &item.fields;
        match index {
            Some(i) if item.action == Action::Deactivate => self.users[i].active = false,
            Some(i) => {
                let user = &mut self.users[i];
                user.external_id = item.external_id;
                user.user_name = fields.user_name.clone();
                user.email = fields.email.clone();
                user.first_name = fields.first_name.clone();
                user.last_name = fields.last_name.clone();
                user.memberships = fields.memberships.iter().copied().collect();
                user.primary_department = fields.primary_department;
                user.title = fields.title.clone();
                user.phone = fields.phone.clone();
                user.manager = fields.manager;
                user.active = true;
            }
            None if item.action == Action::Deactivate => {} // nothing to deactivate
            None => self.users.push(TargetUser {
                external_id: item.external_id,
                user_name: fields.user_name.clone(),
                email: fields.email.clone(),
                first_name: fields.first_name.clone(),
                last_name: fields.last_name.clone(),
                memberships: fields.memberships.iter().copied().collect::<BTreeSet<_>>(),
                primary_department: fields.primary_department,
                title: fields.title.clone(),
                phone: fields.phone.clone(),
                manager: fields.manager,
                active: item.action != Action::Deactivate,
            }),
        }
    }
}
