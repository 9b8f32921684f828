//! The run-state store against the Redis at 127.0.0.1:6379: locks (owner checks, expiry),
//! values, maps and records (order, index, overwrite, retention).

mod common;

use std::time::Duration;

use common::TestQueue;
use orgsync_queue::{LockAttempt, ObjectLogEntry, QueueError, SharedRelease};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_has_one_owner_and_only_the_owner_extends_or_releases_it() {
    let t = TestQueue::new("state-lock").await;
    let q = &t.queue;
    let ttl = Duration::from_secs(30);
    assert_eq!(
        q.try_lock("run:29189846", "run-a", ttl).await.unwrap(),
        LockAttempt::Acquired
    );
    match q.try_lock("run:29189846", "run-b", ttl).await.unwrap() {
        LockAttempt::Held { owner, ttl_left } => {
            assert_eq!(owner, "run-a");
            assert!(
                ttl_left > Duration::from_secs(25) && ttl_left <= ttl,
                "{ttl_left:?}"
            );
        }
        LockAttempt::Acquired => panic!("a held lock was acquired by someone else"),
    }
    assert_eq!(
        q.try_lock("run:29189846", "run-a", ttl).await.unwrap(),
        LockAttempt::Acquired,
        "the owner may take it again"
    );
    assert!(!q.extend_lock("run:29189846", "run-b", ttl).await.unwrap());
    assert!(q.extend_lock("run:29189846", "run-a", ttl).await.unwrap());
    assert!(!q.release_lock("run:29189846", "run-b").await.unwrap());
    assert_eq!(
        q.lock_owner("run:29189846").await.unwrap().as_deref(),
        Some("run-a")
    );
    assert!(q.release_lock("run:29189846", "run-a").await.unwrap());
    assert_eq!(q.lock_owner("run:29189846").await.unwrap(), None);
    assert!(!q.release_lock("run:29189846", "run-a").await.unwrap());
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_free_for_others_and_no_longer_the_old_owners() {
    let t = TestQueue::new("state-lock-expiry").await;
    let q = &t.queue;
    // Margins of 400 ms either side: a loaded CI machine oversleeps by tens of milliseconds.
    let short = Duration::from_millis(1000);
    assert_eq!(
        q.try_lock("run:1", "old", short).await.unwrap(),
        LockAttempt::Acquired
    );
    // Extending keeps it alive past its first expiry.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(q.extend_lock("run:1", "old", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(q.lock_owner("run:1").await.unwrap().as_deref(), Some("old"));
    // Without a heartbeat it expires.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(q.lock_owner("run:1").await.unwrap(), None);
    assert!(!q.extend_lock("run:1", "old", short).await.unwrap());
    assert_eq!(
        q.try_lock("run:1", "new", Duration::from_secs(5))
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    assert!(!q.release_lock("run:1", "old").await.unwrap());
    assert_eq!(q.lock_owner("run:1").await.unwrap().as_deref(), Some("new"));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_stored_replaced_deleted_and_expire() {
    let t = TestQueue::new("state-value").await;
    let q = &t.queue;
    let snapshot = vec![0u8, 159, 146, 150, 255];
    q.put_value("snapshot:run-1", &snapshot, None)
        .await
        .unwrap();
    assert_eq!(q.get_value("snapshot:run-1").await.unwrap(), Some(snapshot));
    q.put_value("snapshot:run-1", b"v2", None).await.unwrap();
    assert_eq!(
        q.get_value("snapshot:run-1").await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    q.delete_value("snapshot:run-1").await.unwrap();
    assert_eq!(q.get_value("snapshot:run-1").await.unwrap(), None);
    q.delete_value("snapshot:run-1").await.unwrap();

    q.put_value("short", b"x", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    q.put_value("long", b"y", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(q.get_value("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.get_value("short").await.unwrap(), None);
    assert!(q.get_value("long").await.unwrap().is_some());
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_written_in_chunks_gives_back_each_field_and_expires_as_a_whole() {
    let t = TestQueue::new("state-map").await;
    let q = &t.queue;
    let fields: Vec<(String, Vec<u8>)> = (0..4_300)
        .map(|n| (format!("unit-{n}"), format!("plan slice {n}").into_bytes()))
        .collect();
    q.put_map_fields("plan:run-1", &fields, Duration::from_secs(30))
        .await
        .unwrap();
    for n in [0, 499, 500, 4_299] {
        assert_eq!(
            q.get_map_field("plan:run-1", &format!("unit-{n}"))
                .await
                .unwrap(),
            Some(format!("plan slice {n}").into_bytes())
        );
    }
    assert_eq!(q.get_map_field("plan:run-1", "unit-x").await.unwrap(), None);
    assert_eq!(q.get_map_field("plan:none", "unit-0").await.unwrap(), None);

    let few = vec![("a".to_owned(), b"1".to_vec())];
    q.put_map_fields("plan:short", &few, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(q.get_map_field("plan:short", "a").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.get_map_field("plan:short", "a").await.unwrap(), None);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_list_newest_first_by_first_creation_filter_by_index_and_expire() {
    let t = TestQueue::new("state-records").await;
    let q = &t.queue;
    let keep = Duration::from_secs(60);
    q.put_record("reports", "r1", "11111111", r#"{"run":"r1","v":1}"#, keep)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.put_record("reports", "r2", "22222222", r#"{"run":"r2"}"#, keep)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.put_record("reports", "r3", "11111111", r#"{"run":"r3"}"#, keep)
        .await
        .unwrap();
    assert_eq!(
        q.list_records("reports", None, 10).await.unwrap(),
        [
            r#"{"run":"r3"}"#,
            r#"{"run":"r2"}"#,
            r#"{"run":"r1","v":1}"#
        ]
    );
    assert_eq!(
        q.list_records("reports", Some("11111111"), 10)
            .await
            .unwrap(),
        [r#"{"run":"r3"}"#, r#"{"run":"r1","v":1}"#]
    );
    assert_eq!(
        q.list_records("reports", None, 2).await.unwrap().len(),
        2,
        "limit"
    );

    // Updating r1 replaces the document but keeps its place (first creation).
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.put_record("reports", "r1", "11111111", r#"{"run":"r1","v":2}"#, keep)
        .await
        .unwrap();
    assert_eq!(
        q.get_record("reports", "r1").await.unwrap().as_deref(),
        Some(r#"{"run":"r1","v":2}"#)
    );
    assert_eq!(
        q.list_records("reports", None, 10).await.unwrap()[2],
        r#"{"run":"r1","v":2}"#
    );
    // A changed index moves it from one index list to the other.
    q.put_record("reports", "r1", "22222222", r#"{"run":"r1","v":3}"#, keep)
        .await
        .unwrap();
    assert_eq!(
        q.list_records("reports", Some("11111111"), 10)
            .await
            .unwrap(),
        [r#"{"run":"r3"}"#]
    );
    assert_eq!(
        q.list_records("reports", Some("22222222"), 10)
            .await
            .unwrap(),
        [r#"{"run":"r2"}"#, r#"{"run":"r1","v":3}"#]
    );

    // Past its retention a record is gone from reads and lists.
    q.put_record(
        "reports",
        "r4",
        "11111111",
        r#"{"run":"r4"}"#,
        Duration::from_millis(150),
    )
    .await
    .unwrap();
    assert_eq!(
        q.list_records("reports", Some("11111111"), 10)
            .await
            .unwrap()[0],
        r#"{"run":"r4"}"#
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.get_record("reports", "r4").await.unwrap(), None);
    assert_eq!(
        q.list_records("reports", Some("11111111"), 10)
            .await
            .unwrap(),
        [r#"{"run":"r3"}"#]
    );
    assert_eq!(q.list_records("reports", None, 10).await.unwrap().len(), 3);
    assert_eq!(q.get_record("reports", "missing").await.unwrap(), None);
    assert!(q.list_records("other", None, 10).await.unwrap().is_empty());

    let err = q
        .put_record("bad:name", "x", "", "{}", keep)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::InvalidName { .. }), "{err}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacer_hands_out_slots_an_interval_apart_across_connections() {
    let t = TestQueue::new("state-pacer").await;
    // A second handle: another process sharing the Redis.
    let other = orgsync_queue::QueueHandle::connect(t.queue.config().clone())
        .await
        .unwrap();
    let interval = Duration::from_millis(100);
    let origin = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let q = if i % 2 == 0 {
            t.queue.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            // The slot's time lies between (call made + wait) and (answer received + wait):
            // tasks start at different moments on a loaded machine, so the waits alone are not
            // comparable.
            let asked = origin.elapsed();
            let wait = q.reserve_slot("sts-calls", interval).await.unwrap();
            let answered = origin.elapsed();
            ((asked + wait).as_millis(), (answered + wait).as_millis())
        }));
    }
    let mut slots = Vec::new();
    for task in tasks {
        slots.push(task.await.unwrap());
    }
    slots.sort_unstable();
    // Twenty distinct slots 100 ms apart: each later slot can be 100 ms after the one before.
    for pair in slots.windows(2) {
        assert!(pair[1].1 + 1 >= pair[0].0 + 100, "{slots:?}");
    }
    assert!(slots[19].1 + 19 >= slots[0].0 + 1900, "{slots:?}");
}

fn entry(object: &str, aliases: &[&str], fingerprint: &str, text: &str) -> ObjectLogEntry {
    ObjectLogEntry {
        object: object.to_owned(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        fingerprint: fingerprint.to_owned(),
        payload: text.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_log_finds_an_objects_history_by_id_or_alias_and_keeps_a_repeat_once() {
    let t = TestQueue::new("state-olog").await;
    let q = &t.queue;
    let day = Duration::from_secs(24 * 3600);
    let added = q
        .append_object_log(
            "provisioning:29189846",
            &[
                entry(
                    "u-1",
                    &["Anne@Kommune.dk", "ah"],
                    "r1:create",
                    "anne created",
                ),
                entry("u-2", &["bo@kommune.dk"], "skip:no_email", "bo skipped"),
            ],
            day,
            50,
        )
        .await
        .unwrap();
    assert_eq!(added, 2);
    // The same skip again adds nothing; a new action does.
    let added = q
        .append_object_log(
            "provisioning:29189846",
            &[
                entry(
                    "u-2",
                    &["bo@kommune.dk"],
                    "skip:no_email",
                    "bo skipped again",
                ),
                entry("u-1", &[], "r2:deactivate", "anne deactivated"),
            ],
            day,
            50,
        )
        .await
        .unwrap();
    assert_eq!(added, 1);
    for key in ["u-1", "anne@kommune.dk", "AH"] {
        let history = q
            .object_history("provisioning:29189846", key, day, 10)
            .await
            .unwrap();
        let texts: Vec<_> = history
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect();
        assert_eq!(texts, ["anne deactivated", "anne created"], "{key}");
        assert!(history.iter().all(|e| e.object == "u-1"));
    }
    assert!(
        q.object_history("provisioning:29189846", "nobody", day, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Another customer's log is another log.
    assert!(
        q.object_history("provisioning:11111111", "u-1", day, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Newest first, in pages with a cursor.
    let page = q
        .scan_object_log("provisioning:29189846", None, None, None, 2)
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].payload, b"anne deactivated");
    let rest = q
        .scan_object_log("provisioning:29189846", None, None, Some(&page[1].id), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].payload, b"anne created");
    let (entries, bytes) = q.object_log_usage("provisioning:29189846").await.unwrap();
    assert_eq!(entries, 3);
    assert!(bytes > 0);
    assert!(matches!(
        q.object_log_usage("bad name").await,
        Err(QueueError::InvalidName { .. })
    ));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_log_forgets_entries_past_their_retention_and_caps_each_objects_history() {
    let t = TestQueue::new("state-olog-retention").await;
    let q = &t.queue;
    let short = Duration::from_millis(300);
    q.append_object_log("log", &[entry("a", &[], "1", "old")], short, 3)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The old entry is past its retention: not shown, and trimmed at the next append.
    assert!(
        q.object_history("log", "a", short, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let entries: Vec<_> = (0..5)
        .map(|i| entry("a", &[], &i.to_string(), &format!("new {i}")))
        .collect();
    q.append_object_log("log", &entries, short, 3)
        .await
        .unwrap();
    let history = q.object_history("log", "a", short, 10).await.unwrap();
    let texts: Vec<_> = history
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert_eq!(texts, ["new 4", "new 3", "new 2"], "at most 3 per object");
    let (stored, _) = q.object_log_usage("log").await.unwrap();
    assert!(stored <= 5, "the expired entry was trimmed: {stored}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_counts_across_connections_and_expires_a_window_after_its_first_count() {
    let t = TestQueue::new("state-counter").await;
    let other = orgsync_queue::QueueHandle::connect(orgsync_queue::QueueConfig::new(
        common::REDIS_URL,
        &t.prefix,
    ))
    .await
    .unwrap();
    let window = Duration::from_millis(400);
    assert_eq!(t.queue.increment_value("window", window).await.unwrap(), 1);
    assert_eq!(other.increment_value("window", window).await.unwrap(), 2);
    assert_eq!(t.queue.increment_value("window", window).await.unwrap(), 3);
    // Later counts do not extend the window: it ends 400 ms after the first.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(t.queue.increment_value("window", window).await.unwrap(), 1);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_lock_is_held_by_its_group_together_excludes_others_and_the_last_holder_frees_it()
{
    let t = TestQueue::new("state-shared-lock").await;
    let q = &t.queue;
    let ttl = Duration::from_secs(30);
    let (name, group) = ("run-lock:1", "replay:run-1");
    for holder in ["job-a", "job-b", "job-c"] {
        assert_eq!(
            q.try_shared_lock(name, group, holder, ttl).await.unwrap(),
            LockAttempt::Acquired,
            "{holder} joins its group's hold without waiting"
        );
    }
    assert_eq!(q.lock_owner(name).await.unwrap().as_deref(), Some(group));
    // Others (a new run, a release, another run's replays) find it held by the group.
    match q.try_lock(name, "run-2", ttl).await.unwrap() {
        LockAttempt::Held { owner, .. } => assert_eq!(owner, group),
        LockAttempt::Acquired => panic!("a run took a lock the replays share"),
    }
    match q
        .try_shared_lock(name, "replay:run-0", "job-x", ttl)
        .await
        .unwrap()
    {
        LockAttempt::Held { owner, .. } => assert_eq!(owner, group),
        LockAttempt::Acquired => panic!("another group joined"),
    }
    assert!(!q.release_lock(name, "run-2").await.unwrap());
    assert_eq!(
        q.release_shared_lock(name, "replay:run-0", "job-x")
            .await
            .unwrap(),
        SharedRelease::NotHeld
    );
    assert!(
        q.extend_shared_lock(name, group, "job-a", ttl)
            .await
            .unwrap()
    );
    assert!(
        !q.extend_shared_lock(name, "replay:run-0", "job-a", ttl)
            .await
            .unwrap()
    );
    // Only the last holder frees it.
    assert_eq!(
        q.release_shared_lock(name, group, "job-a").await.unwrap(),
        SharedRelease::Kept
    );
    assert_eq!(
        q.release_shared_lock(name, group, "job-b").await.unwrap(),
        SharedRelease::Kept
    );
    assert_eq!(q.lock_owner(name).await.unwrap().as_deref(), Some(group));
    assert_eq!(
        q.release_shared_lock(name, group, "job-c").await.unwrap(),
        SharedRelease::Freed
    );
    assert_eq!(q.lock_owner(name).await.unwrap(), None);
    // Free again: an ordinary owner takes it, and the group's release never touches it.
    assert_eq!(
        q.try_lock(name, "run-2", ttl).await.unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        q.release_shared_lock(name, group, "job-c").await.unwrap(),
        SharedRelease::NotHeld
    );
    assert_eq!(q.lock_owner(name).await.unwrap().as_deref(), Some("run-2"));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_lock_whose_holder_crashed_is_freed_by_its_expiry() {
    let t = TestQueue::new("state-shared-lock-expiry").await;
    let q = &t.queue;
    let short = Duration::from_millis(1000);
    let (name, group) = ("run-lock:2", "replay:run-1");
    assert_eq!(
        q.try_shared_lock(name, group, "crashed", short)
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        q.try_shared_lock(name, group, "alive", short)
            .await
            .unwrap(),
        LockAttempt::Acquired
    );
    // The live holder renews and ends its hold; the crashed one never does, so the lock stays
    // (its hold has not expired yet) ...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        q.extend_shared_lock(name, group, "alive", short)
            .await
            .unwrap()
    );
    assert_eq!(
        q.release_shared_lock(name, group, "alive").await.unwrap(),
        SharedRelease::Kept
    );
    assert_eq!(q.lock_owner(name).await.unwrap().as_deref(), Some(group));
    // ... until its TTL ends it: then anyone may take it.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    assert_eq!(q.lock_owner(name).await.unwrap(), None);
    assert_eq!(
        q.try_lock(name, "run-2", short).await.unwrap(),
        LockAttempt::Acquired
    );
    // A new hold of the group after an expiry starts without the stale holders.
    assert!(q.release_lock(name, "run-2").await.unwrap());
    assert_eq!(
        q.try_shared_lock(name, group, "next", short).await.unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        q.release_shared_lock(name, group, "next").await.unwrap(),
        SharedRelease::Freed
    );
    t.cleanup().await;
}
