//! The SQLite adapter and the file under it (issue #13 item 3): a file removed or replaced under
//! an open target is never written into (the operation fails with `StorageFault::Gone`, a
//! retriable `target.storage` error), a reopen never creates a missing file, and after a storage
//! error the next operation opens the path again.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

use std::path::Path;

use orgsync_model::error_class::ErrorClass;
use orgsync_model::ids::Cvr;
use orgsync_model::plan::{self, Plan};
use orgsync_model::policy::Mappings;
use orgsync_model::target::TargetState;
use orgsync_model::testing::{self, small_tree};
use orgsync_model::validate::validate;
use orgsync_target::batch::write_departments;
use orgsync_target::sqlite::{SqliteOptions, SqliteTarget};
use orgsync_target::{StorageFault, Target, TargetError};

fn options(path: &Path) -> SqliteOptions {
    SqliteOptions {
        path: path.to_owned(),
        cvr: Cvr::parse("11111111").unwrap(),
        mappings: Mappings::default(),
    }
}

/// The plan of the small test tree and its people against an empty target.
fn first_plan() -> Plan {
    let snapshot = testing::snapshot(
        small_tree(),
        vec![
            testing::user(1, "Dorte Direktør", "dorte@kommune.dk", &[1]),
            testing::user(2, "Anne Marie Hansen", "anne@kommune.dk", &[2]),
        ],
    );
    let policy = testing::policy();
    let valid = validate(snapshot, &policy, None).unwrap();
    plan::plan(&valid, &TargetState::default(), &policy, testing::today())
}

fn assert_gone(result: Result<impl std::fmt::Debug, TargetError>, path: &Path) {
    match result {
        Err(
            error @ TargetError::Storage {
                fault: StorageFault::Gone,
                ..
            },
        ) => {
            assert!(error.is_retriable(), "{error}");
            assert_eq!(error.class(), ErrorClass::TargetStorage);
            assert!(
                error.to_string().contains(&path.display().to_string()),
                "the error names the file: {error}"
            );
        }
        other => panic!("expected a Gone storage error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_removed_file_is_not_written_into_nor_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.sqlite");
    let target = SqliteTarget::open(options(&path)).await.unwrap();
    let plan = first_plan();
    let (first, rest) = plan.departments.split_at(1);
    write_departments(&target, first, 1).await.unwrap();

    // Deleted under the open connection: nothing goes into the unlinked file.
    std::fs::remove_file(&path).unwrap();
    assert_gone(target.write_department(&rest[0]).await, &path);
    // The next attempt does not create the file either: only a run's start may.
    assert_gone(target.write_department(&rest[0]).await, &path);
    assert!(!path.exists(), "a reopen created the file again");
    assert_gone(
        SqliteTarget::open_existing(options(&path))
            .await
            .map(|_| ()),
        &path,
    );
}

#[tokio::test]
async fn a_replaced_file_fails_the_operation_once_and_the_next_one_uses_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.sqlite");
    let target = SqliteTarget::open(options(&path)).await.unwrap();
    let plan = first_plan();
    write_departments(&target, &plan.departments, 1)
        .await
        .unwrap();
    assert_eq!(
        target.read_state().await.unwrap().departments.len(),
        plan.departments.len()
    );

    // Another (empty) database put in its place, as a restore or a mistaken copy would (with
    // the old file's write-ahead log removed: SQLite would replay it into any file at the path).
    let other = dir.path().join("other.sqlite");
    drop(SqliteTarget::open(options(&other)).await.unwrap());
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::rename(&other, &path).unwrap();
    assert_gone(target.read_state().await, &path);
    // The next operation opens the file that is at the path now.
    assert!(target.read_state().await.unwrap().departments.is_empty());
}

#[tokio::test]
async fn after_a_storage_error_the_next_operation_opens_the_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.sqlite");
    let target = SqliteTarget::open(options(&path)).await.unwrap();
    let plan = first_plan();
    let (first, rest) = plan.departments.split_at(1);
    write_departments(&target, first, 1).await.unwrap();

    // Another connection holds the write lock longer than the busy timeout lets a writer wait:
    // the write fails with a storage error (busy).
    let (locked, unlock) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder_path = path.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&holder_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    unlock.recv().unwrap();
    let error = target.write_department(&rest[0]).await.unwrap_err();
    assert!(
        matches!(
            error,
            TargetError::Storage {
                fault: StorageFault::Busy,
                ..
            }
        ),
        "{error:?}"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    // The connection was dropped: the counter of the new one starts at zero, and the write works.
    assert_eq!(target.total_changes().await.unwrap(), 0);
    target.write_department(&rest[0]).await.unwrap();
    assert_eq!(target.read_state().await.unwrap().departments.len(), 2);
}
