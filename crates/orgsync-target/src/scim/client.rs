//! SCIM over HTTP: bearer authentication, bounded concurrency, 429 `Retry-After`, paging
//! (`startIndex` or RFC 9865 cursors), and errors mapped to [`TargetError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::ScimOptions;
use crate::TargetError;

/// The media type of SCIM bodies.
const SCIM_JSON: &str = "application/scim+json";

/// A SCIM answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) body: Option<Value>,
}

/// One customer's HTTP connection to its SCIM service provider.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    options: ScimOptions,
    permits: Semaphore,
    requests: AtomicU64,
}

impl Client {
    pub(crate) fn new(options: ScimOptions) -> Result<Client, TargetError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("orgsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TargetError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            permits: Semaphore::new(options.max_in_flight.max(1)),
            options,
            requests: AtomicU64::new(0),
        })
    }

    pub(crate) fn options(&self) -> &ScimOptions {
        &self.options
    }

    /// Requests sent so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends one request; `object` names what it is about in errors. 2xx answers are `Ok`; every other status is an error (404 included: see `endpoint_missing`).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
        object: &str,
    ) -> Result<Reply, TargetError> {
        let url = self.options.base_url.join(path).map_err(|e| {
            TargetError::Config(format!("cannot join {path:?} onto the SCIM base URL: {e}"))
        })?;
        let mut rate_limited = 0;
        loop {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| TargetError::Config("the SCIM client was closed".to_owned()))?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .query(query)
                .bearer_auth(self.options.token.expose_secret())
                .header(reqwest::header::ACCEPT, SCIM_JSON);
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, SCIM_JSON)
                    .body(body.to_string());
            }
            if let Some(version) = if_match {
                request = request.header(reqwest::header::IF_MATCH, version);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response
                .text()
                .await
                .map_err(|e| self.transport_error(&e))?;
            let body: Option<Value> = if text.trim().is_empty() {
                None
            } else {
                Some(serde_json::from_str(&text).map_err(|e| {
                    TargetError::Malformed(format!(
                        "{method} {path} answered {status} with a body that is not JSON: {e}"
                    ))
                })?)
            };
            if status.is_success() {
                return Ok(Reply { body });
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                if rate_limited < self.options.max_rate_limit_retries
                    && wait <= self.options.max_retry_after
                {
                    rate_limited += 1;
                    tracing::info!(
                        wait_s = wait.as_secs(),
                        "the SCIM target asked to slow down; waiting"
                    );
                    drop(_permit);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(TargetError::RateLimited { retry_after });
            }
            return Err(status_error(status, body.as_ref(), object));
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> TargetError {
        if e.is_timeout() {
            TargetError::Timeout(self.options.timeout)
        } else {
            // reqwest's messages name the URL, never the headers: the token stays out.
            TargetError::Unreachable(format!("{} ({e})", self.options.base_url))
        }
    }

    /// Every resource of an endpoint matching `filter`, page by page.
    pub(crate) async fn list(
        &self,
        endpoint: &str,
        filter: Option<String>,
        cursor_paging: bool,
    ) -> Result<Vec<Value>, TargetError> {
        let page_size = self.options.page_size.max(1);
        let mut all = Vec::new();
        let mut start_index: u64 = 1;
        let mut cursor = String::new();
        for _page in 0..100_000 {
            let mut query = vec![("count", page_size.to_string())];
            if let Some(filter) = &filter {
                query.push(("filter", filter.clone()));
            }
            if cursor_paging {
                query.push(("cursor", cursor.clone()));
            } else {
                query.push(("startIndex", start_index.to_string()));
            }
            let reply = self
                .send(Method::GET, endpoint, &query, None, None, endpoint)
                .await
                .map_err(|e| endpoint_missing(e, endpoint))?;
            let body = reply.body.unwrap_or(Value::Null);
            let resources = body
                .get("Resources")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = body
                .get("totalResults")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let n = resources.len() as u64;
            all.extend(resources);
            if cursor_paging {
                match body.get("nextCursor").and_then(Value::as_str) {
                    Some(next) if !next.is_empty() && n > 0 => cursor = next.to_owned(),
                    _ => return Ok(all),
                }
            } else {
                start_index += n;
                if n == 0 || all.len() as u64 >= total {
                    return Ok(all);
                }
            }
        }
        Err(TargetError::Malformed(format!(
            "{endpoint}: paging did not end"
        )))
    }
}

/// Maps a non-2xx answer to an error, keeping the SCIM `scimType` and `detail`.
fn status_error(status: StatusCode, body: Option<&Value>, object: &str) -> TargetError {
    let error: Option<scim_v2::models::errors::ScimHttpError> =
        body.and_then(|b| serde_json::from_value(b.clone()).ok());
    let detail = error
        .as_ref()
        .and_then(|e| e.detail.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no detail").to_owned());
    let scim_type = error
        .and_then(|e| e.scim_type)
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    match status.as_u16() {
        401 | 403 => TargetError::Unauthorized {
            status: status.as_u16(),
            detail,
        },
        412 => TargetError::Conflict {
            object: object.to_owned(),
        },
        code @ 500..=599 => TargetError::Server {
            status: code,
            detail,
        },
        code => TargetError::Rejected {
            object: object.to_owned(),
            status: code,
            scim_type,
            detail,
        },
    }
}

/// A 404 on a list or search is not one missing object but a wrong base URL (another tenant,
/// a missing `/v2`): a run-level configuration error.
pub(crate) fn endpoint_missing(error: TargetError, endpoint: &str) -> TargetError {
    match error {
        TargetError::Rejected { status: 404, .. } => TargetError::Config(format!(
            "the SCIM endpoint {endpoint} does not exist at the configured base URL (HTTP 404); check target.base_url"
        )),
        other => other,
    }
}
