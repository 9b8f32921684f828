//! Secrets and tenants, end to end through the binary: a Redis password, a certificate
//! password, three customers' SCIM tokens and a Zendesk token are set; a worker logs at trace
//! level while it syncs two customers into their own SCIM servers (each behind a proxy that
//! records every request) and a third whose target refuses its token, which opens a Zendesk
//! ticket. Then no secret appears in any log line, CLI output, metric, ticket or byte written to
//! Redis (its append-only file), and each customer's requests reached only its own target with
//! only its own token and its own municipality's objects.
//!
//! Needs `redis-server`, `openssl` and `scim2-server` (`.ci/run` installs them).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

#[path = "../../orgsync-support/tests/common/mod.rs"]
mod zendesk;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};

const EXE: &str = env!("CARGO_BIN_EXE_orgsync");

const REDIS_PASSWORD: &str = "redis-Pw-8c1f2e77";
const CERT_PASSWORD: &str = "cert-Pw-41d9aa03";
const TOKEN_A: &str = "scim-A-tok-5e7b0c19";
const TOKEN_B: &str = "scim-B-tok-93a1d4f2";
const TOKEN_C: &str = "scim-C-tok-refused-2b6f";
const SECRETS: [&str; 6] = [
    REDIS_PASSWORD,
    CERT_PASSWORD,
    TOKEN_A,
    TOKEN_B,
    TOKEN_C,
    zendesk::TOKEN,
];

const CVR_A: &str = "11111111";
const CVR_B: &str = "29189846";
const CVR_C: &str = "12345674";
const SEED: u64 = 7;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Child processes, killed on drop.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request a recording proxy forwarded.
#[derive(Clone, Debug)]
struct Seen {
    authorization: String,
    path: String,
    body: String,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    client: reqwest::Client,
}

/// Forwards everything to `upstream`, recording each request's Authorization, path and body.
async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let path = uri
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    proxy.seen.lock().unwrap().push(Seen {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        path: path.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut request = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name == "content-type" || name == "location" || name == "etag" {
            out.insert(name, value.clone());
        }
    }
    (status, out, answer.bytes().await.unwrap())
}

/// A scim2-server for one tenant with its bearer token, behind a recording proxy: the base URL
/// (through the proxy) and what the proxy saw.
async fn scim_behind_proxy(
    children: &mut Children,
    tenant: &str,
    token: &str,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let port = free_port();
    children.0.push(
        Command::new("scim2-server")
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--tenant", tenant, "--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("scim2-server starts (pip install scim2-server; .ci/run does)"),
    );
    wait_for_port(port, "scim2-server");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        upstream: format!("http://127.0.0.1:{port}"),
        seen: seen.clone(),
        client: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/{tenant}/v2/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn make_p12(pki: &Path, out: &Path) {
    let output = Command::new("openssl")
        .args(["pkcs12", "-export", "-name", "orgsync test"])
        .arg("-in")
        .arg(pki.join("client.pem"))
        .arg("-inkey")
        .arg(pki.join("client-key.pem"))
        .arg("-out")
        .arg(out)
        .args(["-passout", &format!("pass:{CERT_PASSWORD}")])
        .output()
        .expect("openssl is needed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn customer_file(config: &Path, cvr: &str, base_url: &str, token_env: &str) {
    std::fs::write(
        config.join(format!("customers/{cvr}.toml")),
        format!(
            "cvr = \"{cvr}\"\nname = \"Kommune {cvr}\"\ndomains = [\"{}\"]\n[target]\nkind = \"scim\"\nbase_url = \"{base_url}\"\ntoken_env = \"{token_env}\"\n",
            domain_of(Size::Xs)
        ),
    )
    .unwrap();
}

struct World {
    dir: tempfile::TempDir,
    metrics: String,
    zendesk: zendesk::FakeZendesk,
    children: Children,
}

impl World {
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `orgsync <args>` with every secret in its environment, as the roles have them.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(EXE);
        for (name, _) in std::env::vars() {
            if name.starts_with("ORGSYNC") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env("RUST_LOG", "trace")
            .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", CERT_PASSWORD)
            .env("ORGSYNC_SCIM_TOKEN_A", TOKEN_A)
            .env("ORGSYNC_SCIM_TOKEN_B", TOKEN_B)
            .env("ORGSYNC_SCIM_TOKEN_C", TOKEN_C)
            .env("ORGSYNC_ZENDESK_TOKEN", zendesk::TOKEN);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file under `dir`, as (name, lossy text).
fn files_text(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_text(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

async fn start() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Children::default();

    // Redis with a password, every write kept in its append-only file.
    let redis_port = free_port();
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    children.0.push(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--requirepass", REDIS_PASSWORD])
            .arg("--dir")
            .arg(&redis_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    wait_for_port(redis_port, "redis-server");

    // The signed simulator (three municipalities) and a PKCS#12 file with a password.
    let sim_port = free_port();
    let pki = dir.path().join("pki");
    children.0.push(
        Command::new(EXE)
            .args(["sim", "--bind", &format!("127.0.0.1:{sim_port}")])
            .args([
                "--size",
                "xs",
                "--seed",
                &SEED.to_string(),
                "--latency-ms",
                "0",
            ])
            .args(["--cvr", CVR_A, "--cvr", CVR_B, "--cvr", CVR_C])
            .arg("--require-signatures")
            .arg("--pki-dir")
            .arg(&pki)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(sim_port, "orgsync sim");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pki.join("client-key.pem").exists() {
        assert!(Instant::now() < deadline, "orgsync sim wrote no keys");
        std::thread::sleep(Duration::from_millis(50));
    }
    let p12 = dir.path().join("system.p12");
    make_p12(&pki, &p12);

    let zendesk = zendesk::FakeZendesk::start().await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    std::fs::write(
        config.join("orgsync.toml"),
        format!(
            r#"[redis]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}"
key_prefix = "test-secrets"

[sts]
environment = "sim"
signed = true
base_url = "https://127.0.0.1:{sim_port}/organisation/"
certificate_file = {p12:?}
tls_ca_file = {ca:?}
sts_certificate_files = [{sts:?}]
max_calls_per_second = 1000

[support]
sink = "zendesk"
zendesk_url = "{zendesk_url}"
zendesk_email = "{email}"
zendesk_token_env = "ORGSYNC_ZENDESK_TOKEN"
open_after_runs = 1

[log]
level = "trace"
format = "json"
"#,
            p12 = p12.display().to_string(),
            ca = pki.join("ca.pem").display().to_string(),
            sts = pki.join("sts.pem").display().to_string(),
            zendesk_url = zendesk.url,
            email = zendesk::EMAIL,
        ),
    )
    .unwrap();
    World {
        dir,
        metrics,
        zendesk,
        children,
    }
}

/// UUIDs of the municipality the simulator serves for `cvr` (its `index`-th `--cvr`).
fn uuids_of(cvr: &str, index: u64) -> BTreeSet<String> {
    let truth = generate(
        &Cvr::parse(cvr).unwrap(),
        Size::Xs,
        SEED + index,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    truth
        .units
        .iter()
        .map(|u| u.uuid.to_string())
        .chain(truth.users.iter().map(|u| u.uuid.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_anywhere_and_each_customer_reaches_only_its_own_target() {
    let mut world = start().await;
    let (url_a, seen_a) = scim_behind_proxy(&mut world.children, CVR_A, TOKEN_A).await;
    let (url_b, seen_b) = scim_behind_proxy(&mut world.children, CVR_B, TOKEN_B).await;
    // C's target answers, but not to C's token (it is A's server: a refused token must not make
    // orgsync try another customer's).
    let config = world.config();
    customer_file(&config, CVR_A, &url_a, "ORGSYNC_SCIM_TOKEN_A");
    customer_file(&config, CVR_B, &url_b, "ORGSYNC_SCIM_TOKEN_B");
    let (url_c, seen_c) = scim_behind_proxy(&mut world.children, CVR_C, "another-token").await;
    customer_file(&config, CVR_C, &url_c, "ORGSYNC_SCIM_TOKEN_C");

    // Valid, but C's target refuses C's token: its health check says so (and exits non-zero).
    let check = world.run(&["config", "check"]);
    assert!(
        text(&check).contains("1 health check failed"),
        "{}",
        text(&check)
    );

    let log = std::fs::File::create(world.dir.path().join("worker.log")).unwrap();
    let worker = world
        .command(&["worker", "--metrics-bind", &world.metrics])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    world.children.0.push(worker);

    let mut outputs = vec![("config check".to_owned(), text(&check))];
    for cvr in [CVR_A, CVR_B, CVR_C] {
        let sync = world.run(&["sync", cvr, "--wait"]);
        let out = text(&sync);
        if cvr == CVR_C {
            assert!(
                !sync.status.success(),
                "C's target refuses its token: {out}"
            );
        } else {
            assert!(sync.status.success(), "{cvr}: {out}");
        }
        outputs.push((format!("sync {cvr}"), out));
    }
    for args in [
        &["runs"][..],
        &["runs", "--format", "json"],
        &["queue", "stats"],
        &["queue", "stats", "--format", "json"],
        &["dlq", "list"],
        &["dlq", "list", "--format", "json"],
    ] {
        outputs.push((args.join(" "), text(&world.run(args))));
    }
    let runs: serde_json::Value =
        serde_json::from_slice(&world.run(&["runs", "--format", "json"]).stdout).unwrap();
    let ids: Vec<String> = runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .expect("runs --format json gives the runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str().or(r["id"].as_str()).map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 3, "{runs}");
    for id in &ids {
        outputs.push((
            format!("runs show {id}"),
            text(&world.run(&["runs", "show", id])),
        ));
        outputs.push((
            format!("runs show {id} --format json"),
            text(&world.run(&["runs", "show", id, "--format", "json"])),
        ));
    }
    let metrics = reqwest::get(format!("http://{}/metrics", world.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("orgsync_"), "{metrics}");
    outputs.push(("metrics".to_owned(), metrics));

    // C's refused token opened a ticket (open_after_runs = 1).
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.zendesk.tickets().is_empty() {
        assert!(Instant::now() < deadline, "no ticket was opened for C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tickets = world.zendesk.all_text();
    assert!(
        tickets.iter().any(|t| t.contains(CVR_C)),
        "the ticket names C: {tickets:?}"
    );

    // Stop the worker so that its log and Redis's append-only file are complete.
    for child in &mut world.children.0 {
        let _ = child.kill();
        let _ = child.wait();
    }
    world.children.0.clear();

    let worker_log = std::fs::read_to_string(world.dir.path().join("worker.log")).unwrap();
    assert!(
        worker_log.lines().count() > 1000,
        "a trace-level worker logs a lot: {} lines",
        worker_log.lines().count()
    );
    outputs.push(("worker log".to_owned(), worker_log));
    for ticket in tickets {
        outputs.push(("ticket".to_owned(), ticket));
    }
    let aof = files_text(&world.dir.path().join("redis"));
    assert!(
        aof.iter().any(|(_, t)| t.contains("test-secrets")),
        "the append-only file holds orgsync's writes"
    );
    outputs.extend(aof);

    let mut leaks = Vec::new();
    for (source, text) in &outputs {
        for secret in SECRETS {
            if let Some(at) = text.find(secret) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(120)
                    .map_or(0, |(i, _)| i);
                leaks.push(format!("{source}: …{}", &text[from..at]));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets appeared in:\n{}",
        leaks.join("\n")
    );

    // Tenants: each proxy saw only its customer's token and its municipality's objects.
    let (a, b, c) = (uuids_of(CVR_A, 0), uuids_of(CVR_B, 1), uuids_of(CVR_C, 2));
    for (name, seen, token, own, others) in [
        ("A", &seen_a, TOKEN_A, &a, [&b, &c]),
        ("B", &seen_b, TOKEN_B, &b, [&a, &c]),
        ("C", &seen_c, TOKEN_C, &c, [&a, &b]),
    ] {
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{name}'s target got no request");
        let tokens: BTreeSet<&str> = seen.iter().map(|s| s.authorization.as_str()).collect();
        assert_eq!(
            tokens,
            BTreeSet::from([format!("Bearer {token}").as_str()]),
            "{name}'s target saw another token"
        );
        let bodies: String = seen
            .iter()
            .map(|s| format!("{} {}\n", s.path, s.body))
            .collect();
        if name != "C" {
            assert!(
                own.iter().any(|u| bodies.contains(u.as_str())),
                "{name}'s target got its municipality's objects"
            );
        }
        for other in others {
            let foreign: Vec<&String> = other
                .iter()
                .filter(|u| bodies.contains(u.as_str()))
                .collect();
            assert!(
                foreign.is_empty(),
                "{name}'s target got another municipality's objects: {foreign:?}"
            );
        }
    }
    // The private Redis (killed above) kept its files in the test's directory: nothing is left
    // behind.
}
