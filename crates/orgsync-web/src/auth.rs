//! Users, roles, sessions and request protection: argon2 password hashes, a login form with an
//! HttpOnly SameSite=Strict session cookie, HTTP Basic (for the API and scripts), the role
//! check for writes, and for every POST a strict Origin check plus, for cookie sessions, the
//! session's CSRF token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;

use crate::{WebError, WebState, view};

/// How long a browser session lasts without a new login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "orgsync_session";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also replays, deletes, releases and runs now.
    Support,
}

impl Role {
    /// The configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Support => "support",
        }
    }
}

/// A configured user (`[[web.users]]`).
#[derive(Clone)]
pub struct WebUser {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2 PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Hashes a password as an argon2id PHC string (`orgsync web hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `hash` is an argon2 PHC string (for configuration checks); the error says what
/// is wrong without showing the string.
pub fn validate_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("not a PHC string ({e}); make one with `orgsync web hash-password`")
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm {} is not argon2; make one with `orgsync web hash-password`",
            parsed.algorithm
        ));
    }
    Ok(())
}

fn verify(user: &WebUser, password: &str) -> bool {
    PasswordHash::new(&user.password_hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Who makes a request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// Name (recorded as "by" in the audit log and run reports).
    pub name: String,
    /// Role.
    pub role: Role,
    /// The CSRF token forms must carry (cookie sessions).
    pub csrf: String,
    /// How the request authenticated.
    pub via: AuthVia,
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// The session cookie: POSTs need the CSRF token.
    Cookie,
    /// HTTP Basic.
    Basic,
    /// No users configured, loopback only.
    Open,
}

impl CurrentUser {
    /// Refuses unless the user may write.
    pub fn require_support(&self) -> Result<(), WebError> {
        if self.role == Role::Support {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "{} is a {}; replay, delete, release and run now need the support role",
                self.name,
                self.role.as_str()
            )))
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// Browser sessions, in memory: a restart logs everyone out.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Session>>>,
    /// The CSRF token when no users are configured.
    open_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            open_csrf: random_token(),
        }
    }
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    fn create(&self, user: &WebUser) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        map.insert(
            token.clone(),
            Session {
                name: user.name.clone(),
                role: user.role,
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        token
    }

    fn get(&self, token: &str) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    fn remove(&self, token: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(token);
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_owned())
        })
}

fn basic_user(state: &WebState, headers: &HeaderMap) -> Option<Result<CurrentUser, WebError>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let Some(decoded) = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
    else {
        return Some(Err(WebError::Unauthorized));
    };
    let (name, password) = decoded.split_once(':')?;
    Some(
        state
            .users
            .iter()
            .find(|u| u.name == name && verify(u, password))
            .map(|u| CurrentUser {
                name: u.name.clone(),
                role: u.role,
                csrf: String::new(),
                via: AuthVia::Basic,
            })
            .ok_or(WebError::Unauthorized),
    )
}

/// A POST is refused when it names another origin: the `Origin` (or, without one, the
/// `Referer`) must be this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match source {
        // No browser context (curl, scripts with Basic): nothing cross-site to guard.
        None => true,
        Some(origin) => {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            rest.is_some_and(|r| r.split('/').next() == Some(host))
        }
    }
}

/// Authenticates every protected request (cookie, Basic, or open on loopback without users),
/// refuses cross-site POSTs, and hands the handlers a [`CurrentUser`]. The CSRF token itself
/// is checked by the handlers that read the form (see [`check_csrf`]).
pub async fn require_user(
    State(state): State<Arc<WebState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers().clone();
    let is_api = request.uri().path().starts_with("/api/") || request.uri().path() == "/metrics";
    let user = if state.users.is_empty() {
        Some(CurrentUser {
            name: "local".to_owned(),
            role: Role::Support,
            csrf: state.sessions.open_csrf.clone(),
            via: AuthVia::Open,
        })
    } else if let Some(result) = basic_user(&state, &headers) {
        match result {
            Ok(u) => Some(u),
            Err(e) => return e.into_response(),
        }
    } else {
        cookie_token(&headers)
            .and_then(|t| state.sessions.get(&t))
            .map(|s| CurrentUser {
                name: s.name,
                role: s.role,
                csrf: s.csrf,
                via: AuthVia::Cookie,
            })
    };
    let Some(user) = user else {
        if is_api {
            return WebError::Unauthorized.into_response();
        }
        return Redirect::to("/login").into_response();
    };
    if request.method() == Method::POST && !same_origin(&headers) {
        return WebError::Forbidden("cross-site request refused (Origin)".into()).into_response();
    }
    if request.method() == Method::POST && is_api && user.via == AuthVia::Cookie {
        let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if token != Some(user.csrf.as_str()) {
            return WebError::Forbidden("missing or wrong CSRF token".into()).into_response();
        }
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// Checks a form's `csrf` field against the user's token (cookie sessions and open mode).
pub fn check_csrf(user: &CurrentUser, form: &[(String, String)]) -> Result<(), WebError> {
    if user.via == AuthVia::Basic {
        return Ok(());
    }
    let given = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if given == Some(user.csrf.as_str()) && !user.csrf.is_empty() {
        Ok(())
    } else {
        Err(WebError::Forbidden("missing or wrong CSRF token".into()))
    }
}

/// Parses a urlencoded form body, keeping repeated fields (`id=a&id=b`).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /login`.
pub async fn login_page() -> impl IntoResponse {
    view::login_page(None)
}

/// `POST /login`: checks name and password, sets the session cookie.
pub async fn login(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&headers) {
        return WebError::Forbidden("cross-site request refused (Origin)".into()).into_response();
    }
    let form = parse_form(&body);
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let (name, password) = (field("name"), field("password"));
    let Some(user) = state
        .users
        .iter()
        .find(|u| u.name == name && verify(u, password))
    else {
        tracing::info!(web.user = name, "dashboard login refused");
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            view::login_page(Some("wrong name or password")),
        )
            .into_response();
    };
    let token = state.sessions.create(user);
    tracing::info!(web.user = name, "dashboard login");
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::Extension(user): axum::Extension<CurrentUser>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    check_csrf(&user, &parse_form(&body))?;
    if let Some(token) = cookie_token(&headers) {
        state.sessions.remove(&token);
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_post_from_another_origin_is_cross_site_and_one_from_this_host_is_not() {
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "https://127.0.0.1:8080.evil.example/x")
        ])));
        assert!(
            same_origin(&headers(&[host])),
            "no browser context: curl with Basic"
        );
    }

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(validate_hash(&hash).is_ok());
        assert!(validate_hash("plain").is_err());
        let user = WebUser {
            name: "anna".into(),
            role: Role::Support,
            password_hash: hash,
        };
        assert!(verify(&user, "correct horse"));
        assert!(!verify(&user, "correct hors"));
        assert!(
            !format!("{user:?}").contains("argon2"),
            "Debug hides the hash"
        );
    }
}
