//! Settings: the connection (`QueueConfig`), the retry policy and the per-worker options.

use std::time::Duration;

use rand::Rng;

/// Which kind of Redis deployment the queue talks to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a managed endpoint that fails over behind one address): `redis_url`.
    #[default]
    Standalone,
    /// A primary with replicas watched by Redis Sentinel. The sentinels (`host:port`) name
    /// the current primary of `master_name`; after a failover the queue asks them again.
    /// `redis_url`'s scheme, user, password and database apply to the primary; its host and
    /// port are not used.
    Sentinel {
        /// `host:port` of each sentinel (at least one).
        sentinels: Vec<String>,
        /// The name the sentinels monitor the primary under.
        master_name: String,
    },
    /// A Redis Cluster; `redis_url` is any one of its nodes (the others are discovered).
    /// Every key gets the prefix as its hash tag (`{orgsync}:job:…`), so all keys of one
    /// installation, and so every script, stay in one slot.
    Cluster,
}

/// How to reach Redis and how long to keep things. `Debug` masks the URL's password.
#[derive(Clone)]
pub struct QueueConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// Single server, Sentinel or Cluster.
    pub topology: RedisTopology,
    /// Every key this crate writes starts with this prefix and a colon (in a cluster,
    /// `{prefix}` and a colon).
    pub key_prefix: String,
    /// Time allowed to open a TCP connection to Redis.
    pub connect_timeout: Duration,
    /// Time allowed for one Redis reply (redis-rs' own default, 500 ms, is too short
    /// for a busy server: apalis-redis workers died on it).
    pub response_timeout: Duration,
    /// How long an idempotency key blocks a second enqueue.
    pub idempotency_ttl: Duration,
    /// How long succeeded jobs (and replayed dead letters) stay readable.
    pub succeeded_retention: Duration,
    /// Approximate maximum length of the error-log stream.
    pub error_log_max_len: usize,
    /// Jobs per enqueue script call.
    pub enqueue_chunk: usize,
    /// For `rediss://`: the certificate authorities (PEM) that signed the server's certificate,
    /// instead of the system's trust store (a private CA, as managed Redis services use).
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConfig")
            .field("redis_url", &crate::error::mask_url(&self.redis_url))
            .field("topology", &self.topology)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("succeeded_retention", &self.succeeded_retention)
            .field("error_log_max_len", &self.error_log_max_len)
            .field("enqueue_chunk", &self.enqueue_chunk)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl QueueConfig {
    /// Defaults for everything but the URL and the key prefix.
    pub fn new(redis_url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            topology: RedisTopology::Standalone,
            key_prefix: key_prefix.into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            succeeded_retention: Duration::from_secs(7 * 24 * 3600),
            error_log_max_len: 100_000,
            enqueue_chunk: 1000,
            tls_ca_pem: None,
        }
    }
}

/// How long to wait before the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// Hangfire's `AutomaticRetry`: `(n-1)^4 + 15 + rand(0..30) * n` seconds after the
    /// n-th failed attempt.
    Hangfire,
    /// `min(max, initial * factor^(n-1)) + rand(0..=jitter)`.
    Exponential {
        /// Delay after the first failed attempt.
        initial: Duration,
        /// Growth per attempt.
        factor: f64,
        /// Upper bound before jitter.
        max: Duration,
        /// Random extra delay, uniformly drawn from zero to this.
        jitter: Duration,
    },
}

/// Attempts and backoff for one job type.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// Hangfire's defaults: 10 attempts, `(n-1)^4 + 15 + rand(30)*n` seconds.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Backoff::Hangfire,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff without the Hangfire shape (handy for tests: milliseconds).
    pub fn exponential(
        max_attempts: u32,
        initial: Duration,
        factor: f64,
        jitter: Duration,
    ) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Exponential {
                initial,
                factor,
                max: Duration::from_secs(24 * 3600),
                jitter,
            },
        }
    }

    /// The delay after the `failed_attempt`-th attempt (1-based) failed.
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        let n = u64::from(failed_attempt.max(1));
        let mut rng = rand::rng();
        match &self.backoff {
            Backoff::Hangfire => {
                let base = (n - 1).saturating_pow(4).saturating_add(15);
                let jitter = rng.random_range(0..30u64).saturating_mul(n);
                Duration::from_secs(base.saturating_add(jitter))
            }
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let scaled = initial.as_secs_f64() * factor.powi(exponent);
                let capped = if scaled.is_finite() {
                    Duration::from_secs_f64(scaled.min(max.as_secs_f64()))
                } else {
                    *max
                };
                let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
                let extra = if jitter_ms == 0 {
                    0
                } else {
                    rng.random_range(0..=jitter_ms)
                };
                capped + Duration::from_millis(extra)
            }
        }
    }
}

/// Options of one worker (one job type in one process).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs fetched per Redis round trip and buffered ahead of the handler.
    pub prefetch: usize,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// How often the worker tells Redis it is alive and still holds its jobs.
    pub heartbeat_interval: Duration,
    /// A job held by a worker that has not sent a heartbeat for this long is taken
    /// over by a live worker.
    pub orphan_after: Duration,
    /// How often a worker looks for such jobs.
    pub reclaim_interval: Duration,
    /// How often due scheduled jobs and retries are moved to the ready stream.
    pub promote_interval: Duration,
    /// How long an idle worker waits before looking for new jobs again.
    pub idle_poll: Duration,
    /// A job whose worker died this many times while running it goes to the
    /// dead-letter queue (class `abandoned`) instead of killing yet another worker.
    pub max_orphaned: u32,
    /// The most a job may wait in snoozes ([`JobError::snooze`]: busy, not failed; no attempt
    /// spent), summed over its snoozes; a snooze beyond it is an ordinary failed attempt.
    ///
    /// [`JobError::snooze`]: crate::JobError::snooze
    pub max_snooze: Duration,
    /// When the worker is told to stop, cancel a running handler of this job type (its
    /// future is dropped within [`SHUTDOWN_POLL`]) and hand its job back to the queue
    /// without spending an attempt, instead of waiting for it to finish. For handlers that
    /// may run long (an STS read) and are idempotent, so that starting over elsewhere is safe.
    /// Off by default: running jobs finish first.
    pub cancel_on_shutdown: bool,
}

/// How often a running handler that may be cancelled checks whether its worker stops.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

impl Default for WorkerOptions {
    /// Production defaults: a dead worker's jobs are picked up within about 45 s.
    fn default() -> Self {
        Self {
            prefetch: 32,
            retry: RetryPolicy::default(),
            heartbeat_interval: Duration::from_secs(5),
            orphan_after: Duration::from_secs(30),
            reclaim_interval: Duration::from_secs(10),
            promote_interval: Duration::from_millis(500),
            idle_poll: Duration::from_millis(200),
            max_orphaned: 3,
            max_snooze: Duration::from_secs(2 * 3600),
            cancel_on_shutdown: false,
        }
    }
}

impl WorkerOptions {
    /// Short intervals for tests: orphans taken over after about 2 s.
    pub fn fast_for_tests() -> Self {
        Self {
            prefetch: 32,
            retry: RetryPolicy::exponential(
                3,
                Duration::from_millis(100),
                2.0,
                Duration::from_millis(20),
            ),
            heartbeat_interval: Duration::from_millis(200),
            orphan_after: Duration::from_millis(1500),
            reclaim_interval: Duration::from_millis(300),
            promote_interval: Duration::from_millis(25),
            idle_poll: Duration::from_millis(20),
            max_orphaned: 3,
            max_snooze: Duration::from_secs(30),
            cancel_on_shutdown: false,
        }
    }

    /// Cancels running handlers when the worker stops and hands their jobs back (see
    /// [`WorkerOptions::cancel_on_shutdown`]).
    pub fn cancel_on_shutdown(mut self, cancel: bool) -> Self {
        self.cancel_on_shutdown = cancel;
        self
    }

    /// Replaces the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangfire_backoff_follows_the_published_formula() {
        let policy = RetryPolicy::default();
        for n in 1..=10u32 {
            let delay = policy.delay_after(n).as_secs();
            let base = u64::from(n - 1).pow(4) + 15;
            assert!(delay >= base, "attempt {n}: {delay} < {base}");
            assert!(
                delay <= base + 29 * u64::from(n),
                "attempt {n}: {delay} too long"
            );
        }
        assert_eq!(policy.max_attempts, 10);
    }

    #[test]
    fn exponential_backoff_doubles_and_stays_within_its_jitter() {
        let policy = RetryPolicy::exponential(
            5,
            Duration::from_millis(100),
            2.0,
            Duration::from_millis(10),
        );
        for (n, expected) in [(1u32, 100u128), (2, 200), (3, 400), (4, 800)] {
            let ms = policy.delay_after(n).as_millis();
            assert!(
                ms >= expected && ms <= expected + 10,
                "attempt {n}: {ms} ms"
            );
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::QueueConfig;

    #[test]
    fn debug_output_never_shows_the_redis_password() {
        let config = QueueConfig::new("redis://:hunter2@127.0.0.1:6379", "p");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("127.0.0.1:6379"), "{debug}");
    }
}
