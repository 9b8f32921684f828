//! Script-level tests against the local Redis: who `RECLAIM` may take jobs from, which jobs
//! count as orphaned, the abandon path's batch countdown, and the heartbeat's release of
//! lost entries. Driven without workers, with made-up consumer names, so timing is exact.

use std::time::Duration;

use redis::AsyncCommands;

use crate::batch::NewBatch;
use crate::client::QueueHandle;
use crate::config::QueueConfig;
use crate::keys::GROUP;
use crate::model::{JobId, JobState, NewJob, now_ms};
use crate::scripts;

const TYPE: &str = "script_test";

async fn queue(name: &str) -> QueueHandle {
    let prefix = format!("orgsync-test:{name}:{}", uuid::Uuid::new_v4().simple());
    let queue = QueueHandle::connect(QueueConfig::new("redis://127.0.0.1:6379", prefix))
        .await
        .expect("connect to Redis");
    let mut conn = queue.conn.clone();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue.keys.stream(TYPE))
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .expect("create the group");
    queue
}

fn job(n: u32) -> NewJob {
    NewJob::raw(TYPE, format!("{{\"n\":{n}}}")).expect("valid job type")
}

/// Fetches up to `n` jobs as `consumer`; returns (entry id, job id) pairs.
async fn fetch_as(q: &QueueHandle, consumer: &str, n: usize) -> Vec<(String, String)> {
    let mut conn = q.conn.clone();
    let reply: Vec<String> = scripts::FETCH
        .key(q.keys.types())
        .arg(q.keys.prefix())
        .arg(TYPE)
        .arg(GROUP)
        .arg(consumer)
        .arg(n)
        .invoke_async(&mut conn)
        .await
        .expect("fetch");
    reply[1..]
        .chunks(9)
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect()
}

async fn start_as(q: &QueueHandle, consumer: &str, entry: &(String, String)) -> String {
    let mut conn = q.conn.clone();
    let reply: Vec<String> = scripts::START
        .key(q.keys.types())
        .arg(q.keys.prefix())
        .arg(TYPE)
        .arg(GROUP)
        .arg(consumer)
        .arg(&entry.0)
        .arg(&entry.1)
        .invoke_async(&mut conn)
        .await
        .expect("start");
    reply[0].clone()
}

/// Sets `consumer`'s last heartbeat to `ago` before now.
async fn heartbeat_at(q: &QueueHandle, consumer: &str, ago: Duration) {
    let mut conn = q.conn.clone();
    let at = now_ms() - i64::try_from(ago.as_millis()).expect("small");
    let _: () = conn
        .zadd(q.keys.workers(), consumer, at)
        .await
        .expect("zadd");
}

/// Runs one RECLAIM as `consumer` with a 50 ms orphan timeout; returns (requeued, dead).
async fn reclaim_as(q: &QueueHandle, consumer: &str, max_orphaned: u32) -> (u64, u64) {
    let mut conn = q.conn.clone();
    let (_cursor, requeued, dead): (String, u64, u64) = scripts::RECLAIM
        .key(q.keys.types())
        .arg(q.keys.prefix())
        .arg(TYPE)
        .arg(GROUP)
        .arg(consumer)
        .arg(50)
        .arg(max_orphaned)
        .arg(100)
        .arg(1000)
        .arg("0-0")
        .invoke_async(&mut conn)
        .await
        .expect("reclaim");
    (requeued, dead)
}

async fn pending_of(q: &QueueHandle, consumer: &str) -> usize {
    let mut conn = q.conn.clone();
    let reply: redis::streams::StreamPendingCountReply = conn
        .xpending_consumer_count(q.keys.stream(TYPE), GROUP, "-", "+", 100, consumer)
        .await
        .expect("xpending");
    reply.ids.len()
}

async fn orphaned(q: &QueueHandle, id: &str) -> u32 {
    q.job(&JobId::new(id))
        .await
        .expect("read job")
        .expect("job exists")
        .orphaned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_takes_entries_only_from_workers_whose_heartbeat_is_stale_or_missing() {
    let q = queue("reclaim-owner").await;
    q.enqueue(job(1)).await.expect("enqueue");
    let held = fetch_as(&q, "live", 1).await;
    assert_eq!(start_as(&q, "live", &held[0]).await, "ok");
    tokio::time::sleep(Duration::from_millis(120)).await;
    heartbeat_at(&q, "live", Duration::ZERO).await;

    // Idle for longer than the orphan timeout (as after a Redis outage), but the owner's
    // heartbeat is fresh: not taken.
    assert_eq!(reclaim_as(&q, "other", 3).await, (0, 0));
    assert_eq!(pending_of(&q, "live").await, 1);
    assert_eq!(orphaned(&q, &held[0].1).await, 0);

    // The same entry once the owner has been silent for longer than the timeout.
    heartbeat_at(&q, "live", Duration::from_secs(10)).await;
    assert_eq!(reclaim_as(&q, "other", 3).await, (1, 0));
    assert_eq!(pending_of(&q, "live").await, 0);
    assert_eq!(orphaned(&q, &held[0].1).await, 1, "its handler had started");

    // An owner that never sent a heartbeat at all counts as dead too.
    let held = fetch_as(&q, "never-registered", 1).await;
    assert_eq!(start_as(&q, "never-registered", &held[0]).await, "ok");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reclaim_as(&q, "other", 3).await, (1, 0));
    assert_eq!(orphaned(&q, &held[0].1).await, 2);
    q.purge_all_keys().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_but_never_started_is_requeued_without_counting_as_orphaned() {
    let q = queue("reclaim-unstarted").await;
    let id = q.enqueue(job(1)).await.expect("enqueue").job_id().clone();
    let held = fetch_as(&q, "crashed", 1).await;
    let record = q.job(&id).await.expect("read").expect("exists");
    assert_eq!(record.state, JobState::Waiting, "fetching is not starting");
    assert!(record.started_at.is_none());
    tokio::time::sleep(Duration::from_millis(120)).await;

    // max_orphaned = 1: had it counted, it would be dead now.
    assert_eq!(reclaim_as(&q, "other", 1).await, (1, 0));
    let record = q.job(&id).await.expect("read").expect("exists");
    assert_eq!(record.orphaned, 0);
    assert_eq!(record.state, JobState::Waiting);

    // Fetched again and started: now its worker's death counts, and with max_orphaned = 1
    // it is abandoned.
    let held_again = fetch_as(&q, "crashed-again", 1).await;
    assert_ne!(held_again[0].0, held[0].0, "a new stream entry");
    assert_eq!(start_as(&q, "crashed-again", &held_again[0]).await, "ok");
    assert_eq!(
        q.job(&id).await.expect("read").expect("exists").state,
        JobState::Running
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reclaim_as(&q, "other", 1).await, (0, 1));
    let record = q.job(&id).await.expect("read").expect("exists");
    assert_eq!(record.state, JobState::Dead);
    assert_eq!(record.final_error_class.as_deref(), Some("job.abandoned"));
    q.purge_all_keys().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_entry_another_worker_took_over_is_refused() {
    let q = queue("start-stale").await;
    q.enqueue(job(1)).await.expect("enqueue");
    let held = fetch_as(&q, "slow", 1).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reclaim_as(&q, "other", 3).await, (1, 0));
    assert_eq!(start_as(&q, "slow", &held[0]).await, "stale");
    q.purge_all_keys().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_batch_child_counts_down_and_the_completion_job_is_enqueued() {
    let q = queue("abandon-batch").await;
    let enqueued = q
        .enqueue_batch(NewBatch {
            id: "run-1".into(),
            children: vec![job(1), job(2)],
            on_complete: NewJob::raw("script_test_finish", "{}").expect("valid"),
            retention: Duration::from_secs(60),
        })
        .await
        .expect("enqueue batch");
    let held = fetch_as(&q, "doomed", 2).await;
    for entry in &held {
        assert_eq!(start_as(&q, "doomed", entry).await, "ok");
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reclaim_as(&q, "other", 1).await, (0, 2));
    let status = q.batch("run-1").await.expect("read").expect("exists");
    assert_eq!(status.pending, 0);
    let mut dead = status.dead.clone();
    dead.sort();
    let mut children = enqueued.children.clone();
    children.sort();
    assert_eq!(dead, children);
    let completion = status.completion_job.expect("completion enqueued");
    let record = q.job(&completion).await.expect("read").expect("exists");
    assert_eq!(record.job_type, "script_test_finish");
    assert_eq!(record.state, JobState::Waiting);
    q.purge_all_keys().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_hands_back_entries_its_worker_fetched_but_never_received() {
    let q = queue("heartbeat-lost").await;
    q.enqueue_many(vec![job(1), job(2)]).await.expect("enqueue");
    let lost = fetch_as(&q, "w", 1).await;
    let held = fetch_as(&q, "w", 1).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut conn = q.conn.clone();
    let kept: u64 = scripts::HEARTBEAT
        .key(q.keys.types())
        .arg(q.keys.prefix())
        .arg(TYPE)
        .arg(GROUP)
        .arg("w")
        .arg(50)
        .arg(&held[0].0)
        .invoke_async(&mut conn)
        .await
        .expect("heartbeat");
    assert_eq!(kept, 1);
    assert_eq!(pending_of(&q, "w").await, 1, "only the held entry stays");
    let again = fetch_as(&q, "x", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, lost[0].1, "the lost job is back in the stream");
    q.purge_all_keys().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_job_that_asked_for_it_gets_one_death_notice_and_its_replay_keeps_the_mark() {
    let q = queue("death-notice").await;
    let id = q
        .enqueue(job(1).customer("11111111").run("run-7").notify_on_death())
        .await
        .expect("enqueue")
        .job_id()
        .clone();
    let plain = q.enqueue(job(2)).await.expect("enqueue").job_id().clone();
    let held = fetch_as(&q, "crashed", 2).await;
    assert_eq!(held.len(), 2);
    for entry in &held {
        assert_eq!(start_as(&q, "crashed", entry).await, "ok");
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reclaim_as(&q, "other", 1).await, (0, 2));
    assert_eq!(
        q.job(&plain).await.expect("read").expect("exists").state,
        JobState::Dead
    );

    // The marked job's death enqueued its notice, with what the job was for; the plain one's
    // did not.
    let notice_id = JobId::new(format!("{id}.died").as_str());
    let notice = q.job(&notice_id).await.expect("read").expect("a notice");
    assert_eq!(notice.job_type, "DeathNotice");
    assert_eq!(notice.state, JobState::Waiting);
    let payload: crate::model::DeathNotice =
        serde_json::from_value(notice.payload.clone()).expect("decodes");
    assert_eq!(payload.job_id, id);
    assert_eq!(payload.job_type, "script_test");
    assert_eq!(payload.customer.as_deref(), Some("11111111"));
    assert_eq!(payload.run.as_deref(), Some("run-7"));
    let plain_notice = JobId::new(format!("{plain}.died").as_str());
    assert!(q.job(&plain_notice).await.expect("read").is_none());

    // A replay keeps the mark: when it dies too, it gets its own notice.
    let replayed = q.replay(&id, "support").await.expect("replay").new_job;
    let mut conn = q.conn.clone();
    let mark: Option<String> = conn
        .hget(
            format!("{}:job:{replayed}", q.config().key_prefix),
            "notify_dead",
        )
        .await
        .expect("hget");
    assert_eq!(mark.as_deref(), Some("1"));
    q.purge_all_keys().await.expect("purge");
}
