//! Builds a customer's target adapter from its configuration (secrets from the environment).

use std::path::Path;

use anyhow::Context as _;
use orgsync_config::{CustomerConfig, TargetConfig};
use orgsync_target::Target;
use orgsync_target::scim::{ScimOptions, ScimTarget};
use orgsync_target::sqlite::{SqliteOptions, SqliteTarget};
use secrecy::SecretString;

/// Opens the customer's target. The SCIM token is read from the variable `token_env` names.
/// An SQLite file that does not exist is created only with `create` (a run's start without a
/// trusted baseline); otherwise opening it fails.
pub(crate) async fn open(
    customer: &CustomerConfig,
    create: bool,
) -> anyhow::Result<Box<dyn Target>> {
    match &customer.target {
        TargetConfig::Sqlite(sqlite) => {
            let options = SqliteOptions {
                path: sqlite.path.clone(),
                cvr: customer.cvr.clone(),
                mappings: customer.policy.mappings,
            };
            let target = if create {
                SqliteTarget::open(options).await
            } else {
                SqliteTarget::open_existing(options).await
            }
            .with_context(|| format!("opening the SQLite directory {}", sqlite.path.display()))?;
            Ok(Box::new(target))
        }
        TargetConfig::Scim(scim) => {
            let token = std::env::var(&scim.token_env).with_context(|| {
                format!(
                    "the SCIM token for {} is read from the environment variable {}, which is not set",
                    customer.cvr, scim.token_env
                )
            })?;
            let mut options = ScimOptions::new(
                scim.base_url.clone(),
                SecretString::from(token),
                customer.cvr.clone(),
                customer.policy.mappings,
            );
            options.max_in_flight = scim.max_in_flight as usize;
            options.timeout = std::time::Duration::from_millis(scim.timeout_ms);
            Ok(Box::new(ScimTarget::new(options)?))
        }
    }
}

/// The health check `config check` runs: the real operations of the target. An SQLite file
/// that does not exist yet is not created here; its directory must be writable.
pub(crate) async fn health(customer: &CustomerConfig) -> anyhow::Result<String> {
    if let TargetConfig::Sqlite(sqlite) = &customer.target {
        if !sqlite.path.exists() {
            let dir = nearest_existing(&sqlite.path);
            let writable = std::fs::metadata(&dir).is_ok_and(|m| !m.permissions().readonly());
            anyhow::ensure!(
                writable,
                "{} is not writable, so {} cannot be created",
                dir.display(),
                sqlite.path.display()
            );
            return Ok(format!(
                "SQLite {} does not exist yet; the first sync creates it",
                sqlite.path.display()
            ));
        }
    }
    let target = open(customer, false).await?;
    let health = target.health().await?;
    Ok(match health.users {
        Some(n) => format!("{} ({n} users for this customer)", health.summary),
        None => health.summary,
    })
}

fn nearest_existing(path: &Path) -> std::path::PathBuf {
    let mut dir = path.parent().unwrap_or(Path::new("."));
    loop {
        if dir.as_os_str().is_empty() {
            return ".".into();
        }
        if dir.exists() {
            return dir.to_owned();
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return dir.to_owned(),
        }
    }
}

/// The customer's target for people: `the SQLite file PATH`, `the SCIM service at URL`.
pub(crate) fn describe(target: &TargetConfig) -> String {
    match target {
        TargetConfig::Sqlite(sqlite) => format!("the SQLite file {}", sqlite.path.display()),
        TargetConfig::Scim(scim) => format!("the SCIM service at {}", scim.base_url),
    }
}
