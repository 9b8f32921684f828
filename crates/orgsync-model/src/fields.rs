//! The fields orgsync owns in a target, as one typed list, and the one comparison of them that
//! the planner (for a plan's `changes`) and the target adapters (before writing) both use.
//!
//! A field's name in a plan's JSON is [`UserField::as_str`] / [`DepartmentField::as_str`]
//! (the serde names are the same snake_case strings), so the plan format is unchanged.
//! Optional fields are compared only when the customer's mapping writes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::UserId;
use crate::plan::{DepartmentFields, UserFields};
use crate::policy::Mappings;
use crate::snapshot::UnitContact;
use crate::target::{TargetDepartment, TargetUser};

/// A user field orgsync writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserField {
    /// Whether the user is active (changed by reactivations and deactivations, not listed in a
    /// plan's `changes`).
    Active,
    /// The Bruger UUID.
    ExternalId,
    /// The login name.
    UserName,
    /// The work e-mail.
    Email,
    /// First name.
    FirstName,
    /// Last name.
    LastName,
    /// Department memberships.
    Memberships,
    /// The primary department.
    PrimaryDepartment,
    /// Job title (mapping `title`).
    Title,
    /// Work phone (mapping `phone`).
    Phone,
    /// Manager (mapping `manager`).
    Manager,
}

impl UserField {
    /// The fields a write compares, in the order they are listed.
    pub const COMPARED: [UserField; 10] = [
        UserField::ExternalId,
        UserField::UserName,
        UserField::Email,
        UserField::FirstName,
        UserField::LastName,
        UserField::Memberships,
        UserField::PrimaryDepartment,
        UserField::Title,
        UserField::Phone,
        UserField::Manager,
    ];

    /// The field's name in plans and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserField::Active => "active",
            UserField::ExternalId => "external_id",
            UserField::UserName => "user_name",
            UserField::Email => "email",
            UserField::FirstName => "first_name",
            UserField::LastName => "last_name",
            UserField::Memberships => "memberships",
            UserField::PrimaryDepartment => "primary_department",
            UserField::Title => "title",
            UserField::Phone => "phone",
            UserField::Manager => "manager",
        }
    }

    /// Whether orgsync writes the field for a customer with these mappings.
    pub fn is_written(self, mappings: Mappings) -> bool {
        match self {
            UserField::Title => mappings.title,
            UserField::Phone => mappings.phone,
            UserField::Manager => mappings.manager,
            _ => true,
        }
    }

    fn differs(self, current: &TargetUser, external_id: Option<UserId>, f: &UserFields) -> bool {
        match self {
            UserField::Active => false,
            // A user made by hand is adopted by writing our id; no id to write, nothing to compare.
            UserField::ExternalId => external_id.is_some() && current.external_id != external_id,
            UserField::UserName => current.user_name != f.user_name,
            UserField::Email => current.email != f.email,
            UserField::FirstName => current.first_name != f.first_name,
            UserField::LastName => current.last_name != f.last_name,
            UserField::Memberships => !current.memberships.iter().eq(f.memberships.iter()),
            UserField::PrimaryDepartment => current.primary_department != f.primary_department,
            UserField::Title => current.title != f.title,
            UserField::Phone => current.phone != f.phone,
            UserField::Manager => current.manager != f.manager,
        }
    }

    /// The target's value and the written value, as a plan shows them.
    pub fn values(
        self,
        current: &TargetUser,
        external_id: Option<UserId>,
        f: &UserFields,
    ) -> (Value, Value) {
        match self {
            UserField::Active => pair(&current.active, &true),
            UserField::ExternalId => pair(&current.external_id, &external_id),
            UserField::UserName => pair(&current.user_name, &f.user_name),
            UserField::Email => pair(&current.email, &f.email),
            UserField::FirstName => pair(&current.first_name, &f.first_name),
            UserField::LastName => pair(&current.last_name, &f.last_name),
            UserField::Memberships => pair(&current.memberships, &f.memberships),
            UserField::PrimaryDepartment => {
                pair(&current.primary_department, &f.primary_department)
            }
            UserField::Title => pair(&current.title, &f.title),
            UserField::Phone => pair(&current.phone, &f.phone),
            UserField::Manager => pair(&current.manager, &f.manager),
        }
    }
}

/// A department field orgsync writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepartmentField {
    /// The title (the unit's name).
    Title,
    /// The custom id.
    CustomId,
    /// The parent department.
    Parent,
    /// The manager (mapping `manager`).
    Manager,
    /// The unit's postal address (mapping `unit_contact`).
    PostalAddress,
    /// The unit's e-mail address (mapping `unit_contact`).
    Email,
    /// The unit's phone number (mapping `unit_contact`).
    Phone,
    /// The unit's EAN location number (mapping `unit_contact`).
    Ean,
    /// The unit's P-number (mapping `unit_contact`).
    PNumber,
    /// The unit's CVR number (mapping `unit_contact`).
    Cvr,
}

impl DepartmentField {
    /// The fields a write compares, in the order they are listed.
    pub const COMPARED: [DepartmentField; 10] = [
        DepartmentField::Title,
        DepartmentField::CustomId,
        DepartmentField::Parent,
        DepartmentField::Manager,
        DepartmentField::PostalAddress,
        DepartmentField::Email,
        DepartmentField::Phone,
        DepartmentField::Ean,
        DepartmentField::PNumber,
        DepartmentField::Cvr,
    ];

    /// The field's name in plans and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            DepartmentField::Title => "title",
            DepartmentField::CustomId => "custom_id",
            DepartmentField::Parent => "parent",
            DepartmentField::Manager => "manager",
            DepartmentField::PostalAddress => "postal_address",
            DepartmentField::Email => "email",
            DepartmentField::Phone => "phone",
            DepartmentField::Ean => "ean",
            DepartmentField::PNumber => "p_number",
            DepartmentField::Cvr => "cvr",
        }
    }

    /// Whether orgsync writes the field for a customer with these mappings.
    pub fn is_written(self, mappings: Mappings) -> bool {
        match self {
            DepartmentField::Manager => mappings.manager,
            DepartmentField::PostalAddress
            | DepartmentField::Email
            | DepartmentField::Phone
            | DepartmentField::Ean
            | DepartmentField::PNumber
            | DepartmentField::Cvr => mappings.unit_contact,
            DepartmentField::Title | DepartmentField::CustomId | DepartmentField::Parent => true,
        }
    }

    /// The contact field this is, in a department's [`UnitContact`].
    fn contact(self, contact: &UnitContact) -> Option<&Option<String>> {
        match self {
            DepartmentField::PostalAddress => Some(&contact.postal_address),
            DepartmentField::Email => Some(&contact.email),
            DepartmentField::Phone => Some(&contact.phone),
            DepartmentField::Ean => Some(&contact.ean),
            DepartmentField::PNumber => Some(&contact.p_number),
            DepartmentField::Cvr => Some(&contact.cvr),
            DepartmentField::Title
            | DepartmentField::CustomId
            | DepartmentField::Parent
            | DepartmentField::Manager => None,
        }
    }

    fn differs(self, current: &TargetDepartment, f: &DepartmentFields) -> bool {
        match self {
            DepartmentField::Title => current.title != f.title,
            DepartmentField::CustomId => current.custom_id != f.custom_id,
            DepartmentField::Parent => current.parent != f.parent,
            DepartmentField::Manager => current.manager != f.manager,
            _ => self.contact(&current.contact) != self.contact(&f.contact),
        }
    }

    /// The target's value and the written value, as a plan shows them.
    pub fn values(self, current: &TargetDepartment, f: &DepartmentFields) -> (Value, Value) {
        match self {
            DepartmentField::Title => pair(&current.title, &f.title),
            DepartmentField::CustomId => pair(&current.custom_id, &f.custom_id),
            DepartmentField::Parent => pair(&current.parent, &f.parent),
            DepartmentField::Manager => pair(&current.manager, &f.manager),
            _ => pair(&self.contact(&current.contact), &self.contact(&f.contact)),
        }
    }
}

fn pair<A: Serialize + ?Sized, B: Serialize + ?Sized>(old: &A, new: &B) -> (Value, Value) {
    (
        serde_json::to_value(old).unwrap_or(Value::Null),
        serde_json::to_value(new).unwrap_or(Value::Null),
    )
}

/// The user fields (among those the mappings write) where `current` differs from what would be
/// written: the one comparison of planner and targets. `external_id` is the id to write
/// (`None` for a user made by hand that is only being deactivated).
pub fn user_differences(
    current: &TargetUser,
    external_id: Option<UserId>,
    fields: &UserFields,
    mappings: Mappings,
) -> Vec<UserField> {
    UserField::COMPARED
        .into_iter()
        .filter(|f| f.is_written(mappings) && f.differs(current, external_id, fields))
        .collect()
}

/// The department fields (among those the mappings write) where `current` differs from what
/// would be written.
pub fn department_differences(
    current: &TargetDepartment,
    fields: &DepartmentFields,
    mappings: Mappings,
) -> Vec<DepartmentField> {
    DepartmentField::COMPARED
        .into_iter()
        .filter(|f| f.is_written(mappings) && f.differs(current, fields))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_plan_keys() {
        for field in UserField::COMPARED.into_iter().chain([UserField::Active]) {
            assert_eq!(
                serde_json::to_value(field).ok(),
                Some(Value::String(field.as_str().to_owned()))
            );
        }
        for field in DepartmentField::COMPARED {
            assert_eq!(
                serde_json::to_value(field).ok(),
                Some(Value::String(field.as_str().to_owned()))
            );
        }
    }
}
