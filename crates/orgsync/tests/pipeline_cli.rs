//! The pipeline from the command line, as an operator drives it: `orgsync worker` and
//! `orgsync scheduler` processes, `sync --wait`, `plan`, `runs`, `runs show`, and `demo --once`,
//! against real Redis and the STS simulator.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_orgsync");

/// A configuration directory with one customer on an SQLite target, its own Redis key prefix,
/// and the simulator; processes it started are killed and its keys deleted on drop.
struct Setup {
    dir: tempfile::TempDir,
    prefix: String,
    children: Vec<Child>,
    _sim: Option<Simulator>,
}

impl Setup {
    async fn new(schedule: &str) -> Setup {
        let sim = Simulator::start(
            vec![generate(
                &Cvr::parse("11111111").unwrap(),
                Size::Xs,
                3,
                orgsync_model::time::danish_date(&chrono::Utc::now()),
            )],
            SimOptions::default(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("test-cli-{}", uuid_like());
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("customers")).unwrap();
        std::fs::write(
            config.join("orgsync.toml"),
            format!(
                "[redis]\nkey_prefix = \"{prefix}\"\n[sts]\nenvironment = \"sim\"\nbase_url = \"{}\"\nmax_calls_per_second = 1000\n[runs]\nscheduler_grace_minutes = 0\n",
                sim.base_url()
            ),
        )
        .unwrap();
        std::fs::write(
            config.join("customers/test.toml"),
            format!(
                "cvr = \"11111111\"\nname = \"Test\"\ndomains = [\"{}\"]\nschedule = \"{schedule}\"\n[target]\nkind = \"sqlite\"\npath = {:?}\n",
                domain_of(Size::Xs),
                dir.path().join("target.sqlite").display().to_string()
            ),
        )
        .unwrap();
        Setup {
            dir,
            prefix,
            children: Vec::new(),
            _sim: Some(sim),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn spawn(&mut self, args: &[&str]) {
        let child = Command::new(EXE)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
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

    fn stop_children(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop_children();
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

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_sync_wait_then_runs_show_work_from_the_command_line() {
    let mut setup = Setup::new("0 0 * * *").await;

    // plan: what a first run would write; writes nothing.
    let out = setup
        .orgsync(&["plan", "11111111", "--format", "json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = json(&out);
    let creates = plan["summary"]["users"]["create"].as_u64().unwrap();
    assert!(creates > 200, "{plan}");
    let database = setup.dir.path().join("target.sqlite");
    assert!(
        !database.exists(),
        "plan wrote nothing, not even an empty database"
    );
    let text = setup.orgsync(&["plan", "11111111"]).await;
    assert!(stdout(&text).contains("create"), "{}", stdout(&text));

    // A worker and a run that is followed to its end. Every STS call takes 500 ms, so the read
    // lasts a few seconds and `--wait` shows its progress (on stderr: not a terminal).
    setup.spawn(&["worker"]);
    let sim = setup._sim.as_ref().unwrap();
    let quick = sim.options();
    sim.set_options(SimOptions {
        latency: LatencyModel::fixed(500),
        ..quick.clone()
    });
    let out = setup.orgsync(&["sync", "11111111", "--wait"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("state:        succeeded"), "{text}");
    assert!(text.contains(&format!("{creates} created")), "{text}");
    let progress = stderr(&out);
    let line = progress
        .lines()
        .find(|l| l.contains(": reading STS: ") && l.contains(" calls, "))
        .unwrap_or_else(|| panic!("no read progress in:\n{progress}"));
    assert!(line.contains(" objects, "), "{line}");
    setup._sim.as_ref().unwrap().set_options(quick);

    // The second run writes nothing; its JSON report says so.
    let out = setup
        .orgsync(&["sync", "11111111", "--wait", "--format", "json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let second = json(&out);
    assert_eq!(second["state"], "succeeded");
    assert_eq!(second["writes"]["written"], 0, "{second}");

    // Who asked, without any user variable (cron, containers): the uid.
    let config = setup.config();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(EXE)
            .arg("--config")
            .arg(config)
            .args(["sync", "11111111", "--wait", "--format", "json"])
            .env_remove("USER")
            .env_remove("LOGNAME")
            .env_remove("USERNAME")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let third = json(&out);
    assert!(
        third["trigger"]["by"].as_str().unwrap().starts_with("uid "),
        "{third}"
    );

    // runs lists them, newest first; runs show prints one.
    let out = setup.orgsync(&["runs", "--format", "json"]).await;
    let runs = json(&out);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["run_id"], third["run_id"]);
    assert_eq!(runs[1]["run_id"], second["run_id"]);
    let first_id = runs[2]["run_id"].as_str().unwrap().to_owned();
    let out = setup.orgsync(&["runs", "11111111"]).await;
    assert_eq!(
        stdout(&out).matches("succeeded").count(),
        3,
        "{}",
        stdout(&out)
    );
    let out = setup.orgsync(&["runs", "show", &first_id]).await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains(&format!("run {first_id}")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("department jobs:"),
        "{}",
        stdout(&out)
    );

    // explain: a created user's history names the first run; an unknown one exits 1.
    let someone = plan["users"][0]["user_name"].as_str().unwrap().to_owned();
    let out = setup
        .orgsync(&["explain", "11111111", &someone, "--format", "json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let why = json(&out);
    assert_eq!(why["history"][0]["action"], "create", "{why}");
    assert_eq!(why["history"][0]["run_id"], first_id.as_str(), "{why}");
    assert_eq!(why["now"]["next_action"], "none", "{why}");
    let out = setup
        .orgsync(&["explain", "11111111", &someone, "--history-only"])
        .await;
    assert!(stdout(&out).contains(&first_id), "{}", stdout(&out));
    let out = setup
        .orgsync(&["explain", "11111111", "nobody@nowhere.dk", "--history-only"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("nothing in the provisioning log"));
    // revert of a run that deactivated nothing reactivates nothing, and says who asked.
    let out = setup
        .orgsync(&["runs", "revert", &first_id, "--by", "anna"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("reverted:     by anna") && stdout(&out).contains("0 reactivated"),
        "{}",
        stdout(&out)
    );

    // Mistakes get clear errors.
    let out = setup.orgsync(&["runs", "show", "no-such-run"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "no run no-such-run under the Redis key prefix \"{}\"",
            setup.prefix
        )),
        "{}",
        stderr(&out)
    );
    let out = setup.orgsync(&["sync", "22222222"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no customer has CVR 22222222 (configured: 11111111)"),
        "{}",
        stderr(&out)
    );
    let out = setup.orgsync(&["sync", "1234"]).await;
    assert!(
        stderr(&out).contains("\"1234\" is not a CVR number"),
        "{}",
        stderr(&out)
    );
    let out = setup.orgsync(&["runs", "nope"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a CVR number"),
        "{}",
        stderr(&out)
    );
    let out = setup.orgsync(&["runs", "release", &first_id]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not held"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_enqueue_each_fire_once() {
    // Every 2 seconds (six fields: seconds first); no worker, so the runs stay queued.
    let mut setup = Setup::new("*/2 * * * * *").await;
    setup.spawn(&["scheduler"]);
    setup.spawn(&["scheduler"]);
    tokio::time::sleep(Duration::from_secs(9)).await;
    setup.stop_children();

    let out = setup.orgsync(&["runs", "--format", "json"]).await;
    let runs = json(&out);
    let runs = runs.as_array().unwrap();
    let mut fires: Vec<String> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["trigger"]["kind"], "schedule", "{r}");
            r["trigger"]["fire"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(fires.len() >= 3, "about 4 fires in 9 s: {fires:?}");
    let n = fires.len();
    fires.sort();
    fires.dedup();
    assert_eq!(fires.len(), n, "one run per fire");

    // The queue holds exactly one SyncCustomer per fire.
    let out = setup.orgsync(&["queue", "stats", "--format", "json"]).await;
    let stats = json(&out);
    let waiting = stats["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["job_type"] == "sync_customer")
        .map(|t| t["waiting"].as_u64().unwrap())
        .unwrap();
    assert_eq!(waiting as usize, n, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_a_municipality_end_to_end_and_says_where_the_database_is() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("test-demo-{}", uuid_like());
    let demo_dir = dir.path().join("demo");
    let out = tokio::task::spawn_blocking({
        let (demo_dir, prefix) = (demo_dir.clone(), prefix.clone());
        move || {
            Command::new(EXE)
                .args([
                    "demo",
                    "--once",
                    "--size",
                    "xs",
                    "--key-prefix",
                    &prefix,
                    "--dir",
                ])
                .arg(&demo_dir)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = stdout(&out);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli --scan --pattern '{prefix}:*' | xargs -r redis-cli del >/dev/null"
        ))
        .status();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("state:        succeeded"), "{text}");
    assert!(text.contains("30 created"), "30 departments: {text}");
    let database = std::path::absolute(demo_dir.join("11111111.sqlite")).unwrap();
    assert!(database.exists());
    assert!(
        text.contains(&format!("The target database: {}", database.display())),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_a_private_redis_when_none_answers_at_the_configured_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    // Nothing listens on port 1.
    std::fs::write(
        config.join("orgsync.toml"),
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let demo_dir = dir.path().join("demo");
    let out = tokio::task::spawn_blocking({
        let (config, demo_dir) = (config.clone(), demo_dir.clone());
        move || {
            Command::new(EXE)
                .arg("--config")
                .arg(&config)
                .args(["demo", "--once", "--size", "xs", "--dir"])
                .arg(&demo_dir)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("no Redis answers at redis://127.0.0.1:1; starting a private redis-server"),
        "{text}"
    );
    assert!(text.contains("state:        succeeded"), "{text}");
    assert!(text.contains("The private Redis stops now"), "{text}");
    // The demo's configuration names the private Redis, whose port is closed again.
    let written = std::fs::read_to_string(demo_dir.join("config/orgsync.toml")).unwrap();
    let port: u16 = written
        .split("redis://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped on exit"
    );
}

/// A plain HTTP/1.1 GET with Basic credentials; returns the whole response.
fn http_get(addr: &str, path: &str, user: &str, password: &str) -> String {
    use std::io::{Read as _, Write as _};
    let token = {
        // base64 of "user:password", by hand: the test needs no extra crate for it.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = format!("{user}:{password}").into_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_dashboard_and_login_and_the_dashboard_answers_while_it_runs() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("test-demo-web-{}", uuid_like());
    let mut child = Command::new(EXE)
        .args(["demo", "--size", "xs", "--key-prefix", &prefix, "--dir"])
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dashboard = None;
    let mut still_running = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Dashboard: http://") {
            // "127.0.0.1:PORT/ (log in as demo, password HEX)"
            let (addr, login) = rest.split_once("/ (log in as demo, password ").unwrap();
            dashboard = Some((addr.to_owned(), login.trim_end_matches(')').to_owned()));
        }
        if line.starts_with("Still running") {
            still_running = true;
            break;
        }
    }
    assert!(still_running);
    let (addr, password) = dashboard.expect("the demo printed its dashboard");
    let runs = http_get(&addr, "/api/runs", "demo", &password);
    let wrong = http_get(&addr, "/api/runs", "demo", "wrong");
    let health = http_get(&addr, "/health", "x", "y");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli --scan --pattern '{prefix}:*' | xargs -r redis-cli del >/dev/null"
        ))
        .status();
    assert!(runs.starts_with("HTTP/1.1 200"), "{runs}");
    assert!(runs.contains("\"state\":\"succeeded\""), "{runs}");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}
