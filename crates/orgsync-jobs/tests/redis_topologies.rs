//! A pipeline run on the Redis deployments suppliers run: a primary with a replica watched by
//! three sentinels (with the primary killed in the middle of a run), and a three-primary
//! Redis Cluster. Each test starts its own `redis-server` processes on free loopback ports
//! and kills them when it ends, also on a failed assertion.
#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests: a panic is the failure message; figures go to stderr

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestApp;
use orgsync_jobs::report::RunState;
use orgsync_model::ids::Domain;
use orgsync_model::testing::policy;
use orgsync_queue::{DeadLetterFilter, QueueConfig, RedisTopology};
use orgsync_sts_sim::generate::{Size, domain_of, generate};

/// How long a private deployment may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `redis-server` processes of one test, killed on drop.
struct Servers {
    dir: tempfile::TempDir,
    children: Vec<(u16, Child)>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Servers {
    fn new() -> Servers {
        Servers {
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// Starts `redis-server` with `args` on a free port; returns the port.
    fn start(&mut self, args: &[&str]) -> u16 {
        let port = free_port();
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is needed");
        self.children.push((port, child));
        wait_for(port, "PING", |reply| reply == "PONG");
        port
    }

    /// Starts a sentinel watching `primary` as `orgsync` (quorum 2, down after 1 s).
    fn start_sentinel(&mut self, primary: u16) -> u16 {
        let port = free_port();
        let conf = self.dir.path().join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {}\n\
                 sentinel monitor orgsync 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds orgsync 1000\n\
                 sentinel failover-timeout orgsync 3000\n\
                 sentinel parallel-syncs orgsync 1\n",
                self.dir.path().display()
            ),
        )
        .unwrap();
        // `redis-sentinel` is `redis-server --sentinel`; the latter needs no other package.
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push((port, child));
        wait_for(port, "PING", |reply| reply == "PONG");
        port
    }

    /// Kills the server on `port` at once (SIGKILL, as a crashed host).
    fn kill(&mut self, port: u16) {
        let (_, child) = self.children.iter_mut().find(|(p, _)| *p == port).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-cli -p PORT ARGS...`, its output trimmed.
fn cli(port: u16, args: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `redis-cli -p port args` answers something `ready` accepts.
fn wait_for(port: u16, args: &str, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let reply = cli(port, args);
        if ready(&reply) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port {port} never answered `{args}` as expected; last: {reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `field:` in an INFO-style reply.
fn info_field(reply: &str, field: &str) -> Option<String> {
    reply
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// The generated xs municipality and a policy that accepts its mail domain.
fn xs_municipality() -> (
    orgsync_model::snapshot::Snapshot,
    orgsync_model::policy::Policy,
) {
    let truth = generate(
        &common::cvr(),
        Size::Xs,
        7,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    let mut policy = policy();
    policy.domains = vec![Domain::parse(&domain_of(Size::Xs)).unwrap()];
    (truth, policy)
}

/// The run ended well and the queue holds nothing for it any more: no dead letter, no
/// waiting, running or scheduled job.
async fn assert_complete(app: &TestApp, report: &orgsync_jobs::report::RunReport) {
    assert_eq!(report.state, RunState::Succeeded, "{}", report.to_text());
    assert!(report.departments_total > 1, "{}", report.to_text());
    assert_eq!(
        report.departments_done,
        report.departments_total,
        "{}",
        report.to_text()
    );
    let summary = report.summary.as_ref().unwrap();
    let state = app.state().await;
    assert_eq!(state.users.len(), summary.users.create as usize);
    assert_eq!(state.departments.len(), summary.departments.create as usize);
    assert!(
        app.queue
            .dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let stats = app.queue.stats().await.unwrap();
    for t in &stats.job_types {
        assert_eq!(
            (t.waiting, t.running, t.scheduled),
            (0, 0, 0),
            "job type {} still holds jobs",
            t.job_type
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_sentinel_survives_the_primary_being_killed_midway_and_loses_no_job() {
    let mut servers = Servers::new();
    let primary = servers.start(&[]);
    let replica = servers.start(&["--replicaof", "127.0.0.1", &primary.to_string()]);
    wait_for(replica, "INFO replication", |r| {
        info_field(r, "master_link_status").as_deref() == Some("up")
    });
    let sentinels: Vec<u16> = (0..3).map(|_| servers.start_sentinel(primary)).collect();
    // Every sentinel knows the replica and the two other sentinels, so a failover can start.
    for &s in &sentinels {
        wait_for(s, "SENTINEL MASTER orgsync", |r| {
            let fields: Vec<&str> = r.lines().collect();
            let value = |name: &str| {
                fields
                    .iter()
                    .position(|f| *f == name)
                    .and_then(|i| fields.get(i + 1))
                    .copied()
            };
            value("num-slaves") == Some("1") && value("num-other-sentinels") == Some("2")
        });
    }
    let mut config = QueueConfig::new("redis://ignored-with-sentinels:1", "");
    config.topology = RedisTopology::Sentinel {
        sentinels: sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        master_name: "orgsync".to_owned(),
    };
    config.response_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    let (truth, policy) = xs_municipality();
    let app = TestApp::start_on_redis(truth, policy, config).await;
    // A slow target keeps the run going through the failover.
    app.slow_writes(Duration::from_millis(250));

    let started = Instant::now();
    let run = app
        .pipeline
        .enqueue_run(
            common::CVR,
            orgsync_jobs::report::Trigger::Manual {
                by: "test".to_owned(),
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    // Midway: the department jobs have begun writing users, most are still to come.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.state().await.users.len() < 10 {
        assert!(Instant::now() < deadline, "no user was written within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let midway = app.pipeline.report(&run.run_id).await.unwrap();
    assert!(
        !midway.state.is_final(),
        "the run must still be going when the primary dies: {}",
        midway.to_text()
    );
    servers.kill(primary);
    let killed = Instant::now();
    // The first write that succeeds after the kill, through the queue's own connection.
    let failover = loop {
        if app
            .queue
            .put_value("failover-probe", b"1", Some(Duration::from_secs(60)))
            .await
            .is_ok()
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no write succeeded within 30 s of killing the primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        cli(replica, "ROLE").starts_with("master"),
        "the replica was promoted"
    );
    let report = app.wait(&run.run_id).await;
    let total = started.elapsed();
    assert_complete(&app, &report).await;
    eprintln!(
        "sentinel: failover seen by the run {} ms (primary killed -> first successful write); run {} ms ({} departments)",
        failover.as_millis(),
        total.as_millis(),
        report.departments_total
    );
    app.finish().await;
    assert_eq!(cli(replica, "DBSIZE"), "0", "finish removed every key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_three_primary_cluster_completes_with_every_key_on_one_node() {
    let mut servers = Servers::new();
    let nodes: Vec<u16> = (0..3)
        .map(|i| {
            let conf = format!("nodes-{i}.conf");
            servers.start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ])
        })
        .collect();
    let addresses: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .current_dir(servers.dir())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    for &node in &nodes {
        wait_for(node, "CLUSTER INFO", |r| {
            info_field(r, "cluster_state").as_deref() == Some("ok")
        });
    }
    let mut config = QueueConfig::new(format!("redis://127.0.0.1:{}", nodes[0]), "");
    config.topology = RedisTopology::Cluster;
    let (truth, policy) = xs_municipality();
    let app = TestApp::start_on_redis(truth, policy, config).await;

    let started = Instant::now();
    let report = app.sync().await;
    let total = started.elapsed();
    assert_complete(&app, &report).await;
    // Every key of the installation shares the prefix's hash tag: one node holds them all.
    let sizes: Vec<u64> = nodes
        .iter()
        .map(|&n| cli(n, "DBSIZE").parse().unwrap())
        .collect();
    assert_eq!(
        sizes.iter().filter(|&&n| n > 0).count(),
        1,
        "keys per node: {sizes:?}"
    );
    eprintln!(
        "cluster: run {} ms ({} departments); keys per node {sizes:?}",
        total.as_millis(),
        report.departments_total
    );
    app.finish().await;
    for &n in &nodes {
        assert_eq!(cli(n, "DBSIZE"), "0", "finish removed every key");
    }
}
