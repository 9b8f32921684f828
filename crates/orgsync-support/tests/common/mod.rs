//! A fake Zendesk Support (axum on 127.0.0.1:0) that keeps tickets, comments and every request,
//! checks the API-token authentication, honours `Idempotency-Key` on create, refuses updates to
//! closed tickets, and answers 429 with `Retry-After` when told to.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

pub const EMAIL: &str = "ops@supplier.dk";
pub const TOKEN: &str = "zd-s3cret-api-token-0042";

#[derive(Clone, Debug)]
pub struct FakeTicket {
    pub id: u64,
    pub external_id: String,
    pub subject: String,
    pub status: String,
    pub priority: String,
    pub tags: Vec<String>,
    /// The first comment, then each later one.
    pub comments: Vec<String>,
    pub public_comments: usize,
    pub via_followup_source_id: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct Desk {
    pub tickets: BTreeMap<u64, FakeTicket>,
    pub requests: Vec<Request>,
    idempotency: HashMap<String, u64>,
    next_id: u64,
    /// Answer this many next requests with 429.
    pub rate_limit_next: u32,
    pub retry_after_s: u64,
}

#[derive(Clone)]
pub struct FakeZendesk {
    pub url: url::Url,
    pub desk: Arc<Mutex<Desk>>,
}

impl FakeZendesk {
    pub async fn start() -> FakeZendesk {
        let desk = Arc::new(Mutex::new(Desk {
            next_id: 100,
            retry_after_s: 1,
            ..Desk::default()
        }));
        let app = Router::new()
            .route("/api/v2/tickets", get(list).post(create))
            .route("/api/v2/tickets/{id}", get(show).put(update))
            .with_state(desk.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeZendesk { url, desk }
    }

    pub fn tickets(&self) -> Vec<FakeTicket> {
        self.desk
            .lock()
            .unwrap()
            .tickets
            .values()
            .cloned()
            .collect()
    }

    pub fn ticket(&self, id: &str) -> FakeTicket {
        self.desk.lock().unwrap().tickets[&id.parse::<u64>().unwrap()].clone()
    }

    /// What a person does in Zendesk.
    pub fn set_status(&self, id: &str, status: &str) {
        self.desk
            .lock()
            .unwrap()
            .tickets
            .get_mut(&id.parse::<u64>().unwrap())
            .unwrap()
            .status = status.to_owned();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.desk.lock().unwrap().requests.clone()
    }

    /// Every subject and comment the desk received.
    pub fn all_text(&self) -> Vec<String> {
        self.tickets()
            .into_iter()
            .flat_map(|t| std::iter::once(t.subject).chain(t.comments))
            .collect()
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}/token:{TOKEN}"))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

/// Records the request; answers 401 or 429 when due.
fn gate(
    desk: &mut Desk,
    headers: &HeaderMap,
    method: &'static str,
    path: String,
) -> Option<Response> {
    desk.requests.push(Request {
        method,
        path,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    if !authorised(headers) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Couldn't authenticate you"})),
            )
                .into_response(),
        );
    }
    if desk.rate_limit_next > 0 {
        desk.rate_limit_next -= 1;
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", desk.retry_after_s.to_string())],
                "Too Many Requests",
            )
                .into_response(),
        );
    }
    None
}

fn ticket_json(t: &FakeTicket) -> Value {
    json!({"id": t.id, "status": t.status, "external_id": t.external_id, "subject": t.subject})
}

async fn list(
    State(desk): State<Arc<Mutex<Desk>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut desk = desk.lock().unwrap();
    if let Some(r) = gate(&mut desk, &headers, "GET", "/api/v2/tickets".into()) {
        return r;
    }
    let wanted = query.get("external_id").cloned().unwrap_or_default();
    let tickets: Vec<Value> = desk
        .tickets
        .values()
        .filter(|t| t.external_id == wanted)
        .map(ticket_json)
        .collect();
    Json(json!({"tickets": tickets})).into_response()
}

async fn create(
    State(desk): State<Arc<Mutex<Desk>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut desk = desk.lock().unwrap();
    if let Some(r) = gate(&mut desk, &headers, "POST", "/api/v2/tickets".into()) {
        return r;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = key.as_ref().and_then(|k| desk.idempotency.get(k)) {
        let t = desk.tickets[id].clone();
        return (
            StatusCode::CREATED,
            [("x-idempotency-lookup", "hit")],
            Json(json!({"ticket": ticket_json(&t)})),
        )
            .into_response();
    }
    let t = &body["ticket"];
    let via = t["via_followup_source_id"].as_u64();
    if let Some(source) = via
        && desk
            .tickets
            .get(&source)
            .is_none_or(|s| s.status != "closed")
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"error": "RecordInvalid", "description": "follow-up source must be closed"}),
            ),
        )
            .into_response();
    }
    desk.next_id += 1;
    let id = desk.next_id;
    let ticket = FakeTicket {
        id,
        external_id: t["external_id"].as_str().unwrap_or_default().to_owned(),
        subject: t["subject"].as_str().unwrap_or_default().to_owned(),
        status: "new".to_owned(),
        priority: t["priority"].as_str().unwrap_or_default().to_owned(),
        tags: t["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        comments: vec![t["comment"]["body"].as_str().unwrap_or_default().to_owned()],
        public_comments: usize::from(t["comment"]["public"].as_bool() != Some(false)),
        via_followup_source_id: via,
    };
    let answer = ticket_json(&ticket);
    desk.tickets.insert(id, ticket);
    if let Some(key) = key {
        desk.idempotency.insert(key, id);
    }
    (StatusCode::CREATED, Json(json!({"ticket": answer}))).into_response()
}

async fn show(
    State(desk): State<Arc<Mutex<Desk>>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    let mut desk = desk.lock().unwrap();
    if let Some(r) = gate(&mut desk, &headers, "GET", format!("/api/v2/tickets/{id}")) {
        return r;
    }
    match desk.tickets.get(&id) {
        Some(t) => Json(json!({"ticket": ticket_json(t)})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "RecordNotFound"})),
        )
            .into_response(),
    }
}

async fn update(
    State(desk): State<Arc<Mutex<Desk>>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    let mut desk = desk.lock().unwrap();
    if let Some(r) = gate(&mut desk, &headers, "PUT", format!("/api/v2/tickets/{id}")) {
        return r;
    }
    let Some(t) = desk.tickets.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "RecordNotFound"})),
        )
            .into_response();
    };
    if t.status == "closed" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "RecordInvalid", "description": "closed tickets cannot be updated"})),
        )
            .into_response();
    }
    let comment = &body["ticket"]["comment"];
    if let Some(text) = comment["body"].as_str() {
        t.comments.push(text.to_owned());
        if comment["public"].as_bool() != Some(false) {
            t.public_comments += 1;
        }
        if t.status == "solved" {
            t.status = "open".to_owned();
        }
    }
    Json(json!({"ticket": ticket_json(t)})).into_response()
}
