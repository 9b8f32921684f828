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

#[derive(Debug)]
struct Inner {
    interval: Option<Duration>,
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
                next_slot: Mutex::new(None),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Waits for the next free slot, then counts the call.
    pub(crate) async fn admit(&self) {
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
