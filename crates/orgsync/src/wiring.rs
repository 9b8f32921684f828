//! The pipeline wired to the configuration: [`LiveConfig`] (the configuration as the files say
//! now), [`ConfigSources`] (customers, STS clients, targets) and the pipeline, worker and
//! scheduler settings from `[runs]` and `[worker]`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use orgsync_config::Config;
use orgsync_jobs::pipeline::{Pipeline, PipelineOptions};
use orgsync_jobs::scheduler::{ScheduledCustomer, SchedulerOptions};
use orgsync_jobs::sources::{
    Customer, ProgressSender, ReadProgress, SourceError, SourceRead, Sources, TargetOpen,
};
use orgsync_jobs::worker::WorkerSettings;
use orgsync_model::ids::Cvr;
use orgsync_model::target::TargetState;
use orgsync_model::validate::SourceCounts;
use orgsync_sts::limits::{SharedPacer, SystemLimits};
use orgsync_sts::options::ReadExpectation;
use orgsync_target::Target;
use secrecy::ExposeSecret as _;

/// At most this many reader issues go into a run report (the rest are counted).
const MAX_READ_ISSUES: usize = 100;

/// The configuration a long-running process works from. Customer files are re-read when they
/// change (a cheap check of names, sizes, times and inodes before each use, so a night of
/// department jobs parses nothing again); `orgsync.toml` when [`LiveConfig::request_reload`]
/// was called (SIGHUP). A customer file with a problem leaves out that customer only.
#[derive(Debug)]
pub(crate) struct LiveConfig {
    dir: PathBuf,
    current: Mutex<Current>,
    reload_service: AtomicBool,
}

#[derive(Debug)]
struct Current {
    config: Arc<Config>,
    broken: Vec<orgsync_config::BrokenCustomer>,
    fingerprint: orgsync_config::Fingerprint,
}

impl LiveConfig {
    /// Starts from a loaded configuration.
    pub(crate) fn new(config: Arc<Config>) -> Arc<LiveConfig> {
        let dir = config.dir.clone();
        let fingerprint = orgsync_config::fingerprint(&dir);
        Arc::new(LiveConfig {
            dir,
            current: Mutex::new(Current {
                config,
                broken: Vec::new(),
                fingerprint,
            }),
            reload_service: AtomicBool::new(false),
        })
    }

    /// Re-reads `orgsync.toml` too on the next use (SIGHUP).
    pub(crate) fn request_reload(&self) {
        self.reload_service.store(true, Ordering::SeqCst);
    }

    /// The configuration as the files say now.
    pub(crate) fn current(&self) -> Arc<Config> {
        self.with_current(|c| c.config.clone())
    }

    fn with_current<T>(&self, read: impl FnOnce(&Current) -> T) -> T {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let fingerprint = orgsync_config::fingerprint(&self.dir);
        let reload_service = self.reload_service.swap(false, Ordering::SeqCst);
        if reload_service || fingerprint != current.fingerprint {
            self.reload(&mut current, fingerprint, reload_service);
        }
        read(&current)
    }

    fn reload(
        &self,
        current: &mut Current,
        fingerprint: orgsync_config::Fingerprint,
        reload_service: bool,
    ) {
        let service = if reload_service {
            match orgsync_config::load_service(&self.dir) {
                Ok(service) => {
                    tracing::info!("orgsync.toml re-read");
                    service
                }
                Err(problems) => {
                    tracing::error!(
                        "orgsync.toml is not re-read, the settings in use stay: {problems}"
                    );
                    current.config.service.clone()
                }
            }
        } else {
            current.config.service.clone()
        };
        let files = orgsync_config::load_customers(&self.dir);
        for broken in &files.broken {
            tracing::error!(
                file = %broken.file.display(),
                "customer file {} cannot be used until it is fixed: {}",
                broken.file.display(),
                orgsync_config::Problems(broken.problems.clone())
            );
        }
        tracing::info!(
            customers = files.customers.len(),
            broken = files.broken.len(),
            "customer files re-read"
        );
        current.config = Arc::new(Config {
            dir: self.dir.clone(),
            service,
            customers: files.customers,
            warnings: files.warnings,
        });
        current.broken = files.broken;
        current.fingerprint = fingerprint;
    }
}

/// Customers, STS and targets from the configuration as it is now ([`LiveConfig`]).
#[derive(Debug)]
pub(crate) struct ConfigSources {
    live: Arc<LiveConfig>,
    limits: SystemLimits,
    /// Open targets per CVR, with what they were opened from: a customer whose target
    /// configuration changed gets the new one, and the old one is dropped.
    targets: Mutex<HashMap<String, CachedTarget>>,
}

/// An open target and what it was opened from.
type CachedTarget = (TargetKey, Arc<dyn Target>);

/// What a target was opened from.
type TargetKey = (
    orgsync_config::TargetConfig,
    orgsync_model::policy::Mappings,
);

/// STS call slots reserved in Redis: `[sts] max_calls_per_second` holds for every worker
/// process together (KOMBIT's rule is per system), not for each.
#[derive(Debug)]
struct RedisPacer(orgsync_queue::QueueHandle);

impl SharedPacer for RedisPacer {
    fn reserve(
        &self,
        interval: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Duration, String>> + Send + '_>>
    {
        Box::pin(async move {
            self.0
                .reserve_slot("sts-calls", interval)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl ConfigSources {
    pub(crate) fn new(live: Arc<LiveConfig>, queue: orgsync_queue::QueueHandle) -> ConfigSources {
        let limits = SystemLimits::shared(
            f64::from(live.current().service.sts.max_calls_per_second),
            Arc::new(RedisPacer(queue)),
        );
        ConfigSources {
            live,
            limits,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration now and the customer's target in it, or why the customer cannot be
    /// used.
    fn customer_target(&self, cvr: &Cvr) -> Result<(Arc<Config>, TargetKey), SourceError> {
        let config = self.live.current();
        let key = match config.customer(cvr.as_str()) {
            Some(customer) => (customer.target.clone(), customer.policy.mappings),
            None => {
                return Err(SourceError::config(
                    self.customer_problem(cvr).unwrap_or_else(|| {
                        format!("no customer has CVR {cvr}; add a file under customers/")
                    }),
                ));
            }
        };
        Ok((config, key))
    }

    /// Opens (or takes from the cache, when its configuration has not changed) the customer's
    /// target; `create` creates a missing SQLite file.
    async fn open(&self, cvr: &Cvr, create: bool) -> Result<Arc<dyn Target>, SourceError> {
        let (config, key) = self.customer_target(cvr)?;
        // A file to be created is opened anew: a cached target would reopen without creating.
        let to_create =
            create && matches!(&key.0, orgsync_config::TargetConfig::Sqlite(s) if !s.path.exists());
        if let Some((cached, target)) = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cvr.as_str())
        {
            if *cached == key && !to_create {
                return Ok(target.clone());
            }
        }
        let customer = config
            .customer(cvr.as_str())
            .ok_or_else(|| SourceError::config(format!("no customer has CVR {cvr}")))?;
        let target: Arc<dyn Target> = crate::targets::open(customer, create)
            .await
            .map_err(|e| match e.downcast_ref::<orgsync_target::TargetError>() {
                Some(target) => SourceError {
                    message: format!("{e:#}"),
                    ..SourceError::target(target)
                },
                None => SourceError::config(format!("{e:#}")),
            })?
            .into();
        // The customer's previous target (another path or URL), if any, is dropped here.
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cvr.as_str().to_owned(), (key, target.clone()));
        Ok(target)
    }
}

#[async_trait]
impl Sources for ConfigSources {
    async fn target_state(&self, cvr: &Cvr) -> Result<TargetState, SourceError> {
        // `plan` writes nothing: an SQLite file that does not exist yet holds nothing, and
        // opening it would create it.
        let (_, (target, _)) = self.customer_target(cvr)?;
        if let orgsync_config::TargetConfig::Sqlite(sqlite) = &target {
            if !sqlite.path.exists() {
                return Ok(TargetState::default());
            }
        }
        let target = self.target(cvr).await?;
        target
            .read_state()
            .await
            .map_err(|e| SourceError::target(&e))
    }

    fn customer(&self, cvr: &Cvr) -> Option<Customer> {
        self.live
            .current()
            .customer(cvr.as_str())
            .map(|c| Customer {
                cvr: c.cvr.clone(),
                name: c.name.clone(),
                policy: c.policy.clone(),
            })
    }

    fn customer_problem(&self, cvr: &Cvr) -> Option<String> {
        self.live.with_current(|current| {
            current
                .broken
                .iter()
                .find(|b| b.cvr.as_ref() == Some(cvr))
                .map(|b| {
                    format!(
                        "the customer file {} of CVR {cvr} cannot be used until it is fixed: {}",
                        b.file.display(),
                        orgsync_config::Problems(b.problems.clone())
                    )
                })
        })
    }

    fn customers(&self) -> Vec<Cvr> {
        self.live
            .current()
            .customers
            .iter()
            .map(|c| c.cvr.clone())
            .collect()
    }

    async fn read_snapshot(&self, cvr: &Cvr) -> Result<SourceRead, SourceError> {
        let (progress, _) = tokio::sync::watch::channel(ReadProgress::default());
        self.read_snapshot_with_progress(cvr, progress).await
    }

    async fn read_snapshot_with_progress(
        &self,
        cvr: &Cvr,
        progress: ProgressSender,
    ) -> Result<SourceRead, SourceError> {
        self.read_snapshot_expecting(cvr, progress, None).await
    }

    async fn read_snapshot_expecting(
        &self,
        cvr: &Cvr,
        progress: ProgressSender,
        expected: Option<SourceCounts>,
    ) -> Result<SourceRead, SourceError> {
        let (config, _) = self.customer_target(cvr)?;
        let client = crate::sts::client_for(&config, cvr, self.limits.clone())
            .map_err(|e| SourceError::config(format!("{e:#}")))?;
        // The read's bounds of calls and objects follow the last trusted run's size.
        client.expect_size(expected.map(|c| ReadExpectation {
            units: c.units,
            users: c.users,
        }));
        let read = client
            .read_snapshot_observed(|p| {
                progress.send_replace(ReadProgress {
                    calls: p.calls,
                    objects: p.objects,
                    remaining_estimate: p.remaining_estimate,
                    paging: p.paging,
                    done: p.done,
                });
            })
            .await
            .map_err(|e| SourceError {
                class: e.class(),
                retriable: e.is_retriable(),
                retry_not_before: None,
                message: format!("reading STS Organisation for {cvr}: {e}"),
                sts_failure: client.failed_call().map(Box::new),
            })?;
        let mut issues: Vec<String> = read
            .issues
            .iter()
            .take(MAX_READ_ISSUES)
            .map(ToString::to_string)
            .collect();
        if read.issues.len() > MAX_READ_ISSUES {
            issues.push(format!(
                "and {} more problems in the STS data",
                read.issues.len() - MAX_READ_ISSUES
            ));
        }
        Ok(SourceRead {
            snapshot: read.snapshot,
            calls: read.calls,
            issues,
        })
    }

    async fn target(&self, cvr: &Cvr) -> Result<Arc<dyn Target>, SourceError> {
        self.open(cvr, false).await
    }

    async fn open_target(&self, cvr: &Cvr, create: bool) -> Result<TargetOpen, SourceError> {
        let (_, (target, _)) = self.customer_target(cvr)?;
        if let orgsync_config::TargetConfig::Sqlite(sqlite) = &target {
            if !create && !sqlite.path.exists() {
                return Ok(TargetOpen::Missing);
            }
        }
        self.open(cvr, create).await.map(TargetOpen::Opened)
    }

    fn describe_target(&self, cvr: &Cvr) -> String {
        match self.customer_target(cvr) {
            Ok((_, (target, _))) => crate::targets::describe(&target),
            Err(_) => format!("the target of {cvr}"),
        }
    }
}

/// The queue from `[redis]`.
pub(crate) async fn queue(config: &Config) -> anyhow::Result<orgsync_queue::QueueHandle> {
    let redis = &config.service.redis;
    let mut queue_config = orgsync_queue::QueueConfig::new(
        redis.url.expose_secret().to_owned(),
        redis.key_prefix.clone(),
    );
    queue_config.topology = match (&redis.master_name, redis.cluster) {
        (Some(master_name), _) => orgsync_queue::RedisTopology::Sentinel {
            sentinels: redis.sentinels.clone(),
            master_name: master_name.clone(),
        },
        (None, true) => orgsync_queue::RedisTopology::Cluster,
        (None, false) => orgsync_queue::RedisTopology::Standalone,
    };
    if let Some(ca) = &redis.tls_ca_file {
        queue_config.tls_ca_pem = Some(
            std::fs::read(ca)
                .with_context(|| format!("cannot read [redis] tls_ca_file {}", ca.display()))?,
        );
    }
    orgsync_queue::QueueHandle::connect(queue_config)
        .await
        .context("cannot open the job queue")
}

/// The pipeline of a configuration.
pub(crate) async fn pipeline(config: Arc<Config>) -> anyhow::Result<Arc<Pipeline>> {
    pipeline_live(LiveConfig::new(config)).await
}

/// The pipeline of a configuration that is re-read when its files change (workers, schedulers).
pub(crate) async fn pipeline_live(live: Arc<LiveConfig>) -> anyhow::Result<Arc<Pipeline>> {
    let config = live.current();
    let queue = queue(&config).await?;
    let runs = &config.service.runs;
    let options = PipelineOptions {
        report_retention: Duration::from_secs(u64::from(runs.report_retention_days) * 86_400),
        data_ttl: Duration::from_secs(u64::from(runs.data_ttl_hours) * 3_600),
        ..PipelineOptions::default()
    };
    // Ended runs reach the support desk's ticket logic (`[support]`: Zendesk or a JSON-lines log).
    let tickets = orgsync_support::Tickets::from_config(
        &config.service.support,
        config.service.web.public_url.as_ref(),
        queue.clone(),
    )
    .context("cannot set up support tickets ([support])")?;
    let sources = Arc::new(ConfigSources::new(live, queue.clone()));
    Ok(Pipeline::with_observer(
        queue,
        sources,
        options,
        Some(Arc::new(tickets)),
    ))
}

/// Worker settings from `[worker]`.
pub(crate) fn worker_settings(config: &Config) -> WorkerSettings {
    WorkerSettings {
        customers: config.service.worker.sync_customer_concurrency as usize,
        departments: config.service.worker.sync_department_concurrency as usize,
        ..WorkerSettings::default()
    }
}

/// The enabled customers and their schedules.
pub(crate) fn scheduled(config: &Config) -> (Vec<ScheduledCustomer>, SchedulerOptions) {
    let customers = config
        .customers
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            let schedule = c.schedule.clone();
            ScheduledCustomer {
                cvr: c.cvr.as_str().to_owned(),
                next_after: Arc::new(move |after| schedule.next_after(after)),
                jitter: Duration::from_secs(u64::from(c.jitter_seconds)),
            }
        })
        .collect();
    let options = SchedulerOptions {
        grace: Duration::from_secs(u64::from(config.service.runs.scheduler_grace_minutes) * 60),
        ..SchedulerOptions::default()
    };
    (customers, options)
}
