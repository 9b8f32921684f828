//! Test harnesses: a real `scim2-server` (PyPI) per test with a tenant per CVR and the orgsync
//! extension schemas, counting write requests in its request log; and an SQLite file counting
//! changed rows. Both behind one trait so the contract scenarios run unchanged on each.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::PathBuf;

use async_trait::async_trait;
use orgsync_model::ids::Cvr;
use orgsync_model::policy::Mappings;
use orgsync_target::Target;
use orgsync_target::scim::{ScimOptions, ScimTarget};
use orgsync_target::sqlite::{SqliteOptions, SqliteTarget};
use orgsync_target::testing::ScimServer;
use secrecy::SecretString;

pub const CVR: &str = "11111111";
pub use orgsync_target::testing::TOKEN;

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
    server: ScimServer,
    pub base_url: String,
    target: ScimTarget,
}

impl ScimHarness {
    pub async fn start(mappings: Mappings) -> ScimHarness {
        Self::start_with_token(mappings, TOKEN).await
    }

    /// Starts a server accepting [`TOKEN`]; the adapter uses `client_token`.
    pub async fn start_with_token(mappings: Mappings, client_token: &str) -> ScimHarness {
        let server = ScimServer::start(CVR).await;
        let base_url = server.base_url.clone();
        let mut options = ScimOptions::new(
            base_url.parse().unwrap(),
            SecretString::from(client_token.to_owned()),
            Cvr::parse(CVR).unwrap(),
            mappings,
        );
        options.page_size = 3; // small pages, so every read pages
        let target = ScimTarget::new(options).unwrap();
        ScimHarness {
            server,
            base_url,
            target,
        }
    }

    /// The server's request log lines.
    pub fn requests(&self) -> Vec<String> {
        self.server.requests()
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
        self.server.writes().await
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
