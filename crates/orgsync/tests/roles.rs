//! The roles as a supervisor runs them: `orgsync worker` and `orgsync scheduler` processes with
//! `--metrics-bind` (`/health`, `/ready`, `/metrics`), draining on SIGTERM, and stopping at once
//! on a second signal with the jobs left for another worker, against real Redis and the STS
//! simulator.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_orgsync");

/// A configuration with one customer (an `xs` municipality behind a simulator answering every
/// call after `latency_ms`), its own key prefix, and the processes it started (killed on drop,
/// with its keys deleted).
struct Setup {
    dir: tempfile::TempDir,
    prefix: String,
    children: Vec<Child>,
    _sim: Simulator,
}

impl Setup {
    async fn new(latency_ms: u64) -> Setup {
        Setup::with_redis(latency_ms, "").await
    }

    /// With `redis` added to `[redis]` (for example another `url`).
    async fn with_redis(latency_ms: u64, redis: &str) -> Setup {
        let sim = Simulator::start(
            vec![generate(
                &Cvr::parse("11111111").unwrap(),
                Size::Xs,
                5,
                orgsync_model::time::danish_date(&chrono::Utc::now()),
            )],
            SimOptions {
                latency: LatencyModel::fixed(latency_ms),
                ..SimOptions::default()
            },
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!(
            "test-roles-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap()
        );
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("customers")).unwrap();
        std::fs::write(
            config.join("orgsync.toml"),
            format!(
                "[redis]\nkey_prefix = \"{prefix}\"\n{redis}\n[sts]\nenvironment = \"sim\"\nbase_url = \"{}\"\nmax_calls_per_second = 1000\nmax_in_flight_per_customer = 1\n[runs]\nscheduler_grace_minutes = 0\n",
                sim.base_url()
            ),
        )
        .unwrap();
        std::fs::write(
            config.join("customers/test.toml"),
            format!(
                "cvr = \"11111111\"\nname = \"Test\"\ndomains = [\"{}\"]\n[target]\nkind = \"sqlite\"\npath = {:?}\n",
                domain_of(Size::Xs),
                dir.path().join("target.sqlite").display().to_string()
            ),
        )
        .unwrap();
        Setup {
            dir,
            prefix,
            children: Vec::new(),
            _sim: sim,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Starts `orgsync <args>`; its stderr goes to `<name>.log` in the test directory.
    fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(EXE)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn signal(&self, child: usize, signal: &str) {
        let pid = self.children[child].id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Waits up to `limit` for the child to exit.
    async fn wait_exit(&mut self, child: usize, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.children[child].try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Runs `orgsync --config DIR args...` off the async runtime (the simulator lives on it).
    async fn orgsync(&self, args: &[&str]) -> std::process::Output {
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

    /// Enqueues a run of the customer; returns its id.
    async fn enqueue_run(&self) -> String {
        let out = self.orgsync(&["sync", "11111111"]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text.split_whitespace()
            .skip_while(|w| *w != "run")
            .nth(1)
            .unwrap_or_else(|| panic!("no run id in {text:?}"))
            .to_owned()
    }

    async fn run_state(&self, run_id: &str) -> String {
        let out = self
            .orgsync(&["runs", "show", run_id, "--format", "json"])
            .await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        report["state"].as_str().unwrap_or("").to_owned()
    }

    async fn wait_run_state(&self, run_id: &str, want: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut state = String::new();
        while Instant::now() < deadline {
            state = self.run_state(run_id).await;
            if state == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        state
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli --scan --pattern '{}:*' | xargs -r redis-cli del >/dev/null",
                self.prefix
            ))
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Polls `url` until `check` accepts the answer; returns the last answer.
async fn poll(url: &str, limit: Duration, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + limit;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        if let Some(answer) = get(url).await {
            if check(answer.0, &answer.1) {
                return answer;
            }
            last = answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_serves_its_endpoints_and_on_sigterm_finishes_its_job_then_exits() {
    let mut setup = Setup::new(150).await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let worker = setup.spawn("worker", &["worker", "--metrics-bind", &bind]);
    let base = format!("http://{bind}");

    let (status, body) = poll(
        &format!("{base}/health"),
        Duration::from_secs(20),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "{}",
        setup.log("worker")
    );
    assert_eq!(
        get(&format!("{base}/ready")).await,
        Some((200, "ready\n".to_owned()))
    );
    let (_, metrics) = poll(
        &format!("{base}/metrics"),
        Duration::from_secs(10),
        |_, m| m.contains("orgsync_queue_workers{job_type=\"sync_customer\"} 1"),
    )
    .await;
    for line in [
        "orgsync_queue_workers{job_type=\"sync_customer\"} 1",
        "orgsync_queue_workers{job_type=\"sync_department\"} 1",
        "orgsync_redis_up 1",
        "orgsync_process_info{role=\"worker\",version=\"0.1.0\"} 1",
        "orgsync_process_draining 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE orgsync_queue_jobs gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );

    // A run whose SyncCustomer job is running when SIGTERM arrives still completes: the job
    // (its STS read) is cancelled and handed back, the worker exits 0, and the next worker
    // runs it.
    let run_id = setup.enqueue_run().await;
    let (_, metrics) = poll(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |_, m| m.contains("orgsync_queue_jobs{job_type=\"sync_customer\",state=\"running\"} 1"),
    )
    .await;
    assert!(
        metrics.contains("orgsync_queue_jobs{job_type=\"sync_customer\",state=\"running\"} 1"),
        "{metrics}"
    );
    setup.signal(worker, "-TERM");
    let (status, body) = poll(&format!("{base}/ready"), Duration::from_secs(5), |s, _| {
        s == 503
    })
    .await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    let exit = setup.wait_exit(worker, Duration::from_secs(60)).await;
    let log = setup.log("worker");
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{log}");
    assert!(log.contains("worker draining"), "{log}");
    assert!(log.contains("worker stopped"), "{log}");

    setup.spawn("worker2", &["worker"]);
    let state = setup
        .wait_run_state(&run_id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(state, "succeeded", "{}", setup.log("worker2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_stops_a_worker_at_once_and_another_worker_completes_the_run() {
    // Each STS call takes 400 ms, one at a time: the read takes seconds.
    let mut setup = Setup::new(400).await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let worker = setup.spawn("worker", &["worker", "--metrics-bind", &bind]);
    let base = format!("http://{bind}");
    poll(
        &format!("{base}/health"),
        Duration::from_secs(20),
        |s, _| s == 200,
    )
    .await;
    let run_id = setup.enqueue_run().await;
    let (_, metrics) = poll(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |_, m| m.contains("orgsync_queue_jobs{job_type=\"sync_customer\",state=\"running\"} 1"),
    )
    .await;
    assert!(metrics.contains("state=\"running\"} 1"), "{metrics}");

    // The first signal alone would cancel the read and hand it back within 100 ms (the
    // worker then exits 0; `ending.rs` tests that); the second, 10 ms later, stops it at once.
    setup.signal(worker, "-TERM");
    tokio::time::sleep(Duration::from_millis(10)).await;
    setup.signal(worker, "-INT");
    let started = Instant::now();
    let exit = setup.wait_exit(worker, Duration::from_secs(5)).await;
    let log = setup.log("worker");
    assert!(
        exit.is_some_and(|s| s.code() == Some(1)),
        "{exit:?} after {:?}\n{log}",
        started.elapsed()
    );
    assert!(log.contains("a second signal arrived"), "{log}");
    assert_ne!(setup.run_state(&run_id).await, "succeeded", "left mid-run");

    // Another worker takes the job over once the dead worker's heartbeat has expired (30 s).
    setup.spawn("worker2", &["worker"]);
    let state = setup
        .wait_run_state(&run_id, "succeeded", Duration::from_secs(120))
        .await;
    assert_eq!(state, "succeeded", "{}", setup.log("worker2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_serves_its_endpoints_and_exits_on_sigterm() {
    let mut setup = Setup::new(0).await;
    let bind = format!("127.0.0.1:{}", free_port());
    let scheduler = setup.spawn(
        "scheduler",
        &[
            "scheduler",
            "--metrics-bind",
            &bind,
            "--shutdown-grace",
            "5",
        ],
    );
    let base = format!("http://{bind}");
    let (status, _) = poll(&format!("{base}/ready"), Duration::from_secs(20), |s, _| {
        s == 200
    })
    .await;
    assert_eq!(status, 200, "{}", setup.log("scheduler"));
    let (_, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.contains("orgsync_process_info{role=\"scheduler\""),
        "{metrics}"
    );
    // Its own log lines are counted (it logged that it started).
    let info = metrics
        .lines()
        .find(|l| l.starts_with("orgsync_log_events_total{level=\"info\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(info.is_some_and(|n| n >= 1), "{metrics}");
    setup.signal(scheduler, "-TERM");
    let exit = setup.wait_exit(scheduler, Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        setup.log("scheduler")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_says_503_when_redis_does_not_answer_while_health_stays_200() {
    // A Redis of our own that we stop under the worker.
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut setup = Setup::new(0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bind = format!("127.0.0.1:{}", free_port());
    let config = setup.config();
    let log = std::fs::File::create(setup.dir.path().join("w.log")).unwrap();
    let child = Command::new(EXE)
        .arg("--config")
        .arg(config)
        .args(["worker", "--metrics-bind", &bind])
        .env("ORGSYNC__REDIS__URL", format!("redis://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    setup.children.push(child);
    let base = format!("http://{bind}");
    let (status, _) = poll(&format!("{base}/ready"), Duration::from_secs(20), |s, _| {
        s == 200
    })
    .await;
    assert_eq!(status, 200, "{}", setup.log("w"));
    let _ = redis.kill();
    let _ = redis.wait();
    let (status, body) = poll(&format!("{base}/ready"), Duration::from_secs(15), |s, _| {
        s == 503
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Redis"), "{body}");
    assert_eq!(get(&format!("{base}/health")).await.unwrap().0, 200);
    let (_, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "orgsync_redis_up 0"),
        "{metrics}"
    );
}

/// A CA and a server certificate for `localhost`/127.0.0.1, made with openssl.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=orgsync test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
}

/// A redis-server of our own, listening with TLS only; stopped on drop.
struct TlsRedis(Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_completes_over_rediss_with_the_configured_ca_and_fails_clearly_without_it() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let port = free_port();
    let _redis = TlsRedis(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(certs.path().join("server.pem"))
            .arg("--tls-key-file")
            .arg(certs.path().join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path().join("ca.pem"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = certs.path().join("ca.pem");
    let mut setup = Setup::with_redis(
        0,
        &format!(
            "url = \"rediss://localhost:{port}\"\ntls_ca_file = {:?}",
            ca.display().to_string()
        ),
    )
    .await;
    setup.spawn("worker", &["worker"]);
    let out = setup.orgsync(&["sync", "11111111", "--wait"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("succeeded"),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        setup.log("worker")
    );

    // Without the CA the server's certificate is not trusted: a clear error, no hang.
    let config = setup.config().join("orgsync.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let without: String = toml
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without).unwrap();
    let out = setup.orgsync(&["queue", "stats"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("rediss://localhost:{port}")) && err.contains("unreachable"),
        "{err}"
    );
}

fn keys_with_prefix(prefix: &str) -> usize {
    let out = Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("{prefix}:*")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_says_its_keys_stay_in_a_shared_redis_and_removes_them_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("test-demo-keys-{}", std::process::id());
    let demo = |extra: &'static [&'static str]| {
        let (dir, prefix) = (dir.path().to_owned(), prefix.clone());
        tokio::task::spawn_blocking(move || {
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
                .arg(dir.join("demo"))
                .args(extra)
                // The shared Redis of the tests, as the demo finds it in config/orgsync.toml.
                .env("ORGSYNC__REDIS__URL", "redis://127.0.0.1:6379")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .arg("--config")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let out = demo(&[]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("under the key prefix {prefix}")) && text.contains("--remove-keys"),
        "{text}"
    );
    assert!(keys_with_prefix(&prefix) > 0, "the run's keys stay");

    let out = demo(&["--remove-keys"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Removed the demo's"), "{text}");
    assert_eq!(keys_with_prefix(&prefix), 0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_demo_prints_follow_up_commands_with_the_built_binary_not_cargo() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("test-demo-exe-{}", std::process::id());
    let mut child = Command::new(EXE)
        .args(["demo", "--size", "xs", "--key-prefix", &prefix, "--dir"])
        .arg(dir.path().join("demo"))
        .arg("--config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
        .env("ORGSYNC__REDIS__URL", "redis://127.0.0.1:6379")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.trim_end().ends_with(" runs");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines)
        .await
        .expect("the demo printed its follow-up commands")
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli --scan --pattern '{prefix}:*' | xargs -r redis-cli del >/dev/null"
        ))
        .status();
    let text = lines.join("\n");
    let exe = std::fs::canonicalize(EXE).unwrap();
    assert!(
        text.contains(&format!("{} --config", exe.display())) && !text.contains("cargo run"),
        "{text}"
    );
}

#[test]
fn an_unreachable_redis_is_reported_once_with_its_cause_said_once() {
    let port = free_port();
    let out = Command::new(EXE)
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        ])
        .args(["queue", "stats"])
        .env("ORGSYNC__REDIS__URL", format!("redis://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("Redis at redis://127.0.0.1:{port} is unreachable")),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}
