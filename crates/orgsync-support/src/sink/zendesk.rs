//! Zendesk Support's ticket API over reqwest (rustls): create with `external_id` and an
//! `Idempotency-Key`, find by `external_id`, read a ticket's status, add private comments.
//! Authentication is an API token (`{email}/token:{token}`, HTTP Basic); a 429 is waited out
//! for its `Retry-After`, a bounded number of times.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::{NewTicket, TicketStatus};
use crate::error::SupportError;

/// How to reach Zendesk.
#[derive(Clone, Debug)]
pub struct ZendeskOptions {
    /// `https://{subdomain}.zendesk.com`.
    pub url: Url,
    /// The agent e-mail the API token belongs to.
    pub email: String,
    /// The API token.
    pub token: SecretString,
    /// Timeout of one request.
    pub timeout: Duration,
    /// The longest `Retry-After` waited out; a longer one fails at once as `RateLimited`.
    pub max_retry_after: Duration,
    /// How many 429 answers in a row are waited out before giving up.
    pub max_rate_limit_waits: u32,
}

impl ZendeskOptions {
    /// Defaults: 30 s timeout, `Retry-After` up to 60 s, three times.
    pub fn new(url: Url, email: impl Into<String>, token: SecretString) -> ZendeskOptions {
        ZendeskOptions {
            url,
            email: email.into(),
            token,
            timeout: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            max_rate_limit_waits: 3,
        }
    }
}

/// A Zendesk Support client (three calls on reqwest; the crates named `zendesk` are for other
/// Zendesk products).
#[derive(Debug)]
pub struct ZendeskClient {
    http: reqwest::Client,
    base: Url,
    options: ZendeskOptions,
}

#[derive(Deserialize)]
struct TicketEnvelope {
    ticket: TicketBody,
}

#[derive(Deserialize)]
struct TicketList {
    tickets: Vec<TicketBody>,
}

#[derive(Deserialize)]
struct TicketBody {
    id: u64,
    #[serde(default)]
    status: Option<String>,
}

fn status_of(text: Option<&str>) -> TicketStatus {
    match text {
        Some("solved") => TicketStatus::Solved,
        Some("closed") => TicketStatus::Closed,
        _ => TicketStatus::Open,
    }
}

impl ZendeskClient {
    /// A client for `options`. Fails only when the TLS stack cannot start.
    pub fn new(options: ZendeskOptions) -> Result<ZendeskClient, SupportError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("orgsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| SupportError::Transport {
                url: options.url.to_string(),
                source,
            })?;
        let mut base = options.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(ZendeskClient {
            http,
            base,
            options,
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends the request `build` makes, waiting out 429s; maps failures to `SupportError`.
    /// Returns `None` for a 404.
    async fn send(
        &self,
        url: &Url,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Option<Response>, SupportError> {
        let mut waits = 0;
        loop {
            let request = build().basic_auth(
                format!("{}/token", self.options.email),
                Some(self.options.token.expose_secret()),
            );
            let response = request
                .send()
                .await
                .map_err(|source| SupportError::Transport {
                    url: url.to_string(),
                    source: source.without_url(),
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(Some(response));
            }
            match status {
                StatusCode::NOT_FOUND => return Ok(None),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(SupportError::Unauthorized {
                        url: url.to_string(),
                        status: status.as_u16(),
                    });
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map_or(Duration::from_secs(10), Duration::from_secs);
                    if waits >= self.options.max_rate_limit_waits
                        || retry_after > self.options.max_retry_after
                    {
                        return Err(SupportError::RateLimited {
                            url: url.to_string(),
                            retry_after,
                        });
                    }
                    waits += 1;
                    tracing::info!(
                        support.retry_after_s = retry_after.as_secs(),
                        "Zendesk is rate limiting; waiting {}s as its Retry-After says",
                        retry_after.as_secs()
                    );
                    tokio::time::sleep(retry_after).await;
                }
                _ => {
                    let detail: String = response
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    return Err(if status.is_server_error() {
                        SupportError::Unavailable {
                            url: url.to_string(),
                            status: status.as_u16(),
                            detail,
                        }
                    } else {
                        SupportError::Rejected {
                            url: url.to_string(),
                            status: status.as_u16(),
                            detail,
                        }
                    });
                }
            }
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        url: &Url,
        response: Response,
    ) -> Result<T, SupportError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|source| SupportError::Transport {
                url: url.to_string(),
                source: source.without_url(),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| SupportError::Malformed {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// The newest ticket with `external_id` that is not solved or closed.
    pub async fn find_open(&self, external_id: &str) -> Result<Option<String>, SupportError> {
        let mut url = self.url("api/v2/tickets");
        url.query_pairs_mut()
            .append_pair("external_id", external_id);
        let Some(response) = self
            .send(&url, || self.http.request(Method::GET, url.clone()))
            .await?
        else {
            return Ok(None);
        };
        let list: TicketList = Self::json(&url, response).await?;
        Ok(list
            .tickets
            .into_iter()
            .filter(|t| status_of(t.status.as_deref()) == TicketStatus::Open)
            .map(|t| t.id)
            .max()
            .map(|id| id.to_string()))
    }

    /// A ticket's status; `None` when it was deleted.
    pub async fn status(&self, id: &str) -> Result<Option<TicketStatus>, SupportError> {
        let url = self.url(&format!("api/v2/tickets/{id}"));
        let Some(response) = self
            .send(&url, || self.http.request(Method::GET, url.clone()))
            .await?
        else {
            return Ok(None);
        };
        let ticket: TicketEnvelope = Self::json(&url, response).await?;
        Ok(Some(status_of(ticket.ticket.status.as_deref())))
    }

    /// Creates a ticket (a private first comment); returns its id.
    pub async fn create(&self, ticket: &NewTicket) -> Result<String, SupportError> {
        let url = self.url("api/v2/tickets");
        let mut body = json!({
            "subject": ticket.subject,
            "comment": { "body": ticket.body, "public": false },
            "external_id": ticket.external_id,
            "priority": ticket.priority,
            "type": "problem",
            "tags": ticket.tags,
        });
        if let Some(source) = ticket
            .followup_of
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
        {
            body["via_followup_source_id"] = json!(source);
        }
        let body = json!({ "ticket": body });
        let Some(response) = self
            .send(&url, || {
                self.http
                    .request(Method::POST, url.clone())
                    .header("Idempotency-Key", &ticket.idempotency_key)
                    .json(&body)
            })
            .await?
        else {
            return Err(SupportError::Rejected {
                url: url.to_string(),
                status: 404,
                detail: "the tickets endpoint does not exist; check [support] zendesk_url".into(),
            });
        };
        let created: TicketEnvelope = Self::json(&url, response).await?;
        Ok(created.ticket.id.to_string())
    }

    /// Adds a private comment to ticket `id`.
    pub async fn comment(&self, id: &str, text: &str) -> Result<(), SupportError> {
        let url = self.url(&format!("api/v2/tickets/{id}"));
        let body = json!({ "ticket": { "comment": { "body": text, "public": false } } });
        match self
            .send(&url, || {
                self.http.request(Method::PUT, url.clone()).json(&body)
            })
            .await?
        {
            Some(_) => Ok(()),
            None => Err(SupportError::Rejected {
                url: url.to_string(),
                status: 404,
                detail: format!("ticket {id} no longer exists"),
            }),
        }
    }
}
