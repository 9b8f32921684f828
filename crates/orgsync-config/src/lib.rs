//! orgsync's typed configuration: `config/orgsync.toml` (the service), `config/customers/*.toml`
//! (one file per municipality), and `ORGSYNC__SECTION__KEY` environment overrides of the service file.
//!
//! [`load`] reads a configuration directory and returns every problem it finds in one go, each
//! naming the file, the field (with line and column where known) and what was expected.

mod customer;
mod problem;
mod runs;
mod schedule;
mod service;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use customer::{CustomerConfig, ScimTarget, SqliteTarget, TargetConfig};
pub use problem::{Problem, Problems};
pub use runs::{RunsConfig, WorkerConfig};
pub use schedule::Schedule;
pub use service::{
    LogConfig, LogFormat, ORGANISATION6_ENTITY_ID, RedisConfig, SERVICEPLATFORMEN_ENTITY_ID,
    ServiceConfig, StsConfig, StsEnvironment, StsProfile, TokenProtocolSetting, WebConfig, WebRole,
    WebUserConfig,
};
pub use support::{SupportConfig, SupportSink};

/// The prefix of environment overrides: `ORGSYNC__REDIS__URL` overrides `[redis] url`.
pub const ENV_PREFIX: &str = "ORGSYNC__";

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// `orgsync.toml` with environment overrides.
    pub service: ServiceConfig,
    /// One entry per file in `customers/`, sorted by file name.
    pub customers: Vec<CustomerConfig>,
    /// Things worth knowing that do not stop orgsync (for example a CVR failing the modulus-11 check).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// The customer with this CVR.
    pub fn customer(&self, cvr: &str) -> Option<&CustomerConfig> {
        self.customers.iter().find(|c| c.cvr.as_str() == cvr)
    }
}

/// When a file was last modified (the epoch when unknown).
fn modified(file: &Path) -> std::time::SystemTime {
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Reads and validates the configuration in `dir`, reporting every problem found.
pub fn load(dir: &Path) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if !dir.is_dir() {
        return Err(Problems(vec![Problem::file(
            dir,
            "the configuration directory does not exist (give another with --config DIR)",
        )]));
    }

    let service_path = dir.join("orgsync.toml");
    let service = service::load(&service_path, &mut problems);

    let customers_dir = dir.join("customers");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&customers_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            problems.push(Problem::file(
                &customers_dir,
                format!("cannot read the customers directory: {e}"),
            ));
            Vec::new()
        }
    };
    files.sort();
    if files.is_empty() && customers_dir.is_dir() {
        warnings.push(Problem::file(
            &customers_dir,
            "no customer files (*.toml): nothing will be synced",
        ));
    }

    let mut customers = Vec::new();
    let mut by_cvr: HashMap<String, (PathBuf, Option<problem::Position>)> = HashMap::new();
    for file in files {
        let loaded = customer::load(&file, &mut problems, &mut warnings);
        if let Some((cvr, position)) = loaded.cvr {
            if let Some((first, first_position)) = by_cvr.get(cvr.as_str()) {
                // Blame the copy: the file changed last (the later name when equally old).
                let (copy, copy_position, original) = if modified(first) > modified(&file) {
                    (first, *first_position, &file)
                } else {
                    (&file, position, first)
                };
                problems.push(Problem::at(
                    copy,
                    "cvr",
                    copy_position,
                    format!(
                        "CVR {cvr} is already configured in {}; one file per municipality",
                        original.display()
                    ),
                ));
                continue;
            }
            by_cvr.insert(cvr.as_str().to_owned(), (file.clone(), position));
        }
        customers.extend(loaded.customer);
    }

    match service {
        Some(service) if problems.is_empty() => Ok(Config {
            dir: dir.to_owned(),
            service,
            customers,
            warnings,
        }),
        _ => Err(Problems(problems)),
    }
}
