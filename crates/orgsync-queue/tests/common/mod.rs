//! Test helpers: a queue on the local Redis with its own key prefix, and worker spawning.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use orgsync_queue::{QueueConfig, QueueHandle};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A queue with a fresh key prefix; call `cleanup` at the end of the test.
pub struct TestQueue {
    pub queue: QueueHandle,
    pub prefix: String,
}

impl TestQueue {
    pub async fn new(name: &str) -> Self {
        Self::on(REDIS_URL, name).await
    }

    pub async fn on(url: &str, name: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "orgsync_queue=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let prefix = format!("orgsync-test:{name}:{}", uuid::Uuid::new_v4().simple());
        let queue = QueueHandle::connect(QueueConfig::new(url, &prefix))
            .await
            .expect("connect to Redis");
        Self { queue, prefix }
    }

    pub async fn cleanup(self) {
        self.queue.purge_all_keys().await.expect("purge keys");
    }
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it did.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    check().await
}

/// Spawns an apalis worker for `$job` running `$handler` until the returned stop function
/// is called. Evaluates to `(stop, join_handle)`.
#[macro_export]
macro_rules! spawn_worker {
    ($queue:expr, $job:ty, $options:expr, $concurrency:expr, $handler:expr) => {{
        use apalis::prelude::*;
        let backend = $queue.backend::<$job>($options);
        let (signal, stop) = orgsync_queue::manual_signal();
        let worker = WorkerBuilder::new(backend.worker_name().to_owned())
            .backend(backend)
            .concurrency($concurrency)
            .build($handler);
        let join = tokio::spawn(async move {
            worker.run_until(signal).await.expect("worker ran");
        });
        (stop, join)
    }};
}
