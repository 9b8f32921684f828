//! The source snapshot: one municipality's units and users as read from STS Organisation.
//!
//! The JSON form of [`Snapshot`] is the format `orgsync sts snapshot --format json` prints and the
//! simulator loads as a fixture, so its keys are part of the interface (see README).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::error_class::ErrorClass;
use crate::ids::{Cvr, UnitId, UserId};

/// Everything read from STS for one municipality at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The municipality.
    pub cvr: Cvr,
    /// Every unit read (active and inactive).
    pub units: Vec<Unit>,
    /// Every user read (active and inactive).
    pub users: Vec<User>,
    /// `Some(what failed)` when the read did not cover the whole organisation (a page or a
    /// batch failed for good). A plan from a partial snapshot deactivates nothing, and changes no
    /// membership or primary department it could not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialRead>,
}

/// Which part of an STS read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPart {
    /// `OrganisationEnhed` (the unit tree).
    Units,
    /// `Bruger` (users).
    Users,
    /// `OrganisationFunktion` (positions and manager roles).
    Positions,
    /// `Person` (users' names).
    Persons,
    /// `Adresse` (users' e-mail and phone, units' contact data).
    Addresses,
    /// `Virksomhed` (units' P-number and CVR).
    Companies,
    /// Anything else (a read task that died): nothing of the read can be trusted to be complete.
    Other,
}

impl ReadPart {
    /// The stable key (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPart::Units => "units",
            ReadPart::Users => "users",
            ReadPart::Positions => "positions",
            ReadPart::Persons => "persons",
            ReadPart::Addresses => "addresses",
            ReadPart::Companies => "companies",
            ReadPart::Other => "other",
        }
    }
}

/// One part of a read that failed for good (after the client's own retries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadFailure {
    /// What was being read.
    pub part: ReadPart,
    /// The error class of the failure.
    pub class: ErrorClass,
    /// Whether reading again may succeed (an outage, a timeout), as opposed to a fault that a
    /// new read repeats (a server that ignores the paging offset).
    pub retriable: bool,
    /// What failed, for people.
    pub message: String,
    /// The UUIDs of the objects of `part` this failure left unread, when known (a failed `list`
    /// batch knows them); `None` when an unknown set is unread (a failed search page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<Vec<Uuid>>,
}

/// What an incomplete read missed: every failure, in the order they happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "PartialReadWire")]
pub struct PartialRead {
    /// The failures (at least one).
    pub failures: Vec<ReadFailure>,
}

/// `partial` as stored: the typed form, or the text older snapshots carry.
#[derive(Deserialize)]
#[serde(untagged)]
enum PartialReadWire {
    Typed { failures: Vec<ReadFailure> },
    Text(String),
}

impl From<PartialReadWire> for PartialRead {
    fn from(wire: PartialReadWire) -> PartialRead {
        match wire {
            PartialReadWire::Typed { failures } => PartialRead { failures },
            PartialReadWire::Text(message) => PartialRead::unknown(message),
        }
    }
}

impl PartialRead {
    /// A partial read known only by its description (nothing of it can be verified, not
    /// retriable).
    pub fn unknown(message: impl Into<String>) -> PartialRead {
        PartialRead {
            failures: vec![ReadFailure {
                part: ReadPart::Other,
                class: ErrorClass::StsPartialRead,
                retriable: false,
                message: message.into(),
                unread: None,
            }],
        }
    }

    /// Whether reading again may complete it: every failure is retriable.
    pub fn is_retriable(&self) -> bool {
        self.failures.iter().all(|f| f.retriable)
    }

    /// The class of the first failure that a new read would not cure, else of the first one.
    pub fn class(&self) -> ErrorClass {
        self.failures
            .iter()
            .find(|f| !f.retriable)
            .or_else(|| self.failures.first())
            .map_or(ErrorClass::StsPartialRead, |f| f.class)
    }

    fn failed(&self, part: ReadPart) -> impl Iterator<Item = &ReadFailure> {
        self.failures
            .iter()
            .filter(move |f| f.part == part || f.part == ReadPart::Other)
    }

    /// Whether every user's positions (and the units they name) were read: without that, a
    /// user's memberships and primary department cannot be verified.
    pub fn positions_complete(&self) -> bool {
        self.failed(ReadPart::Positions).next().is_none()
            && self.failed(ReadPart::Units).next().is_none()
    }

    /// Whether the user `id` (`None`: a target user made by hand, matched by e-mail) may have
    /// been left unread: a user search page failed, a `list` batch with it failed, or (for one
    /// made by hand) any user, or its e-mail address, may be unread.
    pub fn may_have_missed_user(&self, id: Option<UserId>) -> bool {
        let users = || self.failed(ReadPart::Users);
        match id {
            Some(id) => users().any(|f| f.unread.as_ref().is_none_or(|u| u.contains(&id.0))),
            None => users()
                .chain(self.failed(ReadPart::Addresses))
                .next()
                .is_some(),
        }
    }

    /// Whether the unit `id` may have been left unread.
    pub fn may_have_missed_unit(&self, id: UnitId) -> bool {
        self.failed(ReadPart::Units)
            .any(|f| f.unread.as_ref().is_none_or(|u| u.contains(&id.0)))
    }
}

impl std::fmt::Display for PartialRead {
    /// The first five failures, and how many more.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, failure) in self.failures.iter().take(5).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&failure.message)?;
        }
        let more = self.failures.len().saturating_sub(5);
        if more > 0 {
            write!(f, "; and {more} more failures")?;
        }
        Ok(())
    }
}

/// An `OrganisationEnhed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// The unit's UUID, the department's external id.
    pub uuid: UnitId,
    /// `EnhedNavn`.
    pub name: String,
    /// `BrugervendtNoegle`, the user-facing key (optional in STS, being phased out).
    #[serde(default)]
    pub user_key: Option<String>,
    /// `Overordnet`: the parent unit; `None` for the root.
    #[serde(default)]
    pub parent_uuid: Option<UnitId>,
    /// `Gyldighed` = Aktiv now.
    pub active: bool,
    /// `Enhedstype`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UnitKind>,
    /// The unit's own contact data, read and written only when the customer maps it
    /// (`[mappings] unit_contact`).
    #[serde(default, skip_serializing_if = "UnitContact::is_empty")]
    pub contact: UnitContact,
}

/// The unit types STS distinguishes for HR purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// "Afdeling": an administrative unit.
    Department,
    /// "Team".
    Team,
    /// Any other type UUID.
    Other,
}

/// A unit's contact data (the `unit_contact` mapping): what STS holds in the unit's `Adresser`
/// relations, chosen by role UUID, and (P-number, CVR) on the `Virksomhed` objects its
/// `Produktionsenhed` and `Skatteenhed` relations name. The same value is what a department carries in a plan and in
/// a target. Texts as STS holds them (trimmed); an absent relation is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitContact {
    /// The postal address as one line (role Postadresse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_address: Option<String>,
    /// The unit's e-mail address (role Email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The unit's phone number (role Telefon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// EAN location number, for electronic invoicing (role EAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ean: Option<String>,
    /// P-number (production unit number): the `Produktionsenhed` Virksomhed's `P-NummerTekst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_number: Option<String>,
    /// The CVR number the unit belongs to: the `Skatteenhed` Virksomhed's `CVR-NummerTekst`
    /// (which may be the municipality's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvr: Option<String>,
}

impl UnitContact {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == UnitContact::default()
    }
}

/// A `Bruger` with its person's name, its addresses and its positions.
///
/// In JSON a user carries `name` (the person's full name as STS holds it) and, for readers, the
/// derived `first_name` and `last_name`. A fixture may give either `name` or the two parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "UserJson", into = "UserJson")]
pub struct User {
    /// The Bruger's UUID, the target user's external id.
    pub uuid: UserId,
    /// `BrugerNavn`: the login name in the municipality (often initials).
    pub user_name: String,
    /// The person's full name (`NavnTekst`). Never the CPR number: that is never read.
    pub name: Option<String>,
    /// The e-mail address as STS holds it (not yet validated).
    pub email: Option<String>,
    /// The phone number as STS holds it.
    pub phone: Option<String>,
    /// `Gyldighed` = Aktiv now.
    pub active: bool,
    /// Positions (`OrganisationFunktion` of type Enhedsrolle, or Lederrolle for managers).
    pub positions: Vec<Position>,
}

impl User {
    /// The person's name split by the sync rule: see [`split_person_name`].
    pub fn name_parts(&self) -> NameParts {
        split_person_name(self.name.as_deref().unwrap_or(""))
    }
}

/// A position: the user works in (or manages) a unit, with a title and a validity period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The unit the position is in.
    pub unit_uuid: UnitId,
    /// `FunktionNavn`: the job title.
    #[serde(default)]
    pub title: Option<String>,
    /// Whether this is a manager position (Lederrolle).
    #[serde(default)]
    pub manager: bool,
    /// First day of validity (inclusive); `None` = since ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    /// First day after validity (exclusive); `None` = open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
}

impl Position {
    /// Whether the position is valid on `today` (from inclusive, to exclusive).
    pub fn is_valid_on(&self, today: NaiveDate) -> bool {
        self.valid_from.is_none_or(|from| from <= today)
            && self.valid_to.is_none_or(|to| today < to)
    }
}

/// A person's name split into first and last name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameParts {
    /// Everything but the last word; `None` for a one-word name.
    pub first: Option<String>,
    /// The last word; `None` for an empty name.
    pub last: Option<String>,
}

/// Splits a name by the sync rule: the last word is the last name, the rest (single-spaced) the
/// first name; a one-word name has no first name.
pub fn split_person_name(name: &str) -> NameParts {
    let words: Vec<&str> = name.split_whitespace().collect();
    match words.split_last() {
        None => NameParts {
            first: None,
            last: None,
        },
        Some((last, rest)) => NameParts {
            first: (!rest.is_empty()).then(|| rest.join(" ")),
            last: Some((*last).to_owned()),
        },
    }
}

/// The JSON shape of a [`User`]: adds the derived name parts, and accepts them instead of `name`.
#[derive(Serialize, Deserialize)]
struct UserJson {
    uuid: UserId,
    user_name: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    active: bool,
    #[serde(default)]
    positions: Vec<Position>,
}

impl From<UserJson> for User {
    fn from(json: UserJson) -> Self {
        let name = json.name.or_else(|| {
            let joined = [json.first_name, json.last_name]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!joined.trim().is_empty()).then_some(joined)
        });
        User {
            uuid: json.uuid,
            user_name: json.user_name,
            name,
            email: json.email,
            phone: json.phone,
            active: json.active,
            positions: json.positions,
        }
    }
}

impl From<User> for UserJson {
    fn from(user: User) -> Self {
        let parts = user.name_parts();
        UserJson {
            uuid: user.uuid,
            user_name: user.user_name,
            name: user.name,
            first_name: parts.first,
            last_name: parts.last,
            email: user.email,
            phone: user.phone,
            active: user.active,
            positions: user.positions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(first: Option<&str>, last: Option<&str>) -> NameParts {
        NameParts {
            first: first.map(str::to_owned),
            last: last.map(str::to_owned),
        }
    }

    #[test]
    fn the_last_word_is_the_last_name_and_the_rest_the_first_name() {
        assert_eq!(
            split_person_name("Anne Marie  Østergård Hansen"),
            parts(Some("Anne Marie Østergård"), Some("Hansen"))
        );
        assert_eq!(
            split_person_name("Søren Kierkegaard"),
            parts(Some("Søren"), Some("Kierkegaard"))
        );
    }

    #[test]
    fn a_one_word_name_has_no_first_name() {
        assert_eq!(split_person_name(" Madonna "), parts(None, Some("Madonna")));
        assert_eq!(split_person_name("   "), parts(None, None));
    }

    #[test]
    fn a_position_is_valid_from_its_first_day_up_to_but_not_including_its_end() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let position = Position {
            unit_uuid: UnitId(uuid::Uuid::nil()),
            title: None,
            manager: false,
            valid_from: Some(day(10)),
            valid_to: Some(day(20)),
        };
        assert!(!position.is_valid_on(day(9)));
        assert!(position.is_valid_on(day(10)));
        assert!(position.is_valid_on(day(19)));
        assert!(!position.is_valid_on(day(20)));
    }

    #[test]
    fn user_json_carries_name_parts_and_accepts_them_back() {
        let json = serde_json::json!({
            "uuid": "5b2b5d6e-8c1c-4a3e-9d0a-1f2e3d4c5b6a",
            "user_name": "ANHA",
            "first_name": "Anne",
            "last_name": "Hansen",
            "email": "anne@aarhus.dk",
            "active": true,
            "positions": [{"unit_uuid": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "title": "Pædagog"}]
        });
        let user: User = serde_json::from_value(json).unwrap();
        assert_eq!(user.name.as_deref(), Some("Anne Hansen"));
        let back = serde_json::to_value(&user).unwrap();
        assert_eq!(back["first_name"], "Anne");
        assert_eq!(back["last_name"], "Hansen");
        assert_eq!(back["positions"][0]["manager"], false);
        assert_eq!(back["phone"], serde_json::Value::Null);
    }
}
