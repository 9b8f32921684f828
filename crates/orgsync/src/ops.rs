//! What supervisors need from the long-running roles (`worker`, `scheduler`): the operations
//! endpoints behind `--metrics-bind` (`/health`, `/ready`, `/metrics`), the process's own
//! counters, and the two-stage shutdown (the first SIGTERM or Ctrl-C drains, a second one, or
//! the end of the grace, stops at once).

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use orgsync_queue::QueueHandle;
use tokio::sync::watch;

/// Log events per level since the process started (ERROR, WARN, INFO, DEBUG, TRACE), counted by
/// [`LogCounter`] and exported as `orgsync_log_events_total`.
static LOG_EVENTS: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// A tracing layer that counts the events that pass the log filter, by level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let index = match *event.metadata().level() {
            tracing::Level::ERROR => 0,
            tracing::Level::WARN => 1,
            tracing::Level::INFO => 2,
            tracing::Level::DEBUG => 3,
            tracing::Level::TRACE => 4,
        };
        LOG_EVENTS[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the endpoints serve from.
#[derive(Clone, Debug)]
struct Ops {
    queue: QueueHandle,
    role: &'static str,
    started: chrono::DateTime<chrono::Utc>,
    draining: watch::Receiver<u32>,
}

/// Binds `bind` and serves `/health`, `/ready` and `/metrics` for `role` until `shutdown`.
/// Returns the bound address (the port, when `bind` asked for port 0) once it listens.
pub(crate) async fn serve(
    bind: SocketAddr,
    queue: QueueHandle,
    role: &'static str,
    signals: &Signals,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on --metrics-bind {bind}"))?;
    let local = listener.local_addr().context("the metrics listener")?;
    let state = Ops {
        queue,
        role,
        started: chrono::Utc::now(),
        draining: signals.count.clone(),
    };
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(
        ops.bind = %local,
        "serving /health, /ready and /metrics on http://{local}"
    );
    Ok(local)
}

/// Alive: the process answers. 200 while it runs (also while draining).
async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready for work: Redis answers within 2 s and the process is not draining. 503 otherwise,
/// so a load balancer or Kubernetes stops counting on it.
async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    if *ops.draining.borrow() > 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match tokio::time::timeout(Duration::from_secs(2), ops.queue.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: Redis does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "Redis does not answer\n")
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis did not answer within 2 s\n",
        ),
    }
}

/// Prometheus text: the queue's statistics (shared with any other `/metrics`) and this
/// process's own series.
async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut out = String::new();
    let stats = tokio::time::timeout(Duration::from_secs(5), ops.queue.stats()).await;
    let up = match stats {
        Ok(Ok(stats)) => {
            orgsync_queue::metrics::render_prometheus(&stats, &mut out);
            1
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue statistics");
            0
        }
        Err(_) => 0,
    };
    render_process(&ops, up, &mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

fn render_process(ops: &Ops, redis_up: u8, out: &mut String) {
    let mut gauge = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "orgsync_redis_up",
        "gauge",
        "Whether the queue statistics could be read from Redis just now.",
        &[(String::new(), redis_up.to_string())],
    );
    gauge(
        "orgsync_process_info",
        "gauge",
        "The role and version of this process.",
        &[(
            format!(
                "{{role=\"{}\",version=\"{}\"}}",
                ops.role,
                env!("CARGO_PKG_VERSION")
            ),
            "1".to_owned(),
        )],
    );
    gauge(
        "orgsync_process_draining",
        "gauge",
        "1 after SIGTERM or Ctrl-C: running jobs finish, no new ones start.",
        &[(
            String::new(),
            u8::from(*ops.draining.borrow() > 0).to_string(),
        )],
    );
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        &[(String::new(), ops.started.timestamp().to_string())],
    );
    if let Some(rss) = resident_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &[(String::new(), rss.to_string())],
        );
    }
    let events: Vec<(String, String)> = LEVELS
        .iter()
        .zip(&LOG_EVENTS)
        .map(|(level, n)| {
            (
                format!("{{level=\"{level}\"}}"),
                n.load(Ordering::Relaxed).to_string(),
            )
        })
        .collect();
    gauge(
        "orgsync_log_events_total",
        "counter",
        "Log events this process wrote, by level (an ERROR means a person must act).",
        &events,
    );
}

/// The resident set size from `/proc/self/status` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// On SIGHUP, `orgsync.toml` is re-read by the next job (or scheduler tick) of `live`; the
/// settings that can change while the process runs take effect then (README, "Changing the
/// configuration"). Customer files need no signal: they are re-read when they change.
pub(crate) fn reload_on_sighup(
    live: std::sync::Arc<crate::wiring::LiveConfig>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(
                signal = "SIGHUP",
                "received SIGHUP: orgsync.toml is re-read before the next job"
            );
            live.request_reload();
        }
    });
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), counted: the first asks the role to drain, the second to stop.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT.
    pub(crate) fn install() -> anyhow::Result<Signals> {
        use anyhow::Context as _;
        let (tx, rx) = watch::channel(0u32);
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::spawn(async move {
            loop {
                #[cfg(unix)]
                let which = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                };
                #[cfg(not(unix))]
                let which = {
                    let _ = tokio::signal::ctrl_c().await;
                    "Ctrl-C"
                };
                let n = *tx.borrow() + 1;
                tracing::info!(signal = which, "received {which} ({n})");
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        Ok(Signals { count: rx })
    }

    /// Resolves once `n` signals have arrived.
    pub(crate) fn nth(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.count.clone();
        async move {
            let _ = rx.wait_for(|count| *count >= n).await;
        }
    }
}

/// Runs a role (`run` gets the first signal as its shutdown), draining on the first SIGTERM or
/// Ctrl-C. When the role has not stopped by the end of `grace`, or on a second signal, the
/// process exits at once with status 1: the jobs it held stay in Redis and a live worker takes
/// them over when this one's heartbeat has expired (the queue's orphan recovery).
pub(crate) async fn run_role<F>(
    role: &'static str,
    signals: &Signals,
    grace: Duration,
    run: F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let forced = {
        let first = signals.nth(1);
        let second = signals.nth(2);
        async move {
            first.await;
            tracing::info!(
                role,
                grace_s = grace.as_secs(),
                "{role} draining: running jobs get {} s to finish; a second SIGTERM or Ctrl-C stops at once",
                grace.as_secs()
            );
            tokio::select! {
                () = tokio::time::sleep(grace) => "the grace period ended",
                () = second => "a second signal arrived",
            }
        }
    };
    tokio::select! {
        result = run => result,
        why = forced => {
            tracing::warn!(
                role,
                "{role} stopped before its jobs finished ({why}); they stay in Redis and a live worker takes them over once this one's heartbeat expires"
            );
            Err(anyhow::Error::new(ForcedStop(why)))
        }
    }
}

/// The role was stopped before it drained: exit at once with status 1.
#[derive(Debug, thiserror::Error)]
#[error("stopped before running jobs finished: {0}")]
pub(crate) struct ForcedStop(&'static str);
