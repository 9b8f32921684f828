//! Politeness shared by every customer of one system: the calls-per-second limit and the call counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Limits and counters shared by all clients of one system (one process talking to STS).
///
/// Clone it into every client: the clones share the rate limiter and the counter.
#[derive(Clone, Debug)]
pub struct SystemLimits {
    inner: Arc<Inner>,
}

/// Call slots shared by several processes (the binary backs it with Redis), so that the
/// calls-per-second limit holds for the whole system, not per process.
pub trait SharedPacer: Send + Sync + std::fmt::Debug {
    /// Reserves the next slot, `interval` after the previous one anywhere in the system, and
    /// returns how long to wait for it.
    fn reserve(
        &self,
        interval: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Duration, String>> + Send + '_>>;
}

#[derive(Debug)]
struct Inner {
    interval: Option<Duration>,
    pacer: Option<Arc<dyn SharedPacer>>,
    pacer_failed: std::sync::atomic::AtomicBool,
    next_slot: Mutex<Option<Instant>>,
    calls: AtomicU64,
}

impl SystemLimits {
    /// At most `calls_per_second` calls start per second across all clones (`<= 0` or not finite = unlimited).
    pub fn new(calls_per_second: f64) -> SystemLimits {
        let interval = (calls_per_second.is_finite() && calls_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / calls_per_second));
        SystemLimits {
            inner: Arc::new(Inner {
                interval,
                pacer: None,
                pacer_failed: std::sync::atomic::AtomicBool::new(false),
                next_slot: Mutex::new(None),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Like [`SystemLimits::new`], with the slots reserved through `pacer` so that every process
    /// sharing it keeps to `calls_per_second` together. When the pacer fails, this process
    /// paces itself (and says so once).
    pub fn shared(calls_per_second: f64, pacer: Arc<dyn SharedPacer>) -> SystemLimits {
        let mut limits = SystemLimits::new(calls_per_second);
        if let Some(inner) = Arc::get_mut(&mut limits.inner) {
            inner.pacer = Some(pacer);
        }
        limits
    }

    /// Waits for the next free slot, then counts the call.
    pub(crate) async fn admit(&self) {
        if let (Some(interval), Some(pacer)) = (self.inner.interval, &self.inner.pacer) {
            match pacer.reserve(interval).await {
                Ok(wait) => {
                    self.inner.pacer_failed.store(false, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    self.inner.calls.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    if !self.inner.pacer_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the shared STS pacing failed ({e}); this process paces its own calls until it works again"
                        );
                    }
                }
            }
        }
        if let Some(interval) = self.inner.interval {
            let slot = {
                let mut next = self
                    .inner
                    .next_slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let slot = next.map_or(now, |n| n.max(now));
                *next = Some(slot + interval);
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls started by all clients sharing these limits.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Slots in this process's memory, standing in for the Redis pacer of the binary.
    #[derive(Debug, Default)]
    struct MemoryPacer {
        next: Mutex<Option<Instant>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl SharedPacer for MemoryPacer {
        fn reserve(
            &self,
            interval: Duration,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Duration, String>> + Send + '_>,
        > {
            Box::pin(async move {
                if self.fail.load(Ordering::Relaxed) {
                    return Err("redis is away".to_owned());
                }
                let mut next = self.next.lock().unwrap();
                let now = Instant::now();
                let slot = next.map_or(now, |n| n.max(now));
                *next = Some(slot + interval);
                Ok(slot - now)
            })
        }
    }

    async fn admit_all(limits: &[SystemLimits], each: usize) -> Duration {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for l in limits {
            for _ in 0..each {
                let l = l.clone();
                tasks.push(tokio::spawn(async move { l.admit().await }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn two_processes_sharing_a_pacer_keep_to_the_rate_together_and_separate_ones_do_not() {
        let pacer = Arc::new(MemoryPacer::default());
        let shared = [
            SystemLimits::shared(10.0, pacer.clone()),
            SystemLimits::shared(10.0, pacer.clone()),
        ];
        // 20 calls at 10/s system-wide: the last starts 1.9 s in.
        assert_eq!(admit_all(&shared, 10).await, Duration::from_millis(1900));
        let separate = [SystemLimits::new(10.0), SystemLimits::new(10.0)];
        // Each process alone at 10/s: twice the system rate.
        assert_eq!(admit_all(&separate, 10).await, Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pacer_falls_back_to_pacing_this_process() {
        let pacer = Arc::new(MemoryPacer::default());
        pacer.fail.store(true, Ordering::Relaxed);
        let limits = [SystemLimits::shared(10.0, pacer)];
        assert_eq!(admit_all(&limits, 10).await, Duration::from_millis(900));
        assert_eq!(limits[0].calls(), 10);
    }
}
