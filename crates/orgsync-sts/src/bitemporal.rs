//! The bitemporal rules of docs/sts-protocol.md §7, turning parsed registrations into plain records.
//!
//! * Of several `Registrering`, the one with the latest `Tidspunkt` counts.
//! * `LivscyklusKode` `Passiveret` or `Slettet` means the object does not exist.
//! * Each attribute, state and relation entry has its own `Virkning`; the entry valid now counts
//!   (from inclusive, to exclusive, `GraenseIndikator` = open). Future-dated and ended entries are
//!   ignored, except for positions, which keep their validity period (see [`function`]).
//! * References are `UUIDIdentifikator` or `URNIdentifikator`; a URN cannot name an STS object
//!   we read, so it is reported and ignored.
//!
//! Nothing here fails: problems become [`ReadIssue`]s naming the object and the element.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use orgsync_model::ids::UnitId;
use orgsync_model::snapshot::Position;
use orgsync_model::time::danish_date;
use uuid::Uuid;

use crate::issues::{ReadIssue, ReadIssueCode};
use crate::response::{
    ObjectXml, PropertyXml, RegistrationXml, RelationXml, TidspunktXml, UnikId, VirkningXml,
};
use crate::wire::{FUNCTION_TYPE_MANAGER, FUNCTION_TYPE_POSITION};

/// A validity period; `None` bounds are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval {
    pub from: Option<DateTime<FixedOffset>>,
    pub to: Option<DateTime<FixedOffset>>,
}

impl Interval {
    fn contains(&self, now: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| f <= now) && self.to.is_none_or(|t| now < t)
    }

    fn reaches_beyond(&self, now: DateTime<Utc>) -> bool {
        self.to.is_none_or(|t| now < t)
    }

    fn intersect(self, other: Interval) -> Interval {
        let from = match (self.from, other.from) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let to = match (self.to, other.to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Interval { from, to }
    }

    fn is_empty(&self) -> bool {
        matches!((self.from, self.to), (Some(f), Some(t)) if f >= t)
    }
}

/// Parses an `xs:dateTime`, with or without offset (no offset = UTC), or a bare date.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    let utc = FixedOffset::east_opt(0)?;
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return t.and_local_timezone(utc).single();
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| t.and_local_timezone(utc).single())
}

/// Reads one object's entries against `now`, collecting issues about it.
pub(crate) struct Reader<'i> {
    pub now: DateTime<Utc>,
    pub kind: &'static str,
    pub object: Option<Uuid>,
    pub issues: &'i mut Vec<ReadIssue>,
}

impl Reader<'_> {
    pub(crate) fn issue(&mut self, code: ReadIssueCode, element: &str, message: impl Into<String>) {
        self.issues.push(ReadIssue {
            code,
            object_kind: self.kind.to_owned(),
            object: self.object,
            element: element.to_owned(),
            message: message.into(),
        });
    }

    fn bound(
        &mut self,
        bound: Option<&TidspunktXml>,
        element: &str,
    ) -> Result<Option<DateTime<FixedOffset>>, ()> {
        let Some(bound) = bound else { return Ok(None) };
        if let Some(text) = &bound.timestamp {
            return match parse_time(text) {
                Some(t) => Ok(Some(t)),
                None => {
                    self.issue(
                        ReadIssueCode::Malformed,
                        &format!("{element}/TidsstempelDatoTid"),
                        format!("{text:?} is not a date-time; the entry is ignored"),
                    );
                    Err(())
                }
            };
        }
        if bound
            .open
            .as_deref()
            .map(str::trim)
            .is_some_and(|v| v != "true" && v != "1")
        {
            self.issue(
                ReadIssueCode::Malformed,
                &format!("{element}/GraenseIndikator"),
                "GraenseIndikator is not true; read as an open bound",
            );
        }
        Ok(None)
    }

    /// The entry's period; `None` (with an issue) when a bound is malformed.
    pub(crate) fn interval(
        &mut self,
        virkning: Option<&VirkningXml>,
        element: &str,
    ) -> Option<Interval> {
        let Some(v) = virkning else {
            return Some(Interval {
                from: None,
                to: None,
            });
        };
        let from = self
            .bound(v.from.as_ref(), &format!("{element}/Virkning/FraTidspunkt"))
            .ok()?;
        let to = self
            .bound(v.to.as_ref(), &format!("{element}/Virkning/TilTidspunkt"))
            .ok()?;
        Some(Interval { from, to })
    }

    /// The entry valid now (the latest-starting one if several overlap).
    pub(crate) fn current<'x, T>(
        &mut self,
        entries: &'x [T],
        virkning: impl Fn(&T) -> Option<&VirkningXml>,
        element: &str,
    ) -> Option<&'x T> {
        let mut best: Option<(&T, Interval)> = None;
        for entry in entries {
            let Some(period) = self.interval(virkning(entry), element) else {
                continue;
            };
            if period.contains(self.now) && best.is_none_or(|(_, b)| period.from >= b.from) {
                best = Some((entry, period));
            }
        }
        best.map(|(entry, _)| entry)
    }

    /// Every entry valid now or later (ended entries dropped), with its period.
    pub(crate) fn entries_from_now_on<'x, T>(
        &mut self,
        entries: &'x [T],
        virkning: impl Fn(&T) -> Option<&VirkningXml>,
        element: &str,
    ) -> Vec<(&'x T, Interval)> {
        let mut kept = Vec::new();
        for entry in entries {
            let Some(period) = self.interval(virkning(entry), element) else {
                continue;
            };
            if period.reaches_beyond(self.now) && !period.is_empty() {
                kept.push((entry, period));
            }
        }
        kept.sort_by_key(|(_, p)| p.from);
        kept
    }

    /// The entry valid now, else the next one to become valid.
    pub(crate) fn current_or_next<'x, T>(
        &mut self,
        entries: &'x [T],
        virkning: impl Fn(&T) -> Option<&VirkningXml>,
        element: &str,
    ) -> Option<(&'x T, Interval)> {
        let now = self.now;
        let candidates = self.entries_from_now_on(entries, virkning, element);
        let current = candidates
            .iter()
            .rev()
            .find(|(_, p)| p.contains(now))
            .copied();
        current.or_else(|| candidates.first().copied())
    }

    /// A reference's UUID; URNs and malformed ids become issues.
    pub(crate) fn reference(&mut self, id: Option<&UnikId>, element: &str) -> Option<Uuid> {
        let Some(id) = id else {
            self.issue(
                ReadIssueCode::Missing,
                element,
                "the reference has no ReferenceID",
            );
            return None;
        };
        match (&id.uuid, &id.urn) {
            (Some(text), _) => match Uuid::parse_str(text.trim()) {
                Ok(uuid) => Some(uuid),
                Err(_) => {
                    self.issue(
                        ReadIssueCode::Malformed,
                        &format!("{element}/UUIDIdentifikator"),
                        format!("{text:?} is not a UUID; the reference is ignored"),
                    );
                    None
                }
            },
            (None, Some(urn)) => {
                self.issue(
                    ReadIssueCode::Ignored,
                    &format!("{element}/URNIdentifikator"),
                    format!("the reference is the URN {urn:?}, not a UUID; ignored"),
                );
                None
            }
            (None, None) => {
                self.issue(
                    ReadIssueCode::Missing,
                    element,
                    "the reference has neither UUIDIdentifikator nor URNIdentifikator",
                );
                None
            }
        }
    }
}

/// The object's UUID from `ObjektType`, or an issue.
pub(crate) fn object_uuid(
    object: &ObjectXml,
    kind: &'static str,
    issues: &mut Vec<ReadIssue>,
) -> Option<Uuid> {
    let text = object.object.as_ref().and_then(|o| o.uuid.as_deref());
    match text.map(|t| Uuid::parse_str(t.trim())) {
        Some(Ok(uuid)) => Some(uuid),
        Some(Err(_)) => {
            issues.push(ReadIssue {
                code: ReadIssueCode::Malformed,
                object_kind: kind.to_owned(),
                object: None,
                element: "ObjektType/UUIDIdentifikator".to_owned(),
                message: format!(
                    "{:?} is not a UUID; the object is ignored",
                    text.unwrap_or_default()
                ),
            });
            None
        }
        None => {
            issues.push(ReadIssue {
                code: ReadIssueCode::Missing,
                object_kind: kind.to_owned(),
                object: None,
                element: "ObjektType/UUIDIdentifikator".to_owned(),
                message: "an object without ObjektType/UUIDIdentifikator is ignored".to_owned(),
            });
            None
        }
    }
}

/// The registration that counts, or `None` when the object is absent (none, passivated, deleted).
pub(crate) fn latest_registration<'x>(
    object: &'x ObjectXml,
    reader: &mut Reader<'_>,
) -> Option<&'x RegistrationXml> {
    let mut best: Option<(&RegistrationXml, Option<DateTime<FixedOffset>>)> = None;
    for registration in &object.registrations {
        let time = match registration.time.as_deref() {
            None => None,
            Some(text) => match parse_time(text) {
                Some(t) => Some(t),
                None => {
                    reader.issue(
                        ReadIssueCode::Malformed,
                        "Registrering/Tidspunkt",
                        format!(
                            "{text:?} is not a date-time; the registration counts as the oldest"
                        ),
                    );
                    None
                }
            },
        };
        if best.is_none_or(|(_, b)| time >= b) {
            best = Some((registration, time));
        }
    }
    let Some((registration, _)) = best else {
        reader.issue(
            ReadIssueCode::Missing,
            "Registrering",
            "the object has no registration; ignored",
        );
        return None;
    };
    match registration.lifecycle.as_deref().map(str::trim) {
        Some("Passiveret") | Some("Slettet") => None,
        _ => Some(registration),
    }
}

fn properties(registration: &RegistrationXml) -> &[PropertyXml] {
    registration
        .attributes
        .as_ref()
        .map_or(&[], |a| a.properties.as_slice())
}

fn relations<'x>(
    registration: &'x RegistrationXml,
    pick: impl Fn(&'x crate::response::RelationList) -> &'x Vec<RelationXml>,
) -> &'x [RelationXml] {
    registration
        .relations
        .as_ref()
        .map_or(&[], |r| pick(r).as_slice())
}

fn text(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Whether the object's `Gyldighed` valid now is `Aktiv`.
fn active_now(registration: &RegistrationXml, reader: &mut Reader<'_>) -> bool {
    let entries = registration
        .states
        .as_ref()
        .map_or(&[][..], |s| s.validity.as_slice());
    match reader.current(entries, |g| g.virkning.as_ref(), "TilstandListe/Gyldighed") {
        Some(g) => g.status.as_deref().map(str::trim) == Some("Aktiv"),
        None => false,
    }
}

/// An `OrganisationEnhed` as read.
#[derive(Clone, Debug)]
pub(crate) struct UnitRecord {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub user_key: Option<String>,
    pub parent: Option<Uuid>,
    pub belongs_to: Option<Uuid>,
    pub unit_type: Option<Uuid>,
    /// `(role, address)` of each address relation valid now, in `Indeks` order; read only
    /// when the unit's contact data is asked for (empty otherwise).
    pub addresses: Vec<(Uuid, Uuid)>,
    /// The `Produktionsenhed` Virksomhed valid now (its `P-NummerTekst` is the unit's
    /// P-number); read only with the contact data.
    pub production_unit: Option<Uuid>,
    /// The `Skatteenhed` Virksomhed valid now (its `CVR-NummerTekst` is the unit's CVR); read
    /// only with the contact data.
    pub tax_unit: Option<Uuid>,
    pub active: bool,
}

/// Reads a unit; `None` when it is absent or has no usable id. Its address relations are read
/// only with `contact`.
pub(crate) fn unit(
    object: &ObjectXml,
    now: DateTime<Utc>,
    contact: bool,
    issues: &mut Vec<ReadIssue>,
) -> Option<UnitRecord> {
    let uuid = object_uuid(object, "OrganisationEnhed", issues)?;
    let mut r = Reader {
        now,
        kind: "OrganisationEnhed",
        object: Some(uuid),
        issues,
    };
    let registration = latest_registration(object, &mut r)?;
    let property = r.current(
        properties(registration),
        |p| p.virkning.as_ref(),
        "AttributListe/Egenskab",
    );
    let name = property.and_then(|p| text(p.unit_name.as_ref()));
    if name.is_none() {
        r.issue(
            ReadIssueCode::Missing,
            "AttributListe/Egenskab/EnhedNavn",
            "the unit has no name valid now",
        );
    }
    let user_key = property.and_then(|p| text(p.user_key.as_ref()));
    let parent = r
        .current(
            relations(registration, |l| &l.parent),
            |x| x.virkning.as_ref(),
            "RelationListe/Overordnet",
        )
        .cloned();
    let parent = parent
        .and_then(|p| r.reference(p.reference.as_ref(), "RelationListe/Overordnet/ReferenceID"));
    let belongs = r
        .current(
            relations(registration, |l| &l.belongs_to),
            |x| x.virkning.as_ref(),
            "RelationListe/Tilhoerer",
        )
        .cloned();
    let belongs_to = belongs
        .and_then(|b| r.reference(b.reference.as_ref(), "RelationListe/Tilhoerer/ReferenceID"));
    let kind = r
        .current(
            relations(registration, |l| &l.unit_type),
            |x| x.virkning.as_ref(),
            "RelationListe/Enhedstype",
        )
        .cloned();
    let unit_type = kind
        .and_then(|k| r.reference(k.reference.as_ref(), "RelationListe/Enhedstype/ReferenceID"));
    let (addresses, production_unit, tax_unit) = if contact {
        (
            addresses(registration, &mut r),
            company_relation(
                registration,
                |l| &l.production_unit,
                "Produktionsenhed",
                &mut r,
            ),
            company_relation(registration, |l| &l.tax_unit, "Skatteenhed", &mut r),
        )
    } else {
        (Vec::new(), None, None)
    };
    let active = active_now(registration, &mut r);
    Some(UnitRecord {
        uuid,
        name,
        user_key,
        parent,
        belongs_to,
        unit_type,
        addresses,
        production_unit,
        tax_unit,
        active,
    })
}

/// The Virksomhed a unit's `Produktionsenhed` or `Skatteenhed` relation names now.
fn company_relation<'x>(
    registration: &'x RegistrationXml,
    pick: impl Fn(&'x crate::response::RelationList) -> &'x Vec<RelationXml>,
    name: &str,
    r: &mut Reader<'_>,
) -> Option<Uuid> {
    let element = format!("RelationListe/{name}");
    let entry = r
        .current(
            relations(registration, pick),
            |x| x.virkning.as_ref(),
            &element,
        )
        .cloned()?;
    r.reference(entry.reference.as_ref(), &format!("{element}/ReferenceID"))
}

/// A `Virksomhed` as read: its P-number and CVR number valid now (either may be absent: a
/// production unit has a P-number, a tax unit a CVR number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CompanyRecord {
    pub p_number: Option<String>,
    pub cvr: Option<String>,
}

/// Reads a `Virksomhed`: `(uuid, record)`; `None` when absent. One with neither number valid
/// now is kept (empty) and reported.
pub(crate) fn company(
    object: &ObjectXml,
    now: DateTime<Utc>,
    issues: &mut Vec<ReadIssue>,
) -> Option<(Uuid, CompanyRecord)> {
    let uuid = object_uuid(object, "Virksomhed", issues)?;
    let mut r = Reader {
        now,
        kind: "Virksomhed",
        object: Some(uuid),
        issues,
    };
    let registration = latest_registration(object, &mut r)?;
    let property = r.current(
        properties(registration),
        |p| p.virkning.as_ref(),
        "AttributListe/Egenskab",
    );
    let record = CompanyRecord {
        p_number: property.and_then(|p| text(p.p_number.as_ref())),
        cvr: property.and_then(|p| text(p.cvr.as_ref())),
    };
    if record == CompanyRecord::default() {
        r.issue(
            ReadIssueCode::Missing,
            "AttributListe/Egenskab/P-NummerTekst",
            "the Virksomhed has neither P-NummerTekst nor CVR-NummerTekst valid now",
        );
    }
    Some((uuid, record))
}

/// A `Bruger` as read.
#[derive(Clone, Debug)]
pub(crate) struct UserRecord {
    pub uuid: Uuid,
    pub user_name: Option<String>,
    pub belongs_to: Option<Uuid>,
    pub person: Option<Uuid>,
    /// `(role, address)` of each address relation valid now, in `Indeks` order.
    pub addresses: Vec<(Uuid, Uuid)>,
    pub active: bool,
}

/// Reads a user; `None` when absent.
pub(crate) fn user(
    object: &ObjectXml,
    now: DateTime<Utc>,
    issues: &mut Vec<ReadIssue>,
) -> Option<UserRecord> {
    let uuid = object_uuid(object, "Bruger", issues)?;
    let mut r = Reader {
        now,
        kind: "Bruger",
        object: Some(uuid),
        issues,
    };
    let registration = latest_registration(object, &mut r)?;
    let property = r.current(
        properties(registration),
        |p| p.virkning.as_ref(),
        "AttributListe/Egenskab",
    );
    let user_name = property.and_then(|p| text(p.user_name.as_ref()));
    if user_name.is_none() {
        r.issue(
            ReadIssueCode::Missing,
            "AttributListe/Egenskab/BrugerNavn",
            "the user has no BrugerNavn valid now",
        );
    }
    let belongs = r
        .current(
            relations(registration, |l| &l.belongs_to),
            |x| x.virkning.as_ref(),
            "RelationListe/Tilhoerer",
        )
        .cloned();
    let belongs_to = belongs
        .and_then(|b| r.reference(b.reference.as_ref(), "RelationListe/Tilhoerer/ReferenceID"));
    let person = r
        .current(
            relations(registration, |l| &l.persons),
            |x| x.virkning.as_ref(),
            "RelationListe/TilknyttedePersoner",
        )
        .cloned();
    let person = person.and_then(|p| {
        r.reference(
            p.reference.as_ref(),
            "RelationListe/TilknyttedePersoner/ReferenceID",
        )
    });
    let addresses = addresses(registration, &mut r);
    let active = active_now(registration, &mut r);
    Some(UserRecord {
        uuid,
        user_name,
        belongs_to,
        person,
        addresses,
        active,
    })
}

/// The `(role, address)` of each `Adresser` relation valid now, in `Indeks` order (users and
/// units alike; the role decides what an address is, never its label).
fn addresses(registration: &RegistrationXml, r: &mut Reader<'_>) -> Vec<(Uuid, Uuid)> {
    let now = r.now;
    let mut addresses = Vec::new();
    let mut entries: Vec<&RelationXml> = Vec::new();
    for entry in relations(registration, |l| &l.addresses) {
        if let Some(period) = r.interval(entry.virkning.as_ref(), "RelationListe/Adresser") {
            if period.contains(now) {
                entries.push(entry);
            }
        }
    }
    entries.sort_by(|a, b| a.index.cmp(&b.index));
    for entry in entries {
        let role = match entry.role.as_ref() {
            Some(role) => r.reference(Some(role), "RelationListe/Adresser/Rolle"),
            None => {
                r.issue(
                    ReadIssueCode::Missing,
                    "RelationListe/Adresser/Rolle",
                    "an address relation without a role is ignored",
                );
                None
            }
        };
        let address = r.reference(
            entry.reference.as_ref(),
            "RelationListe/Adresser/ReferenceID",
        );
        if let (Some(role), Some(address)) = (role, address) {
            addresses.push((role, address));
        }
    }
    addresses
}

/// Reads a `Person`'s name, or an `Adresse`'s text: `(uuid, value)`; `None` when absent.
pub(crate) fn named_value(
    object: &ObjectXml,
    kind: &'static str,
    now: DateTime<Utc>,
    issues: &mut Vec<ReadIssue>,
) -> Option<(Uuid, Option<String>)> {
    let uuid = object_uuid(object, kind, issues)?;
    let mut r = Reader {
        now,
        kind,
        object: Some(uuid),
        issues,
    };
    let registration = latest_registration(object, &mut r)?;
    let property = r.current(
        properties(registration),
        |p| p.virkning.as_ref(),
        "AttributListe/Egenskab",
    );
    let (value, element) = if kind == "Person" {
        (
            property.and_then(|p| text(p.person_name.as_ref())),
            "AttributListe/Egenskab/NavnTekst",
        )
    } else {
        (
            property.and_then(|p| text(p.address.as_ref())),
            "AttributListe/Egenskab/AdresseTekst",
        )
    };
    if value.is_none() {
        r.issue(ReadIssueCode::Missing, element, "no value valid now");
    }
    Some((uuid, value))
}

/// An `OrganisationFunktion` of type Enhedsrolle or Lederrolle, as positions of its users.
#[derive(Clone, Debug)]
pub(crate) struct FunctionRecord {
    pub uuid: Uuid,
    pub organisations: Vec<Uuid>,
    /// `(user, position)` for every user linked now or later.
    pub positions: Vec<(Uuid, Position)>,
}

/// Reads a function; `None` when absent, inactive from now on, or of another type.
///
/// A position's period is the intersection of the function's `Gyldighed` (Aktiv), the user link
/// and the unit link (kombit/org-graphql rule); positions that ended are dropped, future ones kept.
pub(crate) fn function(
    object: &ObjectXml,
    now: DateTime<Utc>,
    issues: &mut Vec<ReadIssue>,
) -> Option<FunctionRecord> {
    let uuid = object_uuid(object, "OrganisationFunktion", issues)?;
    let mut r = Reader {
        now,
        kind: "OrganisationFunktion",
        object: Some(uuid),
        issues,
    };
    let registration = latest_registration(object, &mut r)?;
    let function_type = r
        .current_or_next(
            relations(registration, |l| &l.function_type),
            |x| x.virkning.as_ref(),
            "RelationListe/Funktionstype",
        )
        .map(|(x, _)| x.clone());
    let function_type = function_type.and_then(|t| {
        r.reference(
            t.reference.as_ref(),
            "RelationListe/Funktionstype/ReferenceID",
        )
    });
    let manager = match function_type {
        Some(t) if t == FUNCTION_TYPE_POSITION => false,
        Some(t) if t == FUNCTION_TYPE_MANAGER => true,
        _ => return None,
    };
    let states = registration
        .states
        .as_ref()
        .map_or(&[][..], |s| s.validity.as_slice());
    let (validity, validity_period) =
        r.current_or_next(states, |g| g.virkning.as_ref(), "TilstandListe/Gyldighed")?;
    if validity.status.as_deref().map(str::trim) != Some("Aktiv") {
        return None;
    }
    let title = r
        .current_or_next(
            properties(registration),
            |p| p.virkning.as_ref(),
            "AttributListe/Egenskab",
        )
        .and_then(|(p, _)| text(p.function_name.as_ref()));
    let unit_links: Vec<(RelationXml, Interval)> = r
        .entries_from_now_on(
            relations(registration, |l| &l.units),
            |x| x.virkning.as_ref(),
            "RelationListe/TilknyttedeEnheder",
        )
        .into_iter()
        .map(|(x, p)| (x.clone(), p))
        .collect();
    let Some((unit_link, unit_period)) = unit_links.into_iter().next() else {
        r.issue(
            ReadIssueCode::Missing,
            "RelationListe/TilknyttedeEnheder",
            "the position names no unit; ignored",
        );
        return None;
    };
    let unit = r.reference(
        unit_link.reference.as_ref(),
        "RelationListe/TilknyttedeEnheder/ReferenceID",
    )?;
    let organisations: Vec<Uuid> = relations(registration, |l| &l.organisations)
        .iter()
        .filter_map(|x| {
            x.reference
                .as_ref()
                .and_then(|id| id.uuid.as_deref())
                .and_then(|t| Uuid::parse_str(t.trim()).ok())
        })
        .collect();
    let user_links: Vec<(RelationXml, Interval)> = r
        .entries_from_now_on(
            relations(registration, |l| &l.users),
            |x| x.virkning.as_ref(),
            "RelationListe/TilknyttedeBrugere",
        )
        .into_iter()
        .map(|(x, p)| (x.clone(), p))
        .collect();
    let mut positions = Vec::new();
    for (link, period) in user_links {
        let Some(user) = r.reference(
            link.reference.as_ref(),
            "RelationListe/TilknyttedeBrugere/ReferenceID",
        ) else {
            continue;
        };
        let period = period.intersect(unit_period).intersect(validity_period);
        if period.is_empty() || !period.reaches_beyond(now) {
            continue;
        }
        positions.push((
            user,
            Position {
                unit_uuid: UnitId(unit),
                title: title.clone(),
                manager,
                valid_from: period.from.map(|t| danish_date(&t)),
                valid_to: period.to.map(|t| danish_date(&t)),
            },
        ));
    }
    Some(FunctionRecord {
        uuid,
        organisations,
        positions,
    })
}
