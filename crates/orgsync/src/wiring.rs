//! The pipeline wired to the configuration: [`ConfigSources`] (customers, STS clients, targets)
//! and the pipeline, worker and scheduler settings from `[runs]` and `[worker]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use orgsync_config::Config;
use orgsync_jobs::pipeline::{Pipeline, PipelineOptions};
use orgsync_jobs::scheduler::{ScheduledCustomer, SchedulerOptions};
use orgsync_jobs::sources::{
    Customer, ProgressSender, ReadProgress, SourceError, SourceRead, Sources,
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

/// Customers, STS and targets from the configuration.
#[derive(Debug)]
pub(crate) struct ConfigSources {
    config: Arc<Config>,
    limits: SystemLimits,
    targets: Mutex<HashMap<String, Arc<dyn Target>>>,
}

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
    pub(crate) fn new(config: Arc<Config>, queue: orgsync_queue::QueueHandle) -> ConfigSources {
        let limits = SystemLimits::shared(
            f64::from(config.service.sts.max_calls_per_second),
            Arc::new(RedisPacer(queue)),
        );
        ConfigSources {
            config,
            limits,
            targets: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Sources for ConfigSources {
    async fn target_state(&self, cvr: &Cvr) -> Result<TargetState, SourceError> {
        // `plan` writes nothing: an SQLite file that does not exist yet holds nothing, and
        // opening it would create it.
        if let Some(customer) = self.config.customer(cvr.as_str()) {
            if let orgsync_config::TargetConfig::Sqlite(sqlite) = &customer.target {
                if !sqlite.path.exists() {
                    return Ok(TargetState::default());
                }
            }
        }
        let target = self.target(cvr).await?;
        target
            .read_state()
            .await
            .map_err(|e| SourceError::target(&e))
    }

    fn customer(&self, cvr: &Cvr) -> Option<Customer> {
        self.config.customer(cvr.as_str()).map(|c| Customer {
            cvr: c.cvr.clone(),
            name: c.name.clone(),
            policy: c.policy.clone(),
        })
    }

    fn customers(&self) -> Vec<Cvr> {
        self.config
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
        let client = crate::sts::client_for(&self.config, cvr, self.limits.clone())
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
        if let Some(target) = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cvr.as_str())
        {
            return Ok(target.clone());
        }
        let customer = self
            .config
            .customer(cvr.as_str())
            .ok_or_else(|| SourceError::config(format!("no customer has CVR {cvr}")))?;
        let target: Arc<dyn Target> = crate::targets::open(customer)
            .await
            .map_err(|e| match e.downcast_ref::<orgsync_target::TargetError>() {
                Some(target) => SourceError {
                    message: format!("{e:#}"),
                    ..SourceError::target(target)
                },
                None => SourceError::config(format!("{e:#}")),
            })?
            .into();
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cvr.as_str().to_owned(), target.clone());
        Ok(target)
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
    let sources = Arc::new(ConfigSources::new(config, queue.clone()));
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
