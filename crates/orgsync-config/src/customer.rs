//! A customer file `config/customers/<name>.toml`: one municipality's scope, schedule, defaults,
//! guards, mappings and target.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use orgsync_model::ids::{Cvr, Domain, UnitId};
use orgsync_model::policy::{CustomIdSource, Guards, Mappings, Policy, UserDefaults};
use serde::Deserialize;
use toml::Spanned;
use url::Url;
use uuid::Uuid;

use crate::problem::{self, Position, Problem};
use crate::schedule::Schedule;

/// One municipality, validated.
#[derive(Debug)]
pub struct CustomerConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// The municipality's CVR number.
    pub cvr: Cvr,
    /// Its name, for people.
    pub name: String,
    /// Whether the scheduler runs it (a disabled customer can still be synced by hand).
    pub enabled: bool,
    /// When the nightly run fires, in `timezone`.
    pub schedule: Schedule,
    /// Up to this many seconds of random delay after each fire, to spread customers out.
    pub jitter_seconds: u32,
    /// The Organisation UUID in STS, when configured (otherwise looked up from the CVR).
    pub organisation_uuid: Option<Uuid>,
    /// What the planner needs: scope, defaults, guards, mappings.
    pub policy: Policy,
    /// Where departments and users are written.
    pub target: TargetConfig,
}

/// Where a customer's departments and users go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetConfig {
    /// An SQLite directory database (the demo default).
    Sqlite(SqliteTarget),
    /// A SCIM 2.0 service provider.
    Scim(ScimTarget),
}

impl TargetConfig {
    /// `sqlite` or `scim`.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Sqlite(_) => "sqlite",
            TargetConfig::Scim(_) => "scim",
        }
    }
}

/// `[target] kind = "sqlite"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteTarget {
    /// The database file; relative paths are relative to the working directory.
    pub path: PathBuf,
}

/// `[target] kind = "scim"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimTarget {
    /// The SCIM base URL (the one `/Users` and `/Groups` are relative to).
    pub base_url: Url,
    /// The name of the environment variable holding the bearer token (the token itself never
    /// goes in a file).
    pub token_env: String,
    /// At most this many requests in flight for this customer.
    #[serde(default = "default_scim_in_flight")]
    pub max_in_flight: u32,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_scim_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_scim_in_flight() -> u32 {
    4
}
fn default_scim_timeout_ms() -> u64 {
    30_000
}

#[derive(Deserialize)]
struct CustomerFile {
    cvr: Spanned<String>,
    name: Spanned<String>,
    domains: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_schedule")]
    schedule: Spanned<String>,
    #[serde(default = "default_timezone")]
    timezone: Spanned<String>,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    jitter_seconds: Option<Spanned<u32>>,
    #[serde(default)]
    organisation_uuid: Option<Spanned<String>>,
    #[serde(default)]
    top_unit: Option<Spanned<String>>,
    #[serde(default)]
    excluded_units: Vec<Spanned<String>>,
    #[serde(default)]
    custom_id: CustomIdSource,
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    guards: GuardsFile,
    #[serde(default)]
    mappings: MappingsFile,
    target: toml::Value,
}

fn default_schedule() -> Spanned<String> {
    Spanned::new(0..0, "0 0 * * *".to_owned())
}
fn default_timezone() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_owned())
}
fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct DefaultsFile {
    #[serde(default = "default_user_type")]
    user_type: Spanned<String>,
    #[serde(default = "default_language")]
    language: Spanned<String>,
    #[serde(default = "default_user_timezone")]
    timezone: Spanned<String>,
    #[serde(default = "default_currency")]
    currency: Spanned<String>,
}

impl Default for DefaultsFile {
    fn default() -> Self {
        DefaultsFile {
            user_type: default_user_type(),
            language: default_language(),
            timezone: default_user_timezone(),
            currency: default_currency(),
        }
    }
}

fn default_user_type() -> Spanned<String> {
    Spanned::new(0..0, "employee".to_owned())
}
fn default_language() -> Spanned<String> {
    Spanned::new(0..0, "da".to_owned())
}
fn default_user_timezone() -> Spanned<String> {
    Spanned::new(0..0, "Europe/Copenhagen".to_owned())
}
fn default_currency() -> Spanned<String> {
    Spanned::new(0..0, "DKK".to_owned())
}

#[derive(Deserialize)]
struct GuardsFile {
    #[serde(default = "default_max_deactivations")]
    max_deactivations: u32,
    #[serde(default = "default_max_percent")]
    max_deactivation_percent: Spanned<f64>,
    #[serde(default = "default_max_drop")]
    max_source_drop_percent: Spanned<f64>,
}

impl Default for GuardsFile {
    fn default() -> Self {
        GuardsFile {
            max_deactivations: default_max_deactivations(),
            max_deactivation_percent: default_max_percent(),
            max_source_drop_percent: default_max_drop(),
        }
    }
}

fn default_max_deactivations() -> u32 {
    Guards::default().max_deactivations
}
fn default_max_percent() -> Spanned<f64> {
    Spanned::new(0..0, Guards::default().max_deactivation_percent)
}
fn default_max_drop() -> Spanned<f64> {
    Spanned::new(0..0, Guards::default().max_source_drop_percent)
}

#[derive(Default, Deserialize)]
struct MappingsFile {
    #[serde(default)]
    title: bool,
    #[serde(default)]
    phone: bool,
    #[serde(default)]
    manager: bool,
    #[serde(default)]
    unit_contact: bool,
}

/// The keys a table of a customer file knows (`""` is the top level), for suggestions.
fn known_fields(section: &str) -> &'static [&'static str] {
    match section {
        "" => problem::struct_fields::<CustomerFile>(),
        "defaults" => problem::struct_fields::<DefaultsFile>(),
        "guards" => problem::struct_fields::<GuardsFile>(),
        "mappings" => problem::struct_fields::<MappingsFile>(),
        _ => &[],
    }
}

/// Collects problems for one file, positioned by spans.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at<T>(&mut self, field: &str, value: &Spanned<T>, message: String) {
        let span = value.span();
        let position = if span.is_empty() && span.start == 0 {
            None // a default, not written in the file
        } else {
            Some(Position::of_offset(self.text, span.start))
        };
        self.problems
            .push(Problem::at(self.file, field, position, message));
    }

    fn key(&mut self, field: &str, message: String) {
        let position = Position::of_key(self.text, field);
        self.problems
            .push(Problem::at(self.file, field, position, message));
    }
}

/// One customer file's outcome: its CVR when that much is readable (to find duplicates even in
/// files with other problems), and the customer when the whole file is valid.
pub(crate) struct Loaded {
    pub(crate) cvr: Option<(Cvr, Option<Position>)>,
    pub(crate) customer: Option<CustomerConfig>,
}

/// Loads one customer file, adding its problems and warnings.
pub(crate) fn load(
    file: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Loaded {
    let mut loaded = Loaded {
        cvr: None,
        customer: None,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem::file(file, format!("cannot be read: {e}")));
            return loaded;
        }
    };
    let mut unknown = Vec::new();
    let parsed: Result<CustomerFile, _> =
        serde_ignored::deserialize(toml::Deserializer::new(&text), |path| {
            unknown.push(path.to_string())
        });
    let mut checker = Checker {
        file,
        text: &text,
        problems: Vec::new(),
    };
    for key in unknown {
        let section = key.rsplit_once('.').map_or("", |(section, _)| section);
        let message =
            problem::unknown_key_message(&key, known_fields(section), "config/customers/demo.toml");
        checker.key(&key, message);
    }
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            let position = e.span().map(|s| Position::of_offset(&text, s.start));
            // The parser reports a wrong type by position only; name the key on that line.
            let field = e
                .span()
                .and_then(|s| problem::key_at(&text, s.start))
                .unwrap_or_default();
            let message = e.message().trim().to_owned();
            checker
                .problems
                .push(Problem::at(file, &field, position, message));
            problems.append(&mut checker.problems);
            return loaded;
        }
    };
    loaded.cvr = Cvr::parse(raw.cvr.get_ref())
        .ok()
        .map(|cvr| (cvr, Some(Position::of_offset(&text, raw.cvr.span().start))));
    let customer = build(raw, &mut checker, warnings);
    let ok = checker.problems.is_empty();
    checker
        .problems
        .sort_by_key(|p| p.position.map(|p| (p.line, p.column)));
    problems.append(&mut checker.problems);
    loaded.customer = customer.filter(|_| ok);
    loaded
}

fn build(
    raw: CustomerFile,
    c: &mut Checker<'_>,
    warnings: &mut Vec<Problem>,
) -> Option<CustomerConfig> {
    let cvr = match Cvr::parse(raw.cvr.get_ref()) {
        Ok(cvr) => {
            if !cvr.has_valid_check_digit() {
                let position = Some(Position::of_offset(c.text, raw.cvr.span().start));
                warnings.push(Problem::at(
                    c.file,
                    "cvr",
                    position,
                    format!("{cvr} fails the CVR modulus-11 check (expected for KOMBIT's test municipality 11111111, suspicious otherwise)"),
                ));
            }
            Some(cvr)
        }
        Err(e) => {
            c.at(
                "cvr",
                &raw.cvr,
                format!("{e} (a municipality's CVR number, as a string)"),
            );
            None
        }
    };
    if raw.name.get_ref().trim().is_empty() {
        c.at(
            "name",
            &raw.name,
            "empty; expected the municipality's name".to_owned(),
        );
    }

    let mut domains = Vec::new();
    if raw.domains.get_ref().is_empty() {
        c.at(
            "domains",
            &raw.domains,
            "empty; expected at least one mail domain such as \"kommune.dk\"".to_owned(),
        );
    }
    for (i, domain) in raw.domains.get_ref().iter().enumerate() {
        match Domain::parse(domain.get_ref()) {
            Ok(d) => domains.push(d),
            Err(e) => c.at(&format!("domains[{i}]"), domain, e.to_string()),
        }
    }

    let timezone = parse_timezone(c, "timezone", &raw.timezone);
    let schedule = timezone.and_then(|tz| match Schedule::parse(raw.schedule.get_ref(), tz) {
        Ok(s) => Some(s),
        Err(e) => {
            c.at("schedule", &raw.schedule, e);
            None
        }
    });
    let jitter_seconds = match &raw.jitter_seconds {
        Some(j) if *j.get_ref() > 6 * 3600 => {
            c.at(
                "jitter_seconds",
                j,
                format!("{}; expected 0 to 21600 (6 hours)", j.get_ref()),
            );
            0
        }
        Some(j) => *j.get_ref(),
        None => 0,
    };

    let organisation_uuid = raw
        .organisation_uuid
        .as_ref()
        .and_then(|u| parse_uuid(c, "organisation_uuid", u));
    let top_unit = raw
        .top_unit
        .as_ref()
        .and_then(|u| parse_uuid(c, "top_unit", u))
        .map(UnitId);
    let mut excluded_units = BTreeSet::new();
    for (i, unit) in raw.excluded_units.iter().enumerate() {
        if let Some(id) = parse_uuid(c, &format!("excluded_units[{i}]"), unit) {
            if Some(UnitId(id)) == top_unit {
                c.at(
                    &format!("excluded_units[{i}]"),
                    unit,
                    "is the top_unit itself; nothing would be synced".to_owned(),
                );
            }
            excluded_units.insert(UnitId(id));
        }
    }

    let d = &raw.defaults;
    if d.user_type.get_ref().trim().is_empty() {
        c.at(
            "defaults.user_type",
            &d.user_type,
            "empty; expected the target's user type for new users".to_owned(),
        );
    }
    let language = d.language.get_ref();
    if !is_language_tag(language) {
        c.at(
            "defaults.language",
            &d.language,
            format!("{language:?}; expected a language tag such as \"da\" or \"en-GB\""),
        );
    }
    parse_timezone(c, "defaults.timezone", &d.timezone);
    let currency = d.currency.get_ref();
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        c.at(
            "defaults.currency",
            &d.currency,
            format!("{currency:?}; expected an ISO 4217 code such as \"DKK\""),
        );
    }

    let g = &raw.guards;
    for (field, value) in [
        (
            "guards.max_deactivation_percent",
            &g.max_deactivation_percent,
        ),
        ("guards.max_source_drop_percent", &g.max_source_drop_percent),
    ] {
        let v = *value.get_ref();
        if !(0.0..=100.0).contains(&v) {
            c.at(
                field,
                value,
                format!("{v}; expected a percentage from 0 to 100"),
            );
        }
    }

    let target = parse_target(c, raw.target);

    let policy = Policy {
        cvr: cvr.clone()?,
        domains,
        top_unit,
        excluded_units,
        custom_id: raw.custom_id,
        defaults: UserDefaults {
            user_type: d.user_type.get_ref().clone(),
            language: language.clone(),
            timezone: d.timezone.get_ref().clone(),
            currency: currency.clone(),
        },
        guards: Guards {
            max_deactivations: g.max_deactivations,
            max_deactivation_percent: *g.max_deactivation_percent.get_ref(),
            max_source_drop_percent: *g.max_source_drop_percent.get_ref(),
        },
        mappings: Mappings {
            title: raw.mappings.title,
            phone: raw.mappings.phone,
            manager: raw.mappings.manager,
            unit_contact: raw.mappings.unit_contact,
        },
    };
    Some(CustomerConfig {
        file: c.file.to_owned(),
        cvr: cvr?,
        name: raw.name.into_inner(),
        enabled: raw.enabled,
        schedule: schedule?,
        jitter_seconds,
        organisation_uuid,
        policy,
        target: target?,
    })
}

fn parse_timezone(c: &mut Checker<'_>, field: &str, value: &Spanned<String>) -> Option<Tz> {
    match value.get_ref().parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            c.at(
                field,
                value,
                format!("{:?} is not a time zone; expected an IANA name such as \"Europe/Copenhagen\" or \"UTC\"", value.get_ref()),
            );
            None
        }
    }
}

fn parse_uuid(c: &mut Checker<'_>, field: &str, value: &Spanned<String>) -> Option<Uuid> {
    match Uuid::parse_str(value.get_ref()) {
        Ok(id) => Some(id),
        Err(_) => {
            c.at(
                field,
                value,
                format!(
                    "{:?} is not a UUID; expected the STS object's UUID",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()));
    primary_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn parse_target(c: &mut Checker<'_>, value: toml::Value) -> Option<TargetConfig> {
    let target: TargetConfig = match value.try_into() {
        Ok(target) => target,
        Err(e) => {
            let e: toml::de::Error = e;
            c.key(
                "target",
                format!("{}; expected kind = \"sqlite\" (with path) or kind = \"scim\" (with base_url and token_env)", e.message().trim()),
            );
            return None;
        }
    };
    match &target {
        TargetConfig::Sqlite(sqlite) if sqlite.path.as_os_str().is_empty() => {
            c.key(
                "target.path",
                "empty; expected the database file".to_owned(),
            );
        }
        TargetConfig::Scim(scim) => {
            if !matches!(scim.base_url.scheme(), "https" | "http") {
                c.key(
                    "target.base_url",
                    format!("scheme {:?}; expected https://", scim.base_url.scheme()),
                );
            }
            let name = &scim.token_env;
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid_name {
                c.key(
                    "target.token_env",
                    format!("{name:?}; expected the NAME of an environment variable (A-Z, 0-9, _), not the token"),
                );
            }
            if !(1..=64).contains(&scim.max_in_flight) {
                c.key(
                    "target.max_in_flight",
                    format!("{}; expected 1 to 64", scim.max_in_flight),
                );
            }
            if !(1_000..=600_000).contains(&scim.timeout_ms) {
                c.key(
                    "target.timeout_ms",
                    format!("{} ms; expected 1000 to 600000", scim.timeout_ms),
                );
            }
        }
        TargetConfig::Sqlite(_) => {}
    }
    Some(target)
}
