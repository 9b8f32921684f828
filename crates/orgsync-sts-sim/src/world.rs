//! One municipality as the simulator serves it: the snapshot plus indexes, derived STS objects (persons, addresses, functions) and their XML.
//!
//! Derived UUIDs are a deterministic function of the snapshot's UUIDs, so a fixture always maps
//! to the same STS objects. A little history is added on purpose (ended and future name entries,
//! an outdated second registration, passivated users) so clients must apply the bitemporal rules.

use std::collections::HashMap;

use chrono::{DateTime, Days, Months, NaiveDate, Utc};
use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::{Position, Snapshot, UnitKind};
use uuid::Uuid;

use crate::wire::*;
use crate::xml::XmlWriter;

/// A period of validity (`None` = open), in dates as KOMBIT uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Period {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

const ALWAYS: Period = Period {
    from: None,
    to: None,
};

/// The virkning window a request asks for: `from` inclusive, `to` exclusive; `None` = open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Ignore the window and return every entry.
    pub everything: bool,
}

impl Window {
    pub(crate) fn now(now: DateTime<Utc>) -> Window {
        Window {
            from: Some(now),
            to: None,
            everything: false,
        }
        .instant()
    }

    fn instant(mut self) -> Window {
        // [now, now]: entries containing the instant.
        self.to = self.from;
        self
    }

    fn admits(&self, period: Period) -> bool {
        if self.everything {
            return true;
        }
        let start = period.from.map(day_start);
        let end = period.to.map(day_start);
        // Overlap of [start, end) with [from, to] (to inclusive when from == to: an instant).
        let after_start = match (self.to, start) {
            (Some(to), Some(start)) => {
                if self.from == self.to {
                    start <= to
                } else {
                    start < to
                }
            }
            _ => true,
        };
        let before_end = match (self.from, end) {
            (Some(from), Some(end)) => from < end,
            _ => true,
        };
        after_start && before_end
    }
}

fn day_start(date: NaiveDate) -> DateTime<Utc> {
    orgsync_model::time::danish_midnight(date)
}

/// A date's first instant, written in UTC as some STS fakes do (1 January starts at
/// `…-12-31T23:00:00.000Z`), so a client that takes dates in UTC reads the day before.
fn stamp(date: NaiveDate) -> String {
    day_start(date).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A deterministic UUID derived from another UUID and a salt.
pub(crate) fn derive(id: Uuid, salt: u64) -> Uuid {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (hi, lo) = id.as_u64_pair();
    let a = mix(hi ^ mix(salt));
    let b = mix(lo ^ a ^ salt.rotate_left(17));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn bucket(id: Uuid, modulo: u64) -> u64 {
    id.as_u64_pair().1 % modulo
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressKind {
    Email,
    Mobile,
    Landline,
    Location,
    UnitPostal,
    UnitEmail,
    UnitPhone,
    UnitEan,
    UnitUrl,
}

/// Whose address an Adresse object is: (user or unit index, position in its list).
#[derive(Clone, Copy, Debug)]
pub(crate) enum AddressOwner {
    User(usize, usize),
    Unit(usize, usize),
}

#[derive(Clone, Debug)]
pub(crate) struct Address {
    pub uuid: Uuid,
    pub kind: AddressKind,
    pub text: String,
}

/// What a Virksomhed a unit points at carries: a production unit's P-number (the unit's
/// `Produktionsenhed`) or a tax unit's CVR number (its `Skatteenhed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompanyRole {
    Production,
    Tax,
}

#[derive(Clone, Debug)]
pub(crate) struct Function {
    pub uuid: Uuid,
    pub user: usize,
    pub position: Position,
}

/// A municipality with its indexes.
#[derive(Debug)]
pub struct World {
    pub(crate) cvr: Cvr,
    pub(crate) organisation: Uuid,
    pub(crate) company: Uuid,
    pub(crate) snapshot: Snapshot,
    pub(crate) units: HashMap<Uuid, usize>,
    pub(crate) users: HashMap<Uuid, usize>,
    /// Passivated users: found by soeg, listed with LivscyklusKode Passiveret.
    pub(crate) ghosts: Vec<Uuid>,
    pub(crate) persons: HashMap<Uuid, usize>,
    pub(crate) addresses: HashMap<Uuid, AddressOwner>,
    pub(crate) user_addresses: Vec<Vec<Address>>,
    /// Each unit's contact data as Adresse objects (postal, e-mail, phone, EAN), plus a web
    /// address on some units, whose role no client reads.
    pub(crate) unit_addresses: Vec<Vec<Address>>,
    /// The Virksomhed objects the units' `Produktionsenhed` / `Skatteenhed` relations name:
    /// (unit index, role).
    pub(crate) companies: HashMap<Uuid, (usize, CompanyRole)>,
    pub(crate) functions: Vec<Function>,
    pub(crate) function_index: HashMap<Uuid, usize>,
    pub(crate) functions_by_unit: HashMap<Uuid, Vec<usize>>,
    pub(crate) today: NaiveDate,
}

/// The Virksomhed a unit's `Produktionsenhed` relation names.
fn production_unit(unit: Uuid) -> Uuid {
    derive(unit, 25)
}

/// The Virksomhed a unit's `Skatteenhed` relation names.
fn tax_unit(unit: Uuid) -> Uuid {
    derive(unit, 26)
}

/// The Organisation and Virksomhed UUIDs the simulator uses for a CVR.
pub fn organisation_ids(cvr: &Cvr) -> (Uuid, Uuid) {
    let seed = Uuid::from_u128(cvr.as_str().parse::<u128>().unwrap_or_default());
    (derive(seed, 1), derive(seed, 2))
}

impl World {
    /// Indexes a snapshot. `today` anchors the synthetic history.
    pub fn new(snapshot: Snapshot, today: NaiveDate) -> World {
        let (organisation, company) = organisation_ids(&snapshot.cvr);
        let units = snapshot
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.uuid.0, i))
            .collect();
        let users: HashMap<Uuid, usize> = snapshot
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.uuid.0, i))
            .collect();
        let mut persons = HashMap::new();
        let mut addresses = HashMap::new();
        let mut user_addresses = Vec::with_capacity(snapshot.users.len());
        let mut functions = Vec::new();
        let mut ghosts = Vec::new();
        for (index, user) in snapshot.users.iter().enumerate() {
            let id = user.uuid.0;
            if user.name.is_some() {
                persons.insert(derive(id, 10), index);
            }
            let mut mine = Vec::new();
            if let Some(email) = &user.email {
                mine.push(Address {
                    uuid: derive(id, 11),
                    kind: AddressKind::Email,
                    text: email.clone(),
                });
            }
            if let Some(phone) = &user.phone {
                let kind = if bucket(id, 4) == 0 {
                    AddressKind::Landline
                } else {
                    AddressKind::Mobile
                };
                mine.push(Address {
                    uuid: derive(id, 12),
                    kind,
                    text: phone.clone(),
                });
            }
            if bucket(id, 3) == 0 {
                mine.push(Address {
                    uuid: derive(id, 13),
                    kind: AddressKind::Location,
                    text: format!("Rådhuspladsen {}, 1550 København V", bucket(id, 90) + 1),
                });
            }
            for (a, address) in mine.iter().enumerate() {
                addresses.insert(address.uuid, AddressOwner::User(index, a));
            }
            user_addresses.push(mine);
            for (p, position) in user.positions.iter().enumerate() {
                functions.push(Function {
                    uuid: derive(id, 100 + p as u64),
                    user: index,
                    position: position.clone(),
                });
            }
            if bucket(id, 200) == 7 {
                ghosts.push(derive(id, 14));
            }
        }
        let mut unit_addresses = Vec::with_capacity(snapshot.units.len());
        let mut companies = HashMap::new();
        for (index, unit) in snapshot.units.iter().enumerate() {
            let id = unit.uuid.0;
            let c = &unit.contact;
            if c.p_number.is_some() {
                companies.insert(production_unit(id), (index, CompanyRole::Production));
            }
            if c.cvr.is_some() {
                companies.insert(tax_unit(id), (index, CompanyRole::Tax));
            }
            let mut mine = Vec::new();
            for (n, kind, text) in [
                (20, AddressKind::UnitPostal, &c.postal_address),
                (21, AddressKind::UnitEmail, &c.email),
                (22, AddressKind::UnitPhone, &c.phone),
                (23, AddressKind::UnitEan, &c.ean),
            ] {
                if let Some(text) = text {
                    mine.push(Address {
                        uuid: derive(id, n),
                        kind,
                        text: text.clone(),
                    });
                }
            }
            if !mine.is_empty() && bucket(id, 4) == 0 {
                mine.push(Address {
                    uuid: derive(id, 24),
                    kind: AddressKind::UnitUrl,
                    text: format!("https://kommune.dk/enhed/{}", bucket(id, 10_000)),
                });
            }
            for (a, address) in mine.iter().enumerate() {
                addresses.insert(address.uuid, AddressOwner::Unit(index, a));
            }
            unit_addresses.push(mine);
        }
        let function_index = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.uuid, i))
            .collect();
        let mut functions_by_unit: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (i, f) in functions.iter().enumerate() {
            functions_by_unit
                .entry(f.position.unit_uuid.0)
                .or_default()
                .push(i);
        }
        World {
            cvr: snapshot.cvr.clone(),
            organisation,
            company,
            snapshot,
            units,
            users,
            ghosts,
            persons,
            addresses,
            user_addresses,
            unit_addresses,
            companies,
            functions,
            function_index,
            functions_by_unit,
            today,
        }
    }

    /// The snapshot served.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The Organisation UUID.
    pub fn organisation(&self) -> Uuid {
        self.organisation
    }

    fn last_month(&self) -> NaiveDate {
        self.today
            .checked_sub_months(Months::new(1))
            .unwrap_or(self.today)
    }

    fn next_month(&self) -> NaiveDate {
        self.today
            .checked_add_months(Months::new(1))
            .unwrap_or(self.today)
    }

    fn function_period(position: &Position) -> Period {
        Period {
            from: position.valid_from,
            to: position.valid_to,
        }
    }

    /// Whether a function has an Aktiv Gyldighed in the window.
    pub(crate) fn function_active_in(&self, function: &Function, window: &Window) -> bool {
        window.admits(Self::function_period(&function.position))
    }
}

/// Writes XML with JAXB-style prefixes, like the real service.
pub(crate) struct Prefixes {
    pub sd: &'static str,
    pub of: &'static str,
    pub sts: &'static str,
}

pub(crate) const P: Prefixes = Prefixes {
    sd: "ns2",
    of: "ns3",
    sts: "ns4",
};

/// Root attributes declaring every namespace a payload uses; `obj` is the object namespace prefix `ns5`.
/// The object XML is the same in both dialects; only these declarations differ.
pub(crate) fn root_namespaces(
    dialect: Dialect,
    service_ns: &str,
    extra: &[(&'static str, String)],
) -> Vec<(String, String)> {
    let mut attrs = vec![
        ("xmlns:ns2".to_owned(), SAGDOK_NS.to_owned()),
        (
            "xmlns:ns3".to_owned(),
            dialect.orgfaelles_namespace().to_owned(),
        ),
        ("xmlns:ns4".to_owned(), dialect.sts_namespace().to_owned()),
        ("xmlns:ns5".to_owned(), service_ns.to_owned()),
    ];
    for (prefix, ns) in extra {
        attrs.push((format!("xmlns:{prefix}"), ns.clone()));
    }
    attrs
}

fn sd(name: &str) -> String {
    format!("{}:{name}", P.sd)
}

fn virkning(w: &mut XmlWriter, period: Period) {
    w.open(&sd("Virkning"));
    w.open(&sd("FraTidspunkt"));
    match period.from {
        Some(d) => w.leaf(&sd("TidsstempelDatoTid"), &stamp(d)),
        None => w.leaf(&sd("GraenseIndikator"), "true"),
    };
    w.end(&sd("FraTidspunkt"));
    w.open(&sd("TilTidspunkt"));
    match period.to {
        Some(d) => w.leaf(&sd("TidsstempelDatoTid"), &stamp(d)),
        None => w.leaf(&sd("GraenseIndikator"), "true"),
    };
    w.end(&sd("TilTidspunkt"));
    w.leaf(&sd("AktoerTypeKode"), "Bruger");
    w.end(&sd("Virkning"));
}

fn uuid_element(w: &mut XmlWriter, element: &str, id: Uuid) {
    w.open(element);
    w.leaf(&sd("UUIDIdentifikator"), &id.to_string());
    w.end(element);
}

fn relation(w: &mut XmlWriter, name: &str, period: Period, id: Uuid) {
    let element = sd(name);
    w.open(&element);
    virkning(w, period);
    uuid_element(w, &sd("ReferenceID"), id);
    w.end(&element);
}

fn gyldighed(w: &mut XmlWriter, period: Period, status: &str) {
    let element = format!("{}:Gyldighed", P.of);
    w.open(&element);
    virkning(w, period);
    w.leaf(&format!("{}:GyldighedStatusKode", P.of), status);
    w.end(&element);
}

/// One registration's header: Tidspunkt, LivscyklusKode, BrugerRef.
fn registration_head(w: &mut XmlWriter, time: &str, lifecycle: &str, by: Option<Uuid>) {
    w.leaf(&sd("Tidspunkt"), time);
    w.leaf(&sd("LivscyklusKode"), lifecycle);
    w.open(&sd("BrugerRef"));
    match by {
        Some(id) => w.leaf(&sd("UUIDIdentifikator"), &id.to_string()),
        None => w.leaf(&sd("URNIdentifikator"), "urn:oio:cvr-nr:29189846"),
    };
    w.end(&sd("BrugerRef"));
}

const CURRENT_TIME: &str = "2024-06-06T11:57:42.000+02:00";
const OLD_TIME: &str = "2020-02-03T08:00:00.000+01:00";

impl World {
    /// A unit's `FiltreretOejebliksbillede` children (ObjektType, Registrering) with `obj` as the
    /// organisationenhed prefix, inside an element the caller opened. The address role's
    /// `Label` exists only in Organisation 6 (as for users).
    pub(crate) fn write_unit(
        &self,
        w: &mut XmlWriter,
        dialect: Dialect,
        obj: &str,
        index: usize,
        window: &Window,
    ) {
        let unit = &self.snapshot.units[index];
        let id = unit.uuid.0;
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), id);
        let registration = |w: &mut XmlWriter, time: &str, name: &str, history: bool| {
            w.open(&e("Registrering"));
            registration_head(w, time, "Importeret", Some(self.organisation));
            w.open(&e("AttributListe"));
            let mut entries = vec![(ALWAYS, name.to_owned())];
            if history && bucket(id, 50) == 0 {
                entries = vec![
                    (
                        Period {
                            from: Some(self.last_month()),
                            to: None,
                        },
                        name.to_owned(),
                    ),
                    (
                        Period {
                            from: None,
                            to: Some(self.last_month()),
                        },
                        format!("{name} (gammelt navn)"),
                    ),
                ];
            } else if history && bucket(id, 50) == 1 {
                entries = vec![
                    (
                        Period {
                            from: None,
                            to: Some(self.next_month()),
                        },
                        name.to_owned(),
                    ),
                    (
                        Period {
                            from: Some(self.next_month()),
                            to: None,
                        },
                        format!("{name} (nyt navn)"),
                    ),
                ];
            }
            for (period, text) in entries.iter().filter(|(p, _)| window.admits(*p)) {
                w.open(&e("Egenskab"));
                virkning(w, *period);
                if let Some(key) = &unit.user_key {
                    w.leaf(&sd("BrugervendtNoegleTekst"), key);
                }
                w.leaf(&sd("EnhedNavn"), text);
                w.end(&e("Egenskab"));
            }
            w.end(&e("AttributListe"));
            w.open(&e("TilstandListe"));
            gyldighed(w, ALWAYS, if unit.active { "Aktiv" } else { "Inaktiv" });
            w.end(&e("TilstandListe"));
            w.open(&e("RelationListe"));
            for (i, address) in self.unit_addresses[index].iter().enumerate() {
                let (role, label) = match address.kind {
                    AddressKind::UnitPostal => (UNIT_ADDRESS_ROLE_POSTAL, "Postadresse"),
                    // Labels differ between deployments: only the role UUID can be trusted.
                    AddressKind::UnitEmail if bucket(id, 2) == 0 => {
                        (UNIT_ADDRESS_ROLE_EMAIL, "Telefon")
                    }
                    AddressKind::UnitEmail => (UNIT_ADDRESS_ROLE_EMAIL, "Email"),
                    AddressKind::UnitPhone => (UNIT_ADDRESS_ROLE_PHONE, "Mobiltelefon"),
                    AddressKind::UnitEan => (UNIT_ADDRESS_ROLE_EAN, "EAN"),
                    AddressKind::UnitUrl => (UNIT_ADDRESS_ROLE_URL, "Postadresse"),
                    _ => continue,
                };
                w.open(&sd("Adresser"));
                virkning(w, ALWAYS);
                uuid_element(w, &sd("ReferenceID"), address.uuid);
                w.open(&sd("Rolle"));
                w.leaf(&sd("UUIDIdentifikator"), &role.to_string());
                if dialect == Dialect::Organisation6 {
                    w.leaf(&sd("Label"), label);
                }
                w.end(&sd("Rolle"));
                uuid_element(w, &sd("Type"), ADDRESS_TYPE_UNIT);
                w.leaf(&sd("Indeks"), &derive(address.uuid, i as u64).to_string());
                w.end(&sd("Adresser"));
            }
            let kind = match unit.kind {
                Some(UnitKind::Department) => Some(UNIT_TYPE_DEPARTMENT),
                Some(UnitKind::Team) => Some(UNIT_TYPE_TEAM),
                Some(UnitKind::Other) => Some(UNIT_TYPE_OTHER),
                None => None,
            };
            if let Some(kind) = kind {
                relation(w, "Enhedstype", ALWAYS, kind);
            }
            if let Some(parent) = unit.parent_uuid {
                relation(w, "Overordnet", ALWAYS, parent.0);
            }
            if unit.contact.p_number.is_some() {
                relation(w, "Produktionsenhed", ALWAYS, production_unit(id));
            }
            if unit.contact.cvr.is_some() {
                relation(w, "Skatteenhed", ALWAYS, tax_unit(id));
            }
            relation(w, "Tilhoerer", ALWAYS, self.organisation);
            w.end(&e("RelationListe"));
            w.end(&e("Registrering"));
        };
        registration(w, CURRENT_TIME, &unit.name, true);
        if bucket(id, 50) == 2 {
            // An outdated registration after the current one: order must not matter.
            registration(
                w,
                OLD_TIME,
                &format!("{} (forældet registrering)", unit.name),
                false,
            );
        }
    }

    /// A user's `ObjektType` and `Registrering`. The address role's `Label` exists only in
    /// Organisation 6 (`UuidLabelInputType`); v5's role is a plain `UnikIdType`.
    pub(crate) fn write_user(
        &self,
        w: &mut XmlWriter,
        dialect: Dialect,
        obj: &str,
        index: usize,
        window: &Window,
    ) {
        let user = &self.snapshot.users[index];
        let id = user.uuid.0;
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), id);
        let registration = |w: &mut XmlWriter, time: &str, user_name: &str| {
            w.open(&e("Registrering"));
            registration_head(w, time, "Importeret", None);
            w.open(&e("AttributListe"));
            w.open(&e("Egenskab"));
            virkning(w, ALWAYS);
            w.leaf(&sd("BrugervendtNoegleTekst"), user_name);
            w.leaf(&sd("BrugerNavn"), user_name);
            w.end(&e("Egenskab"));
            w.end(&e("AttributListe"));
            w.open(&e("TilstandListe"));
            gyldighed(w, ALWAYS, if user.active { "Aktiv" } else { "Inaktiv" });
            w.end(&e("TilstandListe"));
            w.open(&e("RelationListe"));
            for (i, address) in self.user_addresses[index].iter().enumerate() {
                let (role, label) = match address.kind {
                    AddressKind::Email => (ADDRESS_ROLE_EMAIL, "Email_bruger"),
                    AddressKind::Mobile => (ADDRESS_ROLE_MOBILE, "Mobiltelefon_bruger"),
                    AddressKind::Landline => (ADDRESS_ROLE_LANDLINE, "Bruger.Adresse.Telefon"),
                    // Some deployments label badly: only the role UUID can be trusted.
                    AddressKind::Location if bucket(id, 2) == 0 => (ADDRESS_ROLE_LOCATION, "Email"),
                    AddressKind::Location => (ADDRESS_ROLE_LOCATION, "Lokation_bruger"),
                    _ => continue,
                };
                w.open(&sd("Adresser"));
                virkning(w, ALWAYS);
                uuid_element(w, &sd("ReferenceID"), address.uuid);
                w.open(&sd("Rolle"));
                w.leaf(&sd("UUIDIdentifikator"), &role.to_string());
                if dialect == Dialect::Organisation6 {
                    w.leaf(&sd("Label"), label);
                }
                w.end(&sd("Rolle"));
                uuid_element(w, &sd("Type"), ADDRESS_TYPE_USER);
                w.leaf(&sd("Indeks"), &derive(address.uuid, i as u64).to_string());
                w.end(&sd("Adresser"));
            }
            relation(w, "Tilhoerer", ALWAYS, self.organisation);
            if user.name.is_some() {
                relation(w, "TilknyttedePersoner", ALWAYS, derive(id, 10));
            }
            w.end(&e("RelationListe"));
            w.end(&e("Registrering"));
        };
        if bucket(id, 50) == 3 {
            registration(w, OLD_TIME, &format!("{}-GL", user.user_name));
        }
        registration(w, CURRENT_TIME, &user.user_name);
        let _ = window;
    }

    /// A passivated user: one registration with LivscyklusKode Passiveret.
    pub(crate) fn write_ghost(&self, w: &mut XmlWriter, obj: &str, id: Uuid) {
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), id);
        w.open(&e("Registrering"));
        registration_head(w, CURRENT_TIME, "Passiveret", None);
        w.open(&e("AttributListe"));
        w.open(&e("Egenskab"));
        virkning(w, ALWAYS);
        w.leaf(&sd("BrugerNavn"), "SLETTET");
        w.end(&e("Egenskab"));
        w.end(&e("AttributListe"));
        w.empty(&e("TilstandListe"));
        w.open(&e("RelationListe"));
        relation(w, "Tilhoerer", ALWAYS, self.organisation);
        w.end(&e("RelationListe"));
        w.end(&e("Registrering"));
    }

    /// A person: name, and a (fake) CPR number that clients must never read.
    pub(crate) fn write_person(&self, w: &mut XmlWriter, obj: &str, person: Uuid, index: usize) {
        let user = &self.snapshot.users[index];
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), person);
        w.open(&e("Registrering"));
        registration_head(w, CURRENT_TIME, "Importeret", None);
        w.open(&e("AttributListe"));
        w.open(&e("Egenskab"));
        virkning(w, ALWAYS);
        w.leaf(&sd("BrugervendtNoegleTekst"), &user.user_name);
        w.leaf(
            &format!("{}:CPR-NummerTekst", P.sts),
            &format!("{:010}", bucket(person, 10_000_000_000)),
        );
        w.leaf(&e("NavnTekst"), user.name.as_deref().unwrap_or_default());
        w.end(&e("Egenskab"));
        w.end(&e("AttributListe"));
        w.empty(&e("TilstandListe"));
        w.empty(&e("RelationListe"));
        w.end(&e("Registrering"));
    }

    /// The Adresse object with this UUID, a user's or a unit's.
    pub(crate) fn address(&self, id: Uuid) -> Option<&Address> {
        match *self.addresses.get(&id)? {
            AddressOwner::User(u, a) => self.user_addresses.get(u)?.get(a),
            AddressOwner::Unit(u, a) => self.unit_addresses.get(u)?.get(a),
        }
    }

    /// An address object.
    pub(crate) fn write_address(&self, w: &mut XmlWriter, obj: &str, address: &Address) {
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), address.uuid);
        w.open(&e("Registrering"));
        registration_head(w, CURRENT_TIME, "Importeret", None);
        w.open(&e("AttributListe"));
        w.open(&e("Egenskab"));
        virkning(w, ALWAYS);
        w.leaf(&sd("BrugervendtNoegleTekst"), &address.uuid.to_string());
        w.leaf(&format!("{}:AdresseTekst", P.sts), &address.text);
        w.end(&e("Egenskab"));
        w.end(&e("AttributListe"));
        w.empty(&e("TilstandListe"));
        w.empty(&e("RelationListe"));
        w.end(&e("Registrering"));
    }

    /// A Virksomhed a unit points at: its P-number or CVR number in `Egenskab`. Some carry an
    /// ended entry with an older number as well, so clients must take the one valid now.
    pub(crate) fn write_company(
        &self,
        w: &mut XmlWriter,
        obj: &str,
        id: Uuid,
        (index, role): (usize, CompanyRole),
        window: &Window,
    ) {
        let unit = &self.snapshot.units[index];
        let (number, element) = match role {
            CompanyRole::Production => (&unit.contact.p_number, "P-NummerTekst"),
            CompanyRole::Tax => (&unit.contact.cvr, "CVR-NummerTekst"),
        };
        let number = number.as_deref().unwrap_or_default();
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), id);
        w.open(&e("Registrering"));
        registration_head(w, CURRENT_TIME, "Importeret", None);
        w.open(&e("AttributListe"));
        let mut entries = vec![(ALWAYS, number.to_owned())];
        if bucket(id, 3) == 0 {
            // An older number that ended last month.
            let old: String = number.chars().rev().collect();
            entries = vec![
                (
                    Period {
                        from: None,
                        to: Some(self.last_month()),
                    },
                    old,
                ),
                (
                    Period {
                        from: Some(self.last_month()),
                        to: None,
                    },
                    number.to_owned(),
                ),
            ];
        }
        for (period, text) in entries.iter().filter(|(p, _)| window.admits(*p)) {
            w.open(&e("Egenskab"));
            virkning(w, *period);
            w.leaf(&sd("BrugervendtNoegleTekst"), &id.to_string());
            w.leaf(&format!("{}:{element}", P.sts), text);
            w.leaf(&format!("{}:NavnTekst", P.sts), &unit.name);
            w.end(&e("Egenskab"));
        }
        w.end(&e("AttributListe"));
        w.empty(&e("TilstandListe"));
        w.empty(&e("RelationListe"));
        w.end(&e("Registrering"));
    }

    /// An OrganisationFunktion: one user's position, with its validity on every entry.
    pub(crate) fn write_function(
        &self,
        w: &mut XmlWriter,
        obj: &str,
        index: usize,
        window: &Window,
    ) {
        let function = &self.functions[index];
        let user = &self.snapshot.users[function.user];
        let position = &function.position;
        let period = Self::function_period(position);
        let e = |name: &str| format!("{obj}:{name}");
        uuid_element(w, &e("ObjektType"), function.uuid);
        w.open(&e("Registrering"));
        registration_head(w, CURRENT_TIME, "Importeret", Some(self.organisation));
        w.open(&e("AttributListe"));
        if window.admits(period) {
            w.open(&e("Egenskab"));
            virkning(w, period);
            w.leaf(&sd("BrugervendtNoegleTekst"), &function.uuid.to_string());
            if let Some(title) = &position.title {
                w.leaf(&sd("FunktionNavn"), title);
            }
            w.end(&e("Egenskab"));
        }
        w.end(&e("AttributListe"));
        w.open(&e("TilstandListe"));
        if window.admits(period) {
            gyldighed(w, period, "Aktiv");
        }
        if let Some(end) = position.valid_to {
            let after = Period {
                from: Some(end),
                to: None,
            };
            if window.admits(after) {
                gyldighed(w, after, "Inaktiv");
            }
        }
        w.end(&e("TilstandListe"));
        w.open(&e("RelationListe"));
        let kind = if position.manager {
            FUNCTION_TYPE_MANAGER
        } else {
            FUNCTION_TYPE_POSITION
        };
        relation(w, "Funktionstype", ALWAYS, kind);
        if window.admits(period) {
            relation(w, "TilknyttedeBrugere", period, user.uuid.0);
            relation(w, "TilknyttedeEnheder", period, position.unit_uuid.0);
        }
        relation(w, "TilknyttedeOrganisationer", ALWAYS, self.organisation);
        w.end(&e("RelationListe"));
        w.end(&e("Registrering"));
    }

    /// The day after `today`, for tests.
    pub fn tomorrow(&self) -> NaiveDate {
        self.today
            .checked_add_days(Days::new(1))
            .unwrap_or(self.today)
    }
}
