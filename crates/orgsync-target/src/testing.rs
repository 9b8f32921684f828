//! A real `scim2-server` (PyPI) for tests of orgsync and of crates built on it (enabled by the
//! `testing` feature): one tenant per CVR, orgsync's extension schemas and resource types
//! loaded, a bearer token, and its request log for counting writes at the server.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test harness: a panic is the failure message

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bearer token the server accepts.
pub const TOKEN: &str = "contract-test-token";

/// A running scim2-server, killed when dropped.
#[derive(Debug)]
pub struct ScimServer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/<cvr>/v2/`.
    pub base_url: String,
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_resources() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import scim2_server, os; print(os.path.dirname(scim2_server.__file__))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "scim2-server is not installed: `pip install scim2-server` (.ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("resources")
}

/// Writes the schema file scim2-server needs: RFC 7643's schemas plus orgsync's extensions.
fn schema_file(dir: &Path) -> PathBuf {
    let mut schemas: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(python_resources().join("default-schemas.json")).unwrap(),
    )
    .unwrap();
    let ours: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../scim/orgsync-schemas.json")).unwrap();
    schemas.extend(ours);
    let path = dir.join("schemas.json");
    std::fs::write(&path, serde_json::to_string(&schemas).unwrap()).unwrap();
    path
}

impl ScimServer {
    /// Starts a server with a tenant for `cvr` accepting [`TOKEN`], and waits until it answers.
    pub async fn start(cvr: &str) -> ScimServer {
        let dir = tempfile::tempdir().unwrap();
        let schemas = schema_file(dir.path());
        let resource_types =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scim/orgsync-resource-types.json");
        let log = dir.path().join("requests.log");
        let port = free_port();
        let child = Command::new("scim2-server")
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--tenant", cvr, "--bearer-token", TOKEN])
            .arg("--schema")
            .arg(&schemas)
            .arg("--resource-type")
            .arg(&resource_types)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("scim2-server starts (pip install scim2-server)");
        let base_url = format!("http://127.0.0.1:{port}/{cvr}/v2/");
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            let ready = http
                .get(format!("{base_url}ServiceProviderConfig"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scim2-server did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ScimServer {
            child,
            log,
            _dir: dir,
            base_url,
        }
    }

    /// The server's request log lines (one per HTTP request).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                ["\"GET ", "\"POST ", "\"PATCH ", "\"PUT ", "\"DELETE "]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Write requests (everything but GET) the server has logged so far.
    pub async fn writes(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(50)).await; // let the log catch up
        self.requests()
            .iter()
            .filter(|l| !l.contains("\"GET "))
            .count() as u64
    }
}
