//! Issue #13 items 2 and 3, as an operator meets them with a worker running: a changed or added
//! customer file takes effect for the next run without a restart, and a lost, replaced or
//! unwritable SQLite target is never reported as written. Real `orgsync worker` processes,
//! Redis and the STS simulator.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{SimOptions, Simulator};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_orgsync");
const FIRST: &str = "11111111";
const SECOND: &str = "22222222";

/// A configuration directory with one customer (11111111) on an SQLite target, its own Redis
/// key prefix, and a simulator serving 11111111 and 22222222; processes it started are killed,
/// files it made immutable are made mutable again, and its keys are deleted on drop.
struct Setup {
    dir: tempfile::TempDir,
    prefix: String,
    children: Vec<Child>,
    immutable: Vec<PathBuf>,
    _sim: Simulator,
}

impl Setup {
    async fn new() -> Setup {
        let today = orgsync_model::time::danish_date(&chrono::Utc::now());
        let sim = Simulator::start(
            vec![
                generate(&Cvr::parse(FIRST).unwrap(), Size::Xs, 3, today),
                generate(&Cvr::parse(SECOND).unwrap(), Size::Xs, 4, today),
            ],
            SimOptions::default(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("test-live-{}", unique());
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("customers")).unwrap();
        std::fs::write(
            config.join("orgsync.toml"),
            format!(
                "[redis]\nkey_prefix = \"{prefix}\"\n[sts]\nenvironment = \"sim\"\nbase_url = \"{}\"\nmax_calls_per_second = 1000\n",
                sim.base_url()
            ),
        )
        .unwrap();
        let setup = Setup {
            dir,
            prefix,
            children: Vec::new(),
            immutable: Vec::new(),
            _sim: sim,
        };
        setup.write_customer("first.toml", FIRST, &setup.path("first.sqlite"));
        setup
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes (or rewrites) a customer file.
    fn write_customer(&self, file: &str, cvr: &str, target: &Path) {
        std::fs::write(
            self.config().join("customers").join(file),
            format!(
                "cvr = \"{cvr}\"\nname = \"Test {cvr}\"\ndomains = [\"{}\"]\nschedule = \"0 0 * * *\"\n[target]\nkind = \"sqlite\"\npath = {:?}\n",
                domain_of(Size::Xs),
                target.display().to_string()
            ),
        )
        .unwrap();
    }

    fn spawn_worker(&mut self) {
        let child = Command::new(EXE)
            .arg("--config")
            .arg(self.config())
            .arg("worker")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn stop_workers(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Runs `orgsync --config DIR args...` off the async runtime (the simulator lives on it).
    async fn orgsync(&self, args: &[&str]) -> Output {
        let config = self.config();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(EXE)
                .arg("--config")
                .arg(config)
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    }

    /// `sync CVR --wait --format json`: the run's final report.
    async fn sync_wait(&self, cvr: &str) -> Value {
        let out = self
            .orgsync(&["sync", cvr, "--wait", "--format", "json"])
            .await;
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Starts a run of `cvr` and follows its report until it has ended or an attempt of its
    /// `SyncCustomer` failed (a retriable failure waits minutes for its next attempt).
    async fn sync_until_settled(&self, cvr: &str) -> Value {
        let out = self.orgsync(&["sync", cvr]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let run_id = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no run id in {text}"))
            .to_owned();
        for _ in 0..600 {
            let out = self
                .orgsync(&["runs", "show", &run_id, "--format", "json"])
                .await;
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            let ended = ["succeeded", "failed", "partly_failed", "held", "refused"]
                .contains(&report["state"].as_str().unwrap_or_default());
            if ended || !report["error"].is_null() {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {run_id} did not settle in a minute");
    }

    /// Makes writes to `file` fail even for root: `chattr +i` (immutable: an open for writing
    /// fails with EPERM, so SQLite opens it read-only) as root, a read-only mode otherwise.
    fn make_unwritable(&mut self, file: &Path) {
        if is_root() {
            let out = Command::new("chattr").arg("+i").arg(file).output().unwrap();
            assert!(
                out.status.success(),
                "chattr +i needs CAP_LINUX_IMMUTABLE and a file system with attributes: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.immutable.push(file.to_owned());
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }

    fn make_writable(&mut self, file: &Path) {
        if is_root() {
            let out = Command::new("chattr").arg("-i").arg(file).output().unwrap();
            assert!(out.status.success());
            self.immutable.retain(|f| f != file);
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop_workers();
        for file in &self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(file).output();
        }
        let _ = Command::new("redis-cli")
            .args(["--scan", "--pattern", &format!("{}:*", self.prefix)])
            .output()
            .map(|out| {
                let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                for chunk in keys.chunks(500) {
                    let _ = Command::new("redis-cli").arg("del").args(chunk).output();
                }
            });
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn unique() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The users of `cvr` in an SQLite target.
fn users_in(file: &Path, cvr: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM users WHERE cvr = ?1", [cvr], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Every row of an SQLite target's tables, as text.
fn contents(file: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut rows = Vec::new();
    for table in ["departments", "users", "memberships"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{table}: {}", values.join(", ")));
        }
    }
    rows
}

fn remove_database(file: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_target_path_and_an_added_customer_take_effect_without_restarting_the_worker() {
    let mut setup = Setup::new().await;
    setup.spawn_worker();
    let first = setup.sync_wait(FIRST).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let old = setup.path("first.sqlite");
    let created = users_in(&old, FIRST);
    assert!(created > 100, "{first}");

    // The customer's target moves to another file while the worker runs: the next run fills
    // the new file, and the old one is left as it was.
    let new = setup.path("moved.sqlite");
    let before = contents(&old);
    setup.write_customer("first.toml", FIRST, &new);
    let moved = setup.sync_wait(FIRST).await;
    assert_eq!(moved["state"], "succeeded", "{moved}");
    assert!(
        new.exists(),
        "the run did not write to the new path: {moved}"
    );
    assert_eq!(users_in(&new, FIRST), created, "{moved}");
    assert!(
        contents(&old) == before,
        "the old database was written to after its path left the configuration"
    );

    // A customer file added while the worker runs: its first run succeeds.
    let second_db = setup.path("second.sqlite");
    setup.write_customer("second.toml", SECOND, &second_db);
    let second = setup.sync_wait(SECOND).await;
    assert_eq!(second["state"], "succeeded", "{second}");
    assert!(users_in(&second_db, SECOND) > 100, "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_deleted_between_runs_holds_the_run_and_is_not_created_again() {
    let mut setup = Setup::new().await;
    setup.spawn_worker();
    let first = setup.sync_wait(FIRST).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let db = setup.path("first.sqlite");
    assert!(users_in(&db, FIRST) > 100);

    // Deleted while the worker has it open: the next run neither writes into the unlinked file
    // nor creates an empty one, and says why.
    remove_database(&db);
    let lost = setup.sync_wait(FIRST).await;
    assert_eq!(lost["state"], "failed", "{lost}");
    assert_eq!(lost["error_class"], "guard.target_lost", "{lost}");
    let error = lost["error"].as_str().unwrap();
    assert!(error.contains(&db.display().to_string()), "{error}");
    assert!(error.contains("users"), "{error}");
    assert_eq!(lost["writes"]["written"], 0, "{lost}");
    assert!(!db.exists(), "the lost target was created again");

    // The operator says the target is to start empty: the next run fills it.
    let out = setup.orgsync(&["runs", "accept-empty", FIRST]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refilled = setup.sync_wait(FIRST).await;
    assert_eq!(refilled["state"], "succeeded", "{refilled}");
    assert!(users_in(&db, FIRST) > 100, "{refilled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_target_fixed_while_the_worker_runs_is_written_by_the_next_attempt() {
    let mut setup = Setup::new().await;
    setup.spawn_worker();
    let first = setup.sync_wait(FIRST).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    setup.stop_workers();
    let db = setup.path("first.sqlite");

    // A department renamed by hand, so that the next run has a write to make.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let changed = conn
            .execute(
                "UPDATE departments SET title = 'Omdøbt' WHERE id = (SELECT min(id) FROM departments WHERE cvr = ?1)",
                [FIRST],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    // The file cannot be written when a fresh worker first opens it: the run's attempt fails.
    setup.make_unwritable(&db);
    setup.spawn_worker();
    let refused = setup.sync_until_settled(FIRST).await;
    assert_eq!(refused["error_class"], "target.storage", "{refused}");

    // Fixed; the same worker's next attempt writes.
    setup.make_writable(&db);
    let fixed = setup.sync_until_settled(FIRST).await;
    assert_eq!(fixed["state"], "succeeded", "{fixed}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let renamed: i64 = conn
        .query_row(
            "SELECT count(*) FROM departments WHERE title = 'Omdøbt'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(renamed, 0, "the department's title was not written back");
}
