//! The target-side state: departments and users as the HR system holds them for one customer.
//!
//! Target adapters read this (paged) before a run; the planner compares it with the snapshot.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{UnitId, UserId};
use crate::snapshot::UnitContact;

/// What the HR system holds for one customer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Departments, managed (with an external id) or created by hand in the HR system.
    pub departments: Vec<TargetDepartment>,
    /// Users, whether orgsync created them or not.
    pub users: Vec<TargetUser>,
}

/// A department in the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDepartment {
    /// The STS unit UUID. `None` for a department created by hand, which orgsync never touches.
    pub external_id: Option<UnitId>,
    /// The department's title.
    pub title: String,
    /// The custom id (the unit's user-facing key or UUID).
    pub custom_id: Option<String>,
    /// The parent department's external id; `None` at the top.
    pub parent: Option<UnitId>,
    /// The manager's external id, when the manager mapping is on.
    #[serde(default)]
    pub manager: Option<UserId>,
    /// The contact data the department holds (written with the `unit_contact` mapping).
    #[serde(default, flatten)]
    pub contact: UnitContact,
    /// Whether the department is active.
    pub active: bool,
}

/// A user in the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetUser {
    /// The STS Bruger UUID; `None` for a user created by hand (matched by user name instead).
    pub external_id: Option<UserId>,
    /// The login name: for orgsync's users, the lower-cased e-mail.
    pub user_name: String,
    /// The e-mail address as the target holds it.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Memberships in managed departments (by external id).
    pub memberships: BTreeSet<UnitId>,
    /// The primary department.
    pub primary_department: Option<UnitId>,
    /// Job title, when the title mapping is on.
    #[serde(default)]
    pub title: Option<String>,
    /// Work phone, when the phone mapping is on.
    #[serde(default)]
    pub phone: Option<String>,
    /// The manager's external id, when the manager mapping is on.
    #[serde(default)]
    pub manager: Option<UserId>,
    /// Whether the user is active (can log in).
    pub active: bool,
}
