//! A customer's sync policy: scope, defaults, guards and optional mappings, as typed values.
//!
//! `orgsync-config` builds a [`Policy`] from `config/customers/<name>.toml`; tests build them directly.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{Cvr, Domain, UnitId};

/// Everything the planner needs to know about a customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The municipality.
    pub cvr: Cvr,
    /// The customer's mail domains. Only target users in these domains are ever deactivated.
    pub domains: Vec<Domain>,
    /// Sync only this unit's subtree; `None` = the whole tree from its single root.
    pub top_unit: Option<UnitId>,
    /// Subtrees left out of the sync (the unit and everything below it).
    pub excluded_units: BTreeSet<UnitId>,
    /// What becomes a department's custom id.
    pub custom_id: CustomIdSource,
    /// Values written on user create only.
    pub defaults: UserDefaults,
    /// Thresholds that hold a run's deactivations back for a person to release.
    pub guards: Guards,
    /// Optional fields beyond the reference product.
    pub mappings: Mappings,
}

/// What becomes a department's custom id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomIdSource {
    /// The unit's user-facing key (`BrugervendtNoegle`), falling back to the UUID where it has none.
    #[default]
    UserKey,
    /// The unit's UUID.
    Uuid,
}

/// Values written when a user is created, never on update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDefaults {
    /// The target's user type for new users (for example `employee`).
    pub user_type: String,
    /// Language tag (for example `da`).
    pub language: String,
    /// IANA time zone (for example `Europe/Copenhagen`).
    pub timezone: String,
    /// ISO 4217 currency code (for example `DKK`).
    pub currency: String,
}

/// Deactivation guards.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guards {
    /// Hold the run's deactivations when more users (or more departments) than this would be
    /// deactivated. `0` holds every deactivation for a person to release.
    pub max_deactivations: u32,
    /// Hold them when they exceed this percentage (0-100) of the active users (or departments)
    /// the target holds in the customer's scope.
    pub max_deactivation_percent: f64,
    /// Hold them when STS returns this percentage (0-100) fewer units or users than the last
    /// successful run: a sudden drop is more likely a source fault than a mass departure.
    pub max_source_drop_percent: f64,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_deactivations: 50,
            max_deactivation_percent: 10.0,
            max_source_drop_percent: 20.0,
        }
    }
}

/// Optional mappings, all off by default (the reference product's behaviour).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    /// Write the primary position's title as the user's job title.
    pub title: bool,
    /// Write the user's work phone.
    pub phone: bool,
    /// Write department managers (from Lederrolle) and each user's manager.
    pub manager: bool,
    /// Read each unit's contact data (postal address, e-mail, phone, EAN, P-number, CVR) and
    /// write it to its department. Off: nothing of it is read from STS or written.
    #[serde(default)]
    pub unit_contact: bool,
}
