//! Sentry, off without a DSN: `init` starts the client (rustls transport) with a `before_send`
//! that scrubs every string of an event; `layer` is the `tracing` layer that turns the queue
//! worker's failed-attempt log events into Sentry events (one per job and error class, with
//! fingerprint `[cvr, error_class]` and tags `job.type`, `customer.cvr`, `run.id`), its `job`
//! spans into transactions, other ERROR events into events and INFO/WARN into breadcrumbs.
//! The queue crate does not know Sentry: it only logs with stable fields.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use secrecy::{ExposeSecret as _, SecretString};
use sentry::integrations::tracing::{self as sentry_tracing, EventMapping};
use tracing::field::{Field, Visit};
use tracing_subscriber::registry::LookupSpan;

use crate::error::SupportError;
use crate::scrub::Scrubber;

/// Keeps Sentry running; dropping it flushes queued events (up to 2 s).
pub type Guard = sentry::ClientInitGuard;

/// Jobs remembered for "one event per job and class"; the set restarts when full.
const MAX_REMEMBERED: usize = 10_000;

/// Starts Sentry with `dsn`; `None` or an empty DSN leaves it off. An invalid DSN is an error
/// that names `dsn_source` (the variable it came from), never the DSN itself.
pub fn init(
    dsn: Option<&SecretString>,
    dsn_source: &str,
    release: &str,
    environment: &str,
    traces_sample_rate: f32,
) -> Result<Option<Guard>, SupportError> {
    let Some(dsn) = dsn.filter(|d| !d.expose_secret().trim().is_empty()) else {
        return Ok(None);
    };
    let dsn: sentry::types::Dsn =
        dsn.expose_secret()
            .trim()
            .parse()
            .map_err(|e: sentry::types::ParseDsnError| SupportError::Config {
                field: dsn_source.to_owned(),
                message: format!("not a Sentry DSN ({e}); expected https://<key>@<host>/<project>"),
            })?;
    let scrubber = Scrubber::new();
    let options = sentry::ClientOptions {
        dsn: Some(dsn),
        release: Some(release.to_owned().into()),
        environment: Some(environment.to_owned().into()),
        traces_sample_rate,
        send_default_pii: false,
        before_send: Some(Arc::new(move |event| scrub_event(event, &scrubber))),
        ..Default::default()
    };
    Ok(Some(sentry::init(options)))
}

/// Starts Sentry from the variable `[support] sentry_dsn_env` names (off when unset).
pub fn init_from_env(
    support: &orgsync_config::SupportConfig,
    release: &str,
    environment: &str,
) -> Result<Option<Guard>, SupportError> {
    let dsn = std::env::var(&support.sentry_dsn_env)
        .ok()
        .map(SecretString::from);
    init(
        dsn.as_ref(),
        &support.sentry_dsn_env,
        release,
        environment,
        support.sentry_traces_sample_rate,
    )
}

/// Every string of the event scrubbed (message, exception values, tags, contexts, extra,
/// breadcrumbs); an event that cannot be scrubbed is dropped rather than sent.
pub fn scrub_event(
    event: sentry::protocol::Event<'static>,
    scrubber: &Scrubber,
) -> Option<sentry::protocol::Event<'static>> {
    let mut value = serde_json::to_value(&event).ok()?;
    scrubber.scrub_json(&mut value);
    serde_json::from_value(value).ok()
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Whether `metadata` is a failed attempt or dead letter logged by the queue's worker.
fn is_failed_attempt(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("orgsync_queue")
        && metadata.fields().field("error.class").is_some()
        && metadata.fields().field("job.id").is_some()
}

/// The `tracing` layer for Sentry (does nothing while Sentry is off).
pub fn layer<S>() -> sentry_tracing::SentryLayer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let seen: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    sentry_tracing::layer()
        .span_filter(|metadata| {
            metadata.target().starts_with("orgsync")
                && matches!(
                    *metadata.level(),
                    tracing::Level::ERROR | tracing::Level::WARN | tracing::Level::INFO
                )
        })
        .event_mapper(move |event, ctx| {
            let metadata = event.metadata();
            if !is_failed_attempt(metadata) {
                return match *metadata.level() {
                    tracing::Level::ERROR => {
                        EventMapping::Event(sentry_tracing::event_from_event(event, &ctx))
                    }
                    tracing::Level::WARN | tracing::Level::INFO => {
                        EventMapping::Breadcrumb(sentry_tracing::breadcrumb_from_event(event, &ctx))
                    }
                    _ => EventMapping::Ignore,
                };
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            let get = |name: &str| fields.0.get(name).cloned().unwrap_or_default();
            let (job, class) = (get("job.id"), get("error.class"));
            let first = {
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
                seen.insert((job.clone(), class.clone()))
            };
            if !first {
                return EventMapping::Breadcrumb(sentry_tracing::breadcrumb_from_event(
                    event, &ctx,
                ));
            }
            let mut sentry_event = sentry_tracing::event_from_event(event, &ctx);
            let cvr = get("customer.cvr");
            sentry_event.level = sentry::Level::Error;
            sentry_event.fingerprint = vec![
                if cvr.is_empty() {
                    "no-customer".to_owned()
                } else {
                    cvr.clone()
                }
                .into(),
                class.clone().into(),
            ]
            .into();
            for (tag, value) in [
                ("job.type", get("job.type")),
                ("job.id", job),
                ("job.attempt", get("job.attempt")),
                ("customer.cvr", cvr),
                ("run.id", get("run.id")),
                ("error.class", class),
            ] {
                if !value.is_empty() {
                    sentry_event.tags.insert(tag.to_owned(), value);
                }
            }
            EventMapping::Event(sentry_event)
        })
}
