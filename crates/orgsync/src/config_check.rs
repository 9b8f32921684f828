//! `orgsync config check`: validate the configuration and say what it means.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use orgsync_config::{Config, CustomerConfig, TargetConfig};
use secrecy::ExposeSecret as _;

/// Loads the configuration in `dir` and prints a summary, or every problem (to stderr); then,
/// unless `offline`, runs every customer's target health check.
pub(crate) async fn run(
    dir: &Path,
    offline: bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    match orgsync_config::load(dir) {
        Ok(config) => {
            let failed = print_summary(&config, offline, out).await?;
            if failed > 0 {
                writeln!(
                    out,
                    "The configuration is valid, but {failed} health check{} failed.",
                    if failed == 1 { "" } else { "s" }
                )?;
                return Ok(ExitCode::FAILURE);
            }
            writeln!(out, "Configuration OK.")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let mut stderr = std::io::stderr().lock();
            write!(stderr, "error: {problems}")?;
            writeln!(stderr, "Fix them and run `orgsync config check` again.")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints the summary; returns how many health checks failed.
async fn print_summary(
    config: &Config,
    offline: bool,
    out: &mut impl Write,
) -> std::io::Result<usize> {
    let service = &config.service;
    let n = config.customers.len();
    writeln!(
        out,
        "Configuration in {}: orgsync.toml and {n} customer file{}",
        config.dir.display(),
        if n == 1 { "" } else { "s" }
    )?;
    writeln!(
        out,
        "  redis  {} (key prefix {:?})",
        orgsync_queue::mask_url(service.redis.url.expose_secret()),
        service.redis.key_prefix
    )?;
    writeln!(
        out,
        "  sts    {} at {} ({} list calls and {} pages in flight per customer, {} calls/s in all, {} s timeout)",
        service.sts.environment,
        service.sts.effective_base_url(),
        service.sts.max_in_flight_per_customer,
        service.sts.max_pages_in_flight_per_customer,
        service.sts.max_calls_per_second,
        service.sts.call_timeout_ms / 1000
    )?;
    let mut failed = 0;
    let mut warnings = Vec::new();
    let cert_loaded = print_sts_security(config, out, &mut warnings)?;
    if !cert_loaded {
        failed += 1;
    }
    writeln!(out, "  web    {}", service.web.bind)?;
    for customer in &config.customers {
        print_customer(customer, out)?;
        if offline {
            continue;
        }
        match crate::targets::health(customer).await {
            Ok(summary) => writeln!(out, "    health    ok: {summary}")?,
            Err(error) => {
                failed += 1;
                writeln!(out, "    health    FAILED: {error:#}")?;
            }
        }
        if service.sts.is_signed() && cert_loaded {
            // A token proves the certificate, the STS endpoint and the service agreement.
            match sts_token_check(config, customer).await {
                Ok(summary) => writeln!(out, "    sts       ok: {summary}")?,
                Err(error) => {
                    failed += 1;
                    writeln!(out, "    sts       FAILED: {error:#}")?;
                }
            }
        }
    }
    for warning in &config.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    for warning in &warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(failed)
}

/// Gets (or reuses) the customer's STS token.
async fn sts_token_check(config: &Config, customer: &CustomerConfig) -> anyhow::Result<String> {
    let session = crate::sts::signed_session(&config.service.sts)?;
    let token = session.tokens().token(&customer.cvr).await?;
    Ok(format!(
        "token for CVR {} from the STS, valid until {}",
        token.cvr(),
        token.not_on_or_after().format("%Y-%m-%d %H:%M UTC")
    ))
}

/// One certificate line; a warning when it expires within [`EXPIRY_WARNING_DAYS`].
fn describe(
    out: &mut impl Write,
    warnings: &mut Vec<String>,
    label: &str,
    what: &str,
    info: &orgsync_sts::identity::CertificateInfo,
) -> std::io::Result<()> {
    let days = info.days_until_expiry(chrono::Utc::now());
    if days < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "{what} {} expires in {days} days ({}): renew it{}",
            info.subject,
            info.not_after.format("%Y-%m-%d"),
            if label == "certificate" {
                " and register the new one with KOMBIT before then"
            } else {
                " in [sts] when KOMBIT publishes the new one"
            }
        ));
    }
    writeln!(
        out,
        "    {label:<12} {}; issuer {}; expires {} ({days} days)",
        info.subject,
        info.issuer,
        info.not_after.format("%Y-%m-%d")
    )
}

/// Warn when a certificate expires within this many days.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// The signed profile: token endpoint, entity ID, and the certificates with their expiry.
/// Returns false when the system certificate cannot be loaded.
fn print_sts_security(
    config: &Config,
    out: &mut impl Write,
    warnings: &mut Vec<String>,
) -> std::io::Result<bool> {
    let sts = &config.service.sts;
    if !sts.is_signed() {
        writeln!(out, "         unsigned (simulator only)")?;
        return Ok(true);
    }
    let endpoint = match sts.token_protocol {
        orgsync_config::TokenProtocolSetting::Soap => sts.effective_sts_url(),
        orgsync_config::TokenProtocolSetting::Rest => sts.effective_sts_rest_url(),
    };
    writeln!(
        out,
        "         signed ({} profile): tokens from {} ({:?}) for entity ID {}",
        sts.profile,
        endpoint.map_or_else(|| "(not set)".to_owned(), |u| u.to_string()),
        sts.token_protocol,
        sts.effective_entity_id()
    )?;
    let loaded = match crate::sts::load_identity(sts) {
        Ok(identity) => {
            describe(
                out,
                warnings,
                "certificate",
                "the system certificate",
                identity.info(),
            )?;
            true
        }
        Err(error) => {
            writeln!(out, "    certificate  FAILED: {error:#}")?;
            false
        }
    };
    for (label, what, files) in [
        (
            "sts cert",
            "the STS certificate",
            &sts.sts_certificate_files,
        ),
        (
            "service cert",
            "the service certificate",
            &sts.service_certificate_files,
        ),
    ] {
        for file in files {
            match crate::sts::read_certificates(file) {
                Ok(certificates) => {
                    for der in certificates {
                        match orgsync_sts::identity::CertificateInfo::from_der(&der) {
                            Ok(info) => describe(out, warnings, label, what, &info)?,
                            Err(error) => {
                                writeln!(out, "    {label:<12} {}: {error}", file.display())?
                            }
                        }
                    }
                }
                Err(error) => writeln!(out, "    {label:<12} FAILED: {error:#}")?,
            }
        }
    }
    Ok(loaded)
}

fn print_customer(c: &CustomerConfig, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  customer {} {} ({})",
        c.cvr,
        c.name,
        c.file.display()
    )?;
    let next = c.schedule.next_after(chrono::Utc::now()).map_or_else(
        || "never".to_owned(),
        |t| {
            t.with_timezone(&c.schedule.timezone())
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        },
    );
    let jitter = if c.jitter_seconds > 0 {
        format!(", plus up to {} s jitter", c.jitter_seconds)
    } else {
        String::new()
    };
    writeln!(
        out,
        "    schedule  {:?} in {} ({}); next {next}{jitter}{}",
        c.schedule.expression(),
        c.schedule.timezone(),
        c.schedule.describe(),
        if c.enabled {
            ""
        } else {
            " (disabled: by hand only)"
        }
    )?;
    let domains: Vec<&str> = c.policy.domains.iter().map(|d| d.as_str()).collect();
    writeln!(out, "    domains   {}", domains.join(", "))?;
    let g = c.policy.guards;
    writeln!(
        out,
        "    guards    hold deactivations over {} or over {} %, or when STS drops more than {} %",
        g.max_deactivations, g.max_deactivation_percent, g.max_source_drop_percent
    )?;
    match &c.target {
        TargetConfig::Sqlite(sqlite) => {
            writeln!(out, "    target    sqlite {}", sqlite.path.display())
        }
        TargetConfig::Scim(scim) => writeln!(
            out,
            "    target    scim {} (token from ${}{})",
            scim.base_url,
            scim.token_env,
            if std::env::var_os(&scim.token_env).is_some() {
                ""
            } else {
                ", NOT SET in this environment"
            }
        ),
    }
}
