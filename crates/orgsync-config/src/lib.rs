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
    if !dir.is_dir() {
        return Err(missing_dir(dir));
    }
    let mut problems = Vec::new();
    let service = service::load(&dir.join("orgsync.toml"), &mut problems);
    let customers = load_customers(dir);
    problems.extend(customers.problems);
    match service {
        Some(service) if problems.is_empty() => Ok(Config {
            dir: dir.to_owned(),
            service,
            customers: customers.customers,
            warnings: customers.warnings,
        }),
        _ => Err(Problems(problems)),
    }
}

fn missing_dir(dir: &Path) -> Problems {
    Problems(vec![Problem::file(
        dir,
        "the configuration directory does not exist (give another with --config DIR)",
    )])
}

/// Reads `orgsync.toml` (with environment overrides) alone, for a process that reloads it.
pub fn load_service(dir: &Path) -> Result<ServiceConfig, Problems> {
    if !dir.is_dir() {
        return Err(missing_dir(dir));
    }
    let mut problems = Vec::new();
    match service::load(&dir.join("orgsync.toml"), &mut problems) {
        Some(service) if problems.is_empty() => Ok(service),
        _ => Err(Problems(problems)),
    }
}

/// The customer files of a configuration directory, each judged on its own: a file with a
/// problem leaves out that customer only ([`CustomerFiles::broken`]), not the others.
#[derive(Debug, Default)]
pub struct CustomerFiles {
    /// The valid customers, sorted by file name.
    pub customers: Vec<CustomerConfig>,
    /// The files that cannot be used, with their problems (a CVR configured twice makes both
    /// files unusable: which target is meant is unknown).
    pub broken: Vec<BrokenCustomer>,
    /// Every problem, in file order (those of `broken` and of the directory itself).
    pub problems: Vec<Problem>,
    /// Things worth knowing that do not stop orgsync.
    pub warnings: Vec<Problem>,
}

/// A customer file that cannot be used.
#[derive(Clone, Debug)]
pub struct BrokenCustomer {
    /// The file.
    pub file: PathBuf,
    /// Its CVR, when it could be read.
    pub cvr: Option<orgsync_model::ids::Cvr>,
    /// What is wrong with it.
    pub problems: Vec<Problem>,
}

/// The `*.toml` files of `customers/`, sorted.
fn customer_files(customers_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(customers_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads the customer files of the configuration directory `dir` (`dir/customers/*.toml`).
pub fn load_customers(dir: &Path) -> CustomerFiles {
    let mut out = CustomerFiles::default();
    let customers_dir = dir.join("customers");
    let files = match customer_files(&customers_dir) {
        Ok(files) => files,
        Err(e) => {
            out.problems.push(Problem::file(
                &customers_dir,
                format!("cannot read the customers directory: {e}"),
            ));
            Vec::new()
        }
    };
    if files.is_empty() && customers_dir.is_dir() {
        out.warnings.push(Problem::file(
            &customers_dir,
            "no customer files (*.toml): nothing will be synced",
        ));
    }

    let mut by_cvr: HashMap<String, (PathBuf, Option<problem::Position>)> = HashMap::new();
    for file in files {
        let before = out.problems.len();
        let loaded = customer::load(&file, &mut out.problems, &mut out.warnings);
        if let Some((cvr, position)) = &loaded.cvr {
            if let Some((first, first_position)) = by_cvr.get(cvr.as_str()) {
                // Blame the copy: the file changed last (the later name when equally old).
                let (copy, copy_position, original) = if modified(first) > modified(&file) {
                    (first, *first_position, &file)
                } else {
                    (&file, *position, first)
                };
                let duplicate = Problem::at(
                    copy,
                    "cvr",
                    copy_position,
                    format!(
                        "CVR {cvr} is already configured in {}; one file per municipality",
                        original.display()
                    ),
                );
                out.problems.push(duplicate.clone());
                // Neither file is used: which target is meant is unknown.
                out.customers.retain(|c| c.cvr != *cvr);
                out.broken.push(BrokenCustomer {
                    file: file.clone(),
                    cvr: Some(cvr.clone()),
                    problems: vec![duplicate],
                });
                continue;
            }
            by_cvr.insert(cvr.as_str().to_owned(), (file.clone(), *position));
        }
        if out.problems.len() > before {
            out.broken.push(BrokenCustomer {
                file: file.clone(),
                cvr: loaded.cvr.map(|(cvr, _)| cvr),
                problems: out.problems[before..].to_vec(),
            });
        }
        out.customers.extend(loaded.customer);
    }
    out
}

/// What the configuration files are now (name, size, modification time and inode of
/// `orgsync.toml` and every `customers/*.toml`): cheap to take, and different after any edit,
/// added, removed or replaced file, so a process re-reads its configuration only when it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<FileStat>)>);

/// A file's size, modification time and inode.
type FileStat = (u64, std::time::SystemTime, u64);

/// The [`Fingerprint`] of the configuration directory `dir`.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    let mut files = vec![dir.join("orgsync.toml")];
    files.extend(customer_files(&dir.join("customers")).unwrap_or_default());
    Fingerprint(
        files
            .into_iter()
            .map(|file| {
                let stat = std::fs::metadata(&file).ok().map(|m| {
                    (
                        m.len(),
                        m.modified().unwrap_or(std::time::UNIX_EPOCH),
                        m.ino(),
                    )
                });
                (file, stat)
            })
            .collect(),
    )
}
