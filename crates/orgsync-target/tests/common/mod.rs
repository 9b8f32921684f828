//! Test harnesses: a real `scim2-server` (PyPI) per test with a tenant per CVR and the orgsync
//! extension schemas, counting write requests in its request log; and an SQLite file counting
//! changed rows. Both behind one trait so the contract scenarios run unchanged on each.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orgsync_model::ids::Cvr;
use orgsync_model::policy::Mappings;
use orgsync_target::Target;
use orgsync_target::scim::{ScimOptions, ScimTarget};
use orgsync_target::sqlite::{SqliteOptions, SqliteTarget};
use secrecy::SecretString;

pub const CVR: &str = "11111111";
pub const TOKEN: &str = "contract-test-token";

/// A target under test plus a way to count writes at the server and to seed objects that
/// another source (a person in the HR system) made.
#[async_trait]
pub trait Harness: Send + Sync {
    fn name(&self) -> &'static str;
    fn target(&self) -> &dyn Target;
    /// Writes the server has seen so far.
    async fn writes(&self) -> u64;
    /// A user made by hand in the target, optionally carrying another source's external id.
    async fn seed_user(&self, user_name: &str, external_id: Option<&str>);
}

// ---- SCIM ------------------------------------------------------------------------------------

pub struct ScimHarness {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub base_url: String,
    target: ScimTarget,
}

impl Drop for ScimHarness {
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
        serde_json::from_str(include_str!("../../scim/orgsync-schemas.json")).unwrap();
    schemas.extend(ours);
    let path = dir.join("schemas.json");
    std::fs::write(&path, serde_json::to_string(&schemas).unwrap()).unwrap();
    path
}

impl ScimHarness {
    pub async fn start(mappings: Mappings) -> ScimHarness {
        Self::start_with_token(mappings, TOKEN).await
    }

    /// Starts a server accepting [`TOKEN`]; the adapter uses `client_token`.
    pub async fn start_with_token(mappings: Mappings, client_token: &str) -> ScimHarness {
        let dir = tempfile::tempdir().unwrap();
        let schemas = schema_file(dir.path());
        let resource_types =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scim/orgsync-resource-types.json");
        let log = dir.path().join("requests.log");
        let port = free_port();
        let child = Command::new("scim2-server")
            .args([
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--tenant",
                CVR,
                "--bearer-token",
                TOKEN,
            ])
            .arg("--schema")
            .arg(&schemas)
            .arg("--resource-type")
            .arg(&resource_types)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("scim2-server starts (pip install scim2-server)");
        let base_url = format!("http://127.0.0.1:{port}/{CVR}/v2/");
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
        let mut options = ScimOptions::new(
            base_url.parse().unwrap(),
            SecretString::from(client_token.to_owned()),
            Cvr::parse(CVR).unwrap(),
            mappings,
        );
        options.page_size = 3; // small pages, so every read pages
        let target = ScimTarget::new(options).unwrap();
        ScimHarness {
            child,
            log,
            _dir: dir,
            base_url,
            target,
        }
    }

    /// The server's request log lines.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("\"GET ")
                    || l.contains("\"POST ")
                    || l.contains("\"PATCH ")
                    || l.contains("\"PUT ")
                    || l.contains("\"DELETE ")
            })
            .map(str::to_owned)
            .collect()
    }
}

#[async_trait]
impl Harness for ScimHarness {
    fn name(&self) -> &'static str {
        "scim"
    }

    fn target(&self) -> &dyn Target {
        &self.target
    }

    async fn writes(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(50)).await; // let the log catch up
        self.requests()
            .iter()
            .filter(|l| !l.contains("\"GET "))
            .count() as u64
    }

    async fn seed_user(&self, user_name: &str, external_id: Option<&str>) {
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "name": {"givenName": "Made", "familyName": "Byhand"},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "active": true
        });
        if let Some(id) = external_id {
            body["externalId"] = serde_json::json!(id);
        }
        let response = reqwest::Client::new()
            .post(format!("{}Users", self.base_url))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}

// ---- SQLite ----------------------------------------------------------------------------------

pub struct SqliteHarness {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    target: SqliteTarget,
}

impl SqliteHarness {
    pub async fn start(mappings: Mappings) -> SqliteHarness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/directory.sqlite");
        let target = SqliteTarget::open(SqliteOptions {
            path: path.clone(),
            cvr: Cvr::parse(CVR).unwrap(),
            mappings,
        })
        .await
        .unwrap();
        SqliteHarness {
            path,
            _dir: dir,
            target,
        }
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn target(&self) -> &dyn Target {
        &self.target
    }

    async fn writes(&self) -> u64 {
        self.target.total_changes().await.unwrap()
    }

    async fn seed_user(&self, user_name: &str, external_id: Option<&str>) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute(
            "INSERT INTO users (cvr, external_id, user_name, email, first_name, last_name, active, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?3, 'Made', 'Byhand', 1, 'now', 'now')",
            rusqlite::params![CVR, external_id, user_name],
        )
        .unwrap();
    }
}

/// Both harnesses, for a scenario to run on each.
pub async fn both(mappings: Mappings) -> Vec<Box<dyn Harness>> {
    vec![
        Box::new(SqliteHarness::start(mappings).await),
        Box::new(ScimHarness::start(mappings).await),
    ]
}
