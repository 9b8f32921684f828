//! orgsync-web: the operations dashboard. Server-rendered pages (maud) and a JSON API under
//! `/api/` over the same queue and run APIs the CLI uses, `/metrics` (Prometheus text),
//! `/health` and `/ready`, users with roles (`viewer`, `support`), a login form with a
//! session cookie for browsers and HTTP Basic for the API, and a CSRF token plus a strict
//! Origin check on every POST.
//!
//! The binary builds a [`WebState`] from its configuration and calls [`serve`]; nothing here
//! reads files, the environment or a Redis key name.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod pages;
pub mod tree;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use orgsync_jobs::pipeline::{Pipeline, PipelineError};
use orgsync_queue::{QueueError, QueueHandle};

use crate::auth::{Sessions, WebUser};

/// A configured customer as the dashboard shows it.
#[derive(Clone)]
pub struct CustomerInfo {
    /// CVR number.
    pub cvr: String,
    /// Name.
    pub name: String,
    /// The schedule as configured (cron and time zone), for people.
    pub schedule: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The next scheduled fire from now, when enabled.
    pub next_fire: Arc<dyn Fn() -> Option<DateTime<Utc>> + Send + Sync>,
}

impl std::fmt::Debug for CustomerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerInfo")
            .field("cvr", &self.cvr)
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish()
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct WebState {
    /// The queue.
    pub queue: QueueHandle,
    /// The pipeline (reports, runs, release, run now).
    pub pipeline: Arc<Pipeline>,
    /// Configured users; empty: everyone on loopback is `support` (see [`check_bind`]).
    pub users: Vec<WebUser>,
    /// The configured customers.
    pub customers: Vec<CustomerInfo>,
    /// Mark the session cookie `Secure` (the dashboard is served over https by a proxy).
    pub secure_cookies: bool,
    /// Logged-in browser sessions.
    pub sessions: Sessions,
}

impl WebState {
    /// A state with fresh sessions.
    pub fn new(
        queue: QueueHandle,
        pipeline: Arc<Pipeline>,
        users: Vec<WebUser>,
        customers: Vec<CustomerInfo>,
        secure_cookies: bool,
    ) -> Arc<WebState> {
        Arc::new(WebState {
            queue,
            pipeline,
            users,
            customers,
            secure_cookies,
            sessions: Sessions::default(),
        })
    }
}

/// Why a request failed; rendered as a page or a JSON `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not logged in (or wrong credentials).
    #[error("authentication required")]
    Unauthorized,
    /// Logged in without the role, or a cross-site request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// A parameter is wrong; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// The operation does not fit the state of things.
    #[error("{0}")]
    Conflict(String),
    /// The queue failed.
    #[error("queue: {0}")]
    Queue(QueueError),
    /// The pipeline failed.
    #[error("{0}")]
    Pipeline(PipelineError),
}

impl WebError {
    /// Whether trying the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Queue(e) => e.is_retriable(),
            Self::Pipeline(PipelineError::Queue(e)) => e.is_retriable(),
            Self::Pipeline(PipelineError::Source(e)) => e.retriable,
            _ => false,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Queue(QueueError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Queue(QueueError::NotDead { .. }) => StatusCode::CONFLICT,
            Self::Queue(QueueError::InvalidName { .. }) => StatusCode::BAD_REQUEST,
            Self::Pipeline(PipelineError::Queue(QueueError::NotFound(_))) => StatusCode::NOT_FOUND,
            Self::Pipeline(PipelineError::UnknownRun { .. })
            | Self::Pipeline(PipelineError::UnknownCustomer { .. }) => StatusCode::NOT_FOUND,
            Self::Pipeline(PipelineError::InvalidCvr(_)) => StatusCode::BAD_REQUEST,
            Self::Pipeline(PipelineError::State(_))
            | Self::Pipeline(PipelineError::UnreadHeld { .. }) => StatusCode::CONFLICT,
            _ if self.is_retriable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<QueueError> for WebError {
    fn from(e: QueueError) -> Self {
        Self::Queue(e)
    }
}

impl From<PipelineError> for WebError {
    fn from(e: PipelineError) -> Self {
        Self::Pipeline(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard request failed");
        }
        let body = view::error_page(status, &self.to_string());
        let mut resp = (status, body).into_response();
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"orgsync\""),
            );
        }
        resp
    }
}

/// Refuses a non-loopback address when no user is configured: the dashboard can replay,
/// delete and release, so it is never open beyond this host.
pub fn check_bind(bind: SocketAddr, users: &[WebUser]) -> Result<(), String> {
    if users.is_empty() && !bind.ip().is_loopback() {
        return Err(format!(
            "[web] bind = {bind} is not a loopback address and no [[web.users]] is configured; add users (password hashes from `orgsync web hash-password`) or bind to 127.0.0.1"
        ));
    }
    Ok(())
}

/// The dashboard's routes.
pub fn router(state: Arc<WebState>) -> Router {
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/overview/live", get(pages::overview_live))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/dead-letters/confirm", post(pages::dead_letters_confirm))
        .route("/dead-letters/replay", post(pages::dead_letters_replay))
        .route("/dead-letters/delete", post(pages::dead_letters_delete))
        .route("/audit", get(pages::audit))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route(
            "/runs/{id}/release",
            get(pages::release_page).post(pages::release),
        )
        .route("/customers", get(pages::customers))
        .route("/customers/{cvr}/sync", post(pages::run_now))
        .route("/customers/{cvr}/tree", get(tree::customer_page))
        .route("/runs/{id}/tree", get(tree::run_page))
        .route("/logout", post(auth::logout))
        .route("/metrics", get(metrics::handler))
        .route("/api/overview", get(api::overview))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/dead-letters/facets", get(api::facets))
        .route("/api/dead-letters/replay", post(api::replay))
        .route("/api/dead-letters/delete", post(api::delete))
        .route("/api/audit", get(api::audit))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/release", post(api::release))
        .route("/api/customers", get(api::customers))
        .route("/api/customers/{cvr}/sync", post(api::run_now))
        .route("/api/customers/{cvr}/tree", get(tree::customer_api))
        .route("/api/runs/{id}/tree", get(tree::run_api))
        .route("/api/openapi.yaml", get(api::openapi))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_user,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/static/app.js", get(view::app_js))
        .route("/static/app.css", get(view::app_css))
        .merge(protected)
        .with_state(state)
}

async fn ready(
    axum::extract::State(state): axum::extract::State<Arc<WebState>>,
) -> (StatusCode, &'static str) {
    match state.queue.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n"),
    }
}

/// Serves the dashboard on `listener` until `shutdown` completes (graceful).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every `/api/` route, read from this file's router.
    fn routes_in_router() -> std::collections::BTreeSet<(String, String)> {
        let source = include_str!("lib.rs");
        let mut out = std::collections::BTreeSet::new();
        for line in source.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix(".route(\"/api/") else {
                continue;
            };
            let (path, handlers) = rest.split_once('"').unwrap_or_else(|| unreachable!());
            for method in ["get", "post"] {
                if handlers.contains(&format!("{method}(")) {
                    out.insert((method.to_owned(), format!("/api/{path}")));
                }
            }
        }
        out
    }

    /// `(method, path)` of every operation in docs/openapi.yaml.
    fn routes_in_openapi() -> std::collections::BTreeSet<(String, String)> {
        let mut out = std::collections::BTreeSet::new();
        let mut path = None;
        let mut in_paths = false;
        for line in api::OPENAPI.lines() {
            if line == "paths:" {
                in_paths = true;
            } else if in_paths && line.starts_with("  /") && line.ends_with(':') {
                path = Some(line.trim().trim_end_matches(':').to_owned());
            } else if let (true, Some(p)) = (in_paths, &path) {
                for method in ["get", "post", "put", "patch", "delete"] {
                    if line == format!("    {method}:") {
                        out.insert((method.to_owned(), p.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_api_route_is_in_the_openapi_document_and_nothing_else() {
        let router = routes_in_router();
        assert!(
            router.len() > 15,
            "the router's routes were read: {router:?}"
        );
        assert!(router.contains(&("post".into(), "/api/dead-letters/replay".into())));
        let documented = routes_in_openapi();
        let missing: Vec<_> = router.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&router).collect();
        assert!(
            missing.is_empty(),
            "routes not in docs/openapi.yaml: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "docs/openapi.yaml documents no such route: {stale:?}"
        );
    }

    #[test]
    fn a_non_loopback_bind_without_users_is_refused() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        assert!(check_bind(open, &[]).unwrap_err().contains("web.users"));
        assert!(check_bind(local, &[]).is_ok());
        let users = [auth::WebUser {
            name: "a".into(),
            role: auth::Role::Viewer,
            password_hash: String::new(),
        }];
        assert!(check_bind(open, &users).is_ok());
    }
}
