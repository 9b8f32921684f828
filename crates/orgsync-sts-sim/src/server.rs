//! The simulator's HTTP server: SOAP 1.2 at `/organisation/<service>/6/` (and, when asked, the legacy v5 contract in SOAP 1.1 at `/organisation/<Service>/5`), paging, StatusKode, latency and fault injection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, NaiveDate, Utc};
use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::Snapshot;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;
use uuid::Uuid;

use crate::SimError;
use crate::security::{self, Refusal, SimSecurity};
use crate::wire::*;
use crate::world::{Window, World, root_namespaces};
use crate::xml::{XmlWriter, read_request};

/// The HTTP header carrying the caller's CVR (the unsigned stand-in for the token's CvrNumberIdentifier).
pub const SIM_CVR_HEADER: &str = "x-orgsync-sim-cvr";

/// How long calls take. Defaults to none; [`LatencyModel::sizes`] is docs/sizes.md §5.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyModel {
    /// Every call: uniform between these (ms).
    pub base_ms: (u64, u64),
    /// soeg and hierarchy calls, per row returned: uniform between these (ms), so a 500-row page takes 1-5 s.
    pub per_row_ms: (f64, f64),
    /// Probability of a slow tail call.
    pub tail_probability: f64,
    /// A tail call's extra latency: uniform between these (ms).
    pub tail_ms: (u64, u64),
}

impl LatencyModel {
    /// No latency.
    pub fn none() -> LatencyModel {
        LatencyModel {
            base_ms: (0, 0),
            per_row_ms: (0.0, 0.0),
            tail_probability: 0.0,
            tail_ms: (0, 0),
        }
    }

    /// Every call takes `ms`.
    pub fn fixed(ms: u64) -> LatencyModel {
        LatencyModel {
            base_ms: (ms, ms),
            ..LatencyModel::none()
        }
    }

    /// docs/sizes.md §5: 150-400 ms per call, 1-5 s for 500-row soeg/hierarchy pages, no tail
    /// (set `tail_probability` to 0.01 and `tail_ms` to 20-60 s for the documented tail).
    pub fn sizes() -> LatencyModel {
        LatencyModel {
            base_ms: (150, 400),
            per_row_ms: (1.7, 9.2),
            tail_probability: 0.0,
            tail_ms: (20_000, 60_000),
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng, rows: usize) -> Duration {
        let uniform = |rng: &mut ChaCha8Rng, (lo, hi): (u64, u64)| {
            if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            }
        };
        let mut ms = uniform(rng, self.base_ms) as f64;
        if rows > 0 && self.per_row_ms.1 > 0.0 {
            let (lo, hi) = self.per_row_ms;
            let per_row = if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            };
            ms += per_row * rows as f64;
        }
        if self.tail_probability > 0.0 && rng.random_bool(self.tail_probability.clamp(0.0, 1.0)) {
            ms += uniform(rng, self.tail_ms) as f64;
        }
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// A fault the simulator injects.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// An HTTP status with a plain-text body.
    Http(u16),
    /// A SOAP 1.2 fault (HTTP 500).
    SoapFault {
        /// `Sender` or `Receiver`.
        code: String,
        /// A subcode local name, e.g. `ServiceAgreementNotFound`.
        subcode: Option<String>,
        /// The reason text.
        reason: String,
    },
    /// A well-formed output with this StatusKode.
    Status {
        /// `StatusKode`.
        code: i64,
        /// `FejlbeskedTekst`.
        message: String,
    },
    /// The first half of the real response.
    Truncate,
    /// An HTML error page with status 200.
    Garbage,
    /// The real response padded with a comment of this many bytes.
    Oversize(usize),
    /// The real response, this much later.
    Delay(Duration),
}

/// A fault for calls whose `<service>/<operation>` (e.g. `bruger/list`) contains `target`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedFault {
    /// Substring of `<service>/<operation>`; empty matches every call.
    pub target: String,
    /// Let this many matching calls through first.
    pub after: u32,
    /// Then fail this many.
    pub times: u32,
    /// How.
    pub kind: FaultKind,
}

/// Random and scripted faults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultOptions {
    /// Probability that a call fails with HTTP 503 or a Receiver SOAP fault (half each).
    pub fault_rate: f64,
    /// Probability that a call returns StatusKode 50.
    pub status_error_rate: f64,
    /// Refuse calls above this many per second (sliding 1 s window) with HTTP 429 and a SOAP fault.
    pub rate_limit_per_second: Option<f64>,
}

/// Everything configurable about the simulator's behaviour.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Latency per call.
    pub latency: LatencyModel,
    /// Fault injection.
    pub faults: FaultOptions,
    /// Ignore virkning filters and return every entry (history included), as some servers may.
    pub full_history: bool,
    /// Ignore `FoersteResultatReference` and always answer with the first page, as a broken
    /// server might (the client must stop, not loop).
    pub ignore_offset: bool,
    /// Largest MaksimalAntalKvantitet accepted (default 500); above it StatusKode 40.
    pub max_page_size: u32,
    /// Most UUIDs accepted in one list (default 500); above it StatusKode 40.
    pub max_list_ids: usize,
    /// Seed of the latency and fault dice.
    pub seed: u64,
    /// HTTPS with mutual TLS, the STS endpoints and (optionally) WS-Security checks on every
    /// call. Decided at start; `None` = plain HTTP without an STS.
    pub security: Option<SimSecurity>,
    /// The contracts served (default: Organisation 6 only). A call on the routes of a contract
    /// not listed is answered with HTTP 404.
    pub dialects: Vec<Dialect>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency: LatencyModel::none(),
            faults: FaultOptions::default(),
            full_history: false,
            ignore_offset: false,
            max_page_size: 500,
            max_list_ids: 500,
            seed: 1,
            security: None,
            dialects: vec![Dialect::Organisation6],
        }
    }
}

/// Counters, for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Calls received (refused ones included).
    pub calls: u64,
    /// Calls per `<service>/<operation>`.
    pub by_operation: BTreeMap<String, u64>,
    /// The most calls in flight at once.
    pub max_in_flight: usize,
    /// The most calls received within any one second.
    pub max_calls_per_second: usize,
    /// Calls refused by the rate limit.
    pub rate_limited: u64,
    /// Faults injected (random and scripted).
    pub faults_injected: u64,
    /// Tokens the STS issued, per CVR.
    pub tokens_issued: BTreeMap<String, u64>,
    /// Calls or token requests refused by the security checks.
    pub security_refusals: u64,
}

struct ScriptState {
    fault: ScriptedFault,
    seen: u32,
}

struct Shared {
    worlds: RwLock<HashMap<Cvr, Arc<World>>>,
    options: RwLock<SimOptions>,
    stats: Mutex<SimStats>,
    in_flight: AtomicUsize,
    recent: Mutex<VecDeque<Instant>>,
    scripted: Mutex<Vec<ScriptState>>,
    rng: Mutex<ChaCha8Rng>,
    today: NaiveDate,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Simulator {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1:0` serving `municipalities`.
    pub async fn start(
        municipalities: Vec<Snapshot>,
        options: SimOptions,
    ) -> Result<Simulator, SimError> {
        Simulator::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            municipalities,
            options,
        )
        .await
    }

    /// Starts a simulator on `bind`.
    pub async fn start_on(
        bind: SocketAddr,
        municipalities: Vec<Snapshot>,
        options: SimOptions,
    ) -> Result<Simulator, SimError> {
        let today = orgsync_model::time::danish_date(&Utc::now());
        let shared = Arc::new(Shared {
            worlds: RwLock::new(HashMap::new()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(options.seed)),
            options: RwLock::new(options),
            stats: Mutex::new(SimStats::default()),
            in_flight: AtomicUsize::new(0),
            recent: Mutex::new(VecDeque::new()),
            scripted: Mutex::new(Vec::new()),
            today,
        });
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| SimError::Bind(bind.to_string(), e.to_string()))?;
        let address = listener
            .local_addr()
            .map_err(|e| SimError::Bind(bind.to_string(), e.to_string()))?;
        for snapshot in municipalities {
            let world = Arc::new(World::new(snapshot, shared.today));
            shared
                .worlds
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(world.cvr.clone(), world);
        }
        let app = Router::new()
            .route("/organisation/{service}/6/", post(handle))
            .route("/organisation/{service}/6", post(handle))
            .route("/organisation/{service}/5", post(handle_v5))
            .route("/organisation/{service}/5/", post(handle_v5))
            .route("/service/Organisation/{service}/5", post(handle_v5))
            .route(STS_SOAP_PATH, post(sts_soap))
            .route(STS_REST_PATH, post(sts_rest))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let tls = shared
            .options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .security
            .as_ref()
            .map(|s| crate::tls::server_config(&s.pki))
            .transpose()?;
        let task = match tls {
            Some(config) => {
                let listener = crate::tls::TlsListener::new(listener, config)
                    .map_err(|e| SimError::Bind(bind.to_string(), e.to_string()))?;
                tokio::spawn(async move {
                    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                    if let Err(error) = server.await {
                        tracing::error!(error = %error, "the STS simulator stopped");
                    }
                })
            }
            None => tokio::spawn(async move {
                let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = rx.await;
                });
                if let Err(error) = server.await {
                    tracing::error!(error = %error, "the STS simulator stopped");
                }
            }),
        };
        Ok(Simulator {
            address,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The socket address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn scheme(&self) -> &'static str {
        if self.options().security.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The base URL for clients: `http://<addr>/organisation/` (`https://` with security).
    pub fn base_url(&self) -> Url {
        Url::parse(&format!(
            "{}://{}/organisation/",
            self.scheme(),
            self.address
        ))
        .unwrap_or_else(|_| unreachable!())
    }

    /// The STS SOAP endpoint (`https://<addr>/runtime/services/kombittrust/14/certificatemixed`).
    pub fn sts_url(&self) -> Url {
        Url::parse(&format!(
            "{}://{}{STS_SOAP_PATH}",
            self.scheme(),
            self.address
        ))
        .unwrap_or_else(|_| unreachable!())
    }

    /// The STS REST JSON endpoint (`https://<addr>/runtime/api/rest/wstrust/v1/issue`).
    pub fn sts_rest_url(&self) -> Url {
        Url::parse(&format!(
            "{}://{}{STS_REST_PATH}",
            self.scheme(),
            self.address
        ))
        .unwrap_or_else(|_| unreachable!())
    }

    /// A signed assertion as the STS would issue it, for `cvr` and `entity_id`, holder-of-key
    /// `holder` (DER), signed by the STS, or by the untrusted rogue key (tampering tests).
    pub fn issue_assertion(
        &self,
        cvr: &str,
        entity_id: &str,
        holder: &[u8],
        rogue: bool,
    ) -> Option<String> {
        let security = self.options().security?;
        let signer = if rogue {
            security.pki.rogue.clone()
        } else {
            security.pki.sts.clone()
        };
        Some(security::assertion(
            &security,
            &signer,
            cvr,
            entity_id,
            holder,
            Utc::now(),
        ))
    }

    /// Adds a municipality, or replaces the one with the same CVR (models a change in STS).
    pub fn replace(&self, snapshot: Snapshot) {
        let world = Arc::new(World::new(snapshot, self.shared.today));
        let mut worlds = self
            .shared
            .worlds
            .write()
            .unwrap_or_else(|e| e.into_inner());
        worlds.insert(world.cvr.clone(), world);
    }

    /// Removes a municipality.
    pub fn remove(&self, cvr: &Cvr) {
        self.shared
            .worlds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cvr);
    }

    /// The municipality served for a CVR.
    pub fn world(&self, cvr: &Cvr) -> Option<Arc<World>> {
        self.shared
            .worlds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(cvr)
            .cloned()
    }

    /// Replaces the behaviour (latency, faults, ...) while running.
    pub fn set_options(&self, options: SimOptions) {
        *self
            .shared
            .options
            .write()
            .unwrap_or_else(|e| e.into_inner()) = options;
    }

    /// The current behaviour.
    pub fn options(&self) -> SimOptions {
        self.shared
            .options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a scripted fault.
    pub fn inject(&self, fault: ScriptedFault) {
        lock(&self.shared.scripted).push(ScriptState { fault, seen: 0 });
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        lock(&self.shared.stats).clone()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = SimStats::default();
        lock(&self.shared.recent).clear();
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const SIM_NS: &str = "urn:orgsync:sts-sim";

fn soap_response(
    dialect: Dialect,
    status: StatusCode,
    transaction: Option<&str>,
    payload: &str,
) -> Response {
    let mut w = XmlWriter::new();
    w.raw(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.start("S:Envelope", &[("xmlns:S", dialect.soap_namespace())]);
    w.open("S:Header");
    w.start("h:RequestHeader", &[("xmlns:h", REQUEST_HEADER_NS)]);
    let fresh = Uuid::new_v4().to_string();
    w.leaf("h:TransactionUUID", transaction.unwrap_or(&fresh));
    w.end("h:RequestHeader");
    w.end("S:Header");
    w.open("S:Body");
    w.raw(payload);
    w.end("S:Body");
    w.end("S:Envelope");
    http(status, content_type(dialect), w.finish())
}

fn content_type(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Organisation6 => "application/soap+xml; charset=utf-8",
        Dialect::Serviceplatformen5 => "text/xml; charset=utf-8",
    }
}

/// v5: the output inside its `XxxResponse` wrapper; Organisation 6: the output itself.
fn wrap_output(dialect: Dialect, service: Service, op: Op, output: &str) -> String {
    let Some(ns) = dialect.wrapper_namespace(service) else {
        return output.to_owned();
    };
    let name = format!("ns7:{}", op.response_wrapper());
    let mut w = XmlWriter::new();
    w.start(&name, &[("xmlns:ns7", ns.as_str())]);
    w.raw(output);
    w.end(&name);
    w.finish()
}

fn http(status: StatusCode, content_type: &str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, value);
    }
    response
}

fn fault_payload(dialect: Dialect, code: &str, subcode: Option<&str>, reason: &str) -> String {
    let mut w = XmlWriter::new();
    if dialect == Dialect::Serviceplatformen5 {
        // SOAP 1.1: Client/Server, the reason as faultstring, the code in Serviceplatformen's detail.
        let code = if code == "Sender" { "Client" } else { "Server" };
        w.open("S:Fault");
        w.leaf("faultcode", &format!("S:{code}"));
        w.leaf("faultstring", reason);
        if let Some(sub) = subcode {
            w.open("detail");
            w.start(
                "spf:ServiceplatformFault",
                &[("xmlns:spf", SERVICEPLATFORM_FAULT_NS)],
            );
            w.open("spf:ErrorList");
            w.open("spf:Error");
            w.leaf("spf:ErrorCode", sub);
            w.leaf("spf:ErrorText", reason);
            w.end("spf:Error");
            w.end("spf:ErrorList");
            w.end("spf:ServiceplatformFault");
            w.end("detail");
        }
        w.end("S:Fault");
        return w.finish();
    }
    w.start("S:Fault", &[("xmlns:sim", SIM_NS)]);
    w.open("S:Code");
    w.leaf("S:Value", &format!("S:{code}"));
    if let Some(sub) = subcode {
        w.open("S:Subcode");
        w.leaf("S:Value", &format!("sim:{sub}"));
        w.end("S:Subcode");
    }
    w.end("S:Code");
    w.open("S:Reason");
    w.start("S:Text", &[("xml:lang", "da")]);
    w.raw(&quick_xml::escape::escape(reason));
    w.end("S:Text");
    w.end("S:Reason");
    w.end("S:Fault");
    w.finish()
}

fn fault(
    dialect: Dialect,
    status: StatusCode,
    code: &str,
    subcode: Option<&str>,
    reason: &str,
) -> Response {
    soap_response(
        dialect,
        status,
        None,
        &fault_payload(dialect, code, subcode, reason),
    )
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Soeg,
    List,
    Laes,
    Hierarchy,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Soeg => "soeg",
            Op::List => "list",
            Op::Laes => "laes",
            Op::Hierarchy => "fremsoegobjekthierarki",
        }
    }

    /// The v5 response wrapper.
    fn response_wrapper(self) -> &'static str {
        match self {
            Op::Soeg => "SoegResponse",
            Op::List => "ListResponse",
            Op::Laes => "LaesResponse",
            Op::Hierarchy => "FremsoegobjekthierarkiResponse",
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle_in(Dialect::Organisation6, shared, segment, headers, body).await
}

async fn handle_v5(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle_in(Dialect::Serviceplatformen5, shared, segment, headers, body).await
}

async fn handle_in(
    dialect: Dialect,
    shared: Arc<Shared>,
    segment: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&shared.in_flight);
    let options = shared
        .options
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let per_second = {
        let mut recent = lock(&shared.recent);
        while recent
            .front()
            .is_some_and(|t| started.duration_since(*t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        recent.push_back(started);
        recent.len()
    };
    let service = match dialect {
        Dialect::Organisation6 => Service::from_segment(&segment),
        Dialect::Serviceplatformen5 => Service::from_name(&segment),
    };
    let Some(service) = service.filter(|_| options.dialects.contains(&dialect)) else {
        return http(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no service {segment:?} in the {dialect:?} contract"),
        );
    };
    let text = String::from_utf8_lossy(&body);
    let request = read_request(&text, dialect);
    let op = match &request {
        Ok(r) => match r.local_name.as_str() {
            "SoegInput" => Some(Op::Soeg),
            "ListInput" => Some(Op::List),
            "LaesInput" => Some(Op::Laes),
            "FremsoegObjekthierarkiInput" => Some(Op::Hierarchy),
            _ => None,
        },
        Err(_) => None,
    };
    let key = format!("{}/{}", service.segment(), op.map_or("unknown", Op::name));
    {
        let mut stats = lock(&shared.stats);
        stats.calls += 1;
        *stats.by_operation.entry(key.clone()).or_default() += 1;
        stats.max_in_flight = stats.max_in_flight.max(in_flight);
        stats.max_calls_per_second = stats.max_calls_per_second.max(per_second);
    }
    if let Some(limit) = options.faults.rate_limit_per_second {
        if per_second as f64 > limit.max(1.0) {
            lock(&shared.stats).rate_limited += 1;
            return fault(
                dialect,
                StatusCode::TOO_MANY_REQUESTS,
                "Receiver",
                Some("Throttled"),
                &format!(
                    "For mange kald: højst {limit} kald pr. sekund (simuleret kapacitetsgrænse)"
                ),
            );
        }
    }

    // Random faults, then scripted ones.
    let mut injected: Option<FaultKind> = None;
    {
        let mut rng = lock(&shared.rng);
        if options.faults.fault_rate > 0.0
            && rng.random_bool(options.faults.fault_rate.clamp(0.0, 1.0))
        {
            injected = Some(if rng.random_bool(0.5) {
                FaultKind::Http(503)
            } else {
                FaultKind::SoapFault {
                    code: "Receiver".to_owned(),
                    subcode: Some("Unavailable".to_owned()),
                    reason: "Midlertidig fejl (simuleret)".to_owned(),
                }
            });
        } else if options.faults.status_error_rate > 0.0
            && rng.random_bool(options.faults.status_error_rate.clamp(0.0, 1.0))
        {
            injected = Some(FaultKind::Status {
                code: 50,
                message: "Intern fejl (simuleret)".to_owned(),
            });
        }
    }
    if injected.is_none() {
        let mut scripted = lock(&shared.scripted);
        for state in scripted.iter_mut() {
            if key.contains(&state.fault.target) {
                state.seen += 1;
                if state.seen > state.fault.after
                    && state.seen <= state.fault.after + state.fault.times
                {
                    injected = Some(state.fault.kind.clone());
                    break;
                }
            }
        }
    }
    if injected.is_some() {
        lock(&shared.stats).faults_injected += 1;
    }

    let (mut response, rows) = match (&request, op) {
        (Err(message), _) => (
            fault(
                dialect,
                StatusCode::BAD_REQUEST,
                "Sender",
                Some("Malformed"),
                message,
            ),
            0,
        ),
        (Ok(r), None) => (
            fault(
                dialect,
                StatusCode::BAD_REQUEST,
                "Sender",
                Some("UnknownOperation"),
                &format!("ukendt operation {{{}}}{}", r.namespace, r.local_name),
            ),
            0,
        ),
        (Ok(r), Some(op)) => match token_scope(&options, &text) {
            Err(refusal) => (security_fault(&shared, &refusal), 0),
            Ok(token_cvr) => respond(
                &shared,
                &options,
                dialect,
                service,
                op,
                r,
                &headers,
                token_cvr.as_ref(),
                injected.as_ref(),
            ),
        },
    };

    let mut delay = {
        let mut rng = lock(&shared.rng);
        options.latency.sample(&mut rng, rows)
    };
    match injected {
        Some(FaultKind::Http(code)) => {
            response = http(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "text/plain",
                "Service Unavailable (simuleret)".to_owned(),
            );
        }
        Some(FaultKind::SoapFault {
            code,
            subcode,
            reason,
        }) => {
            response = fault(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                &code,
                subcode.as_deref(),
                &reason,
            );
        }
        Some(FaultKind::Garbage) => {
            response = http(
                StatusCode::OK,
                "text/html",
                "<html><body><h1>Fejl</h1>".to_owned(),
            );
        }
        Some(FaultKind::Truncate) => {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let half = String::from_utf8_lossy(&bytes[..bytes.len() / 2]).into_owned();
            response = http(StatusCode::OK, "application/soap+xml; charset=utf-8", half);
        }
        Some(FaultKind::Oversize(n)) => {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            text.push_str("<!--");
            text.push_str(&"x".repeat(n));
            text.push_str("-->");
            response = http(StatusCode::OK, "application/soap+xml; charset=utf-8", text);
        }
        Some(FaultKind::Delay(extra)) => delay += extra,
        Some(FaultKind::Status { .. }) | None => {}
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn action_of(headers: &HeaderMap) -> Option<String> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let from_type = content_type.split(';').find_map(|part| {
        let part = part.trim();
        part.strip_prefix("action=")
            .map(|a| a.trim_matches('"').to_owned())
    });
    from_type.or_else(|| {
        headers
            .get("soapaction")
            .and_then(|v| v.to_str().ok())
            .map(|a| a.trim_matches('"').to_owned())
    })
}

const STS_SOAP_PATH: &str = "/runtime/services/kombittrust/14/certificatemixed";
const STS_REST_PATH: &str = "/runtime/api/rest/wstrust/v1/issue";

/// Under `--require-signatures`, the CVR of the call's verified token; otherwise `None`.
fn token_scope(options: &SimOptions, body: &str) -> Result<Option<Cvr>, Refusal> {
    let Some(security) = options.security.as_ref().filter(|s| s.require_signatures) else {
        return Ok(None);
    };
    let cvr = security::check_call(security, body, Utc::now())?;
    Cvr::parse(&cvr).map(Some).map_err(|_| Refusal {
        code: "Sender",
        subcode: "InvalidSecurityToken",
        reason: format!("the token's CvrNumberIdentifier {cvr:?} is not a CVR"),
    })
}

fn security_fault(shared: &Shared, refusal: &Refusal) -> Response {
    lock(&shared.stats).security_refusals += 1;
    tracing::info!(subcode = refusal.subcode, reason = %refusal.reason, "call refused by the security checks");
    http(
        StatusCode::INTERNAL_SERVER_ERROR,
        "application/soap+xml; charset=utf-8",
        security::refused_body(refusal),
    )
}

/// `POST` to the STS SOAP endpoint: a signed WS-Trust issue request.
async fn sts_soap(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let options = shared
        .options
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(security) = options.security else {
        return http(
            StatusCode::NOT_FOUND,
            "text/plain",
            "no STS: the simulator runs without security".to_owned(),
        );
    };
    let now = Utc::now();
    let request = match security::token_request(&security, &String::from_utf8_lossy(&body), now) {
        Ok(request) => request,
        Err(refusal) => return security_fault(&shared, &refusal),
    };
    match issue(&shared, &security, &request, now) {
        Ok((assertion, id)) => http(
            StatusCode::OK,
            "application/soap+xml; charset=utf-8",
            security::token_response(&security, &assertion, &id, &request.entity_id, now),
        ),
        Err(refusal) => security_fault(&shared, &refusal),
    }
}

/// `POST` to the STS REST endpoint: the JSON variant.
async fn sts_rest(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let options = shared
        .options
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(security) = options.security else {
        return http(StatusCode::NOT_FOUND, "text/plain", "no STS".to_owned());
    };
    let now = Utc::now();
    let outcome = security::rest_token_request(&security, &body, now)
        .and_then(|request| issue(&shared, &security, &request, now).map(|a| (a, request)));
    match outcome {
        Ok(((assertion, _), request)) => {
            use base64::Engine as _;
            let json = serde_json::json!({
                "RequestedSecurityToken": { "Assertion": base64::engine::general_purpose::STANDARD.encode(assertion) },
                "AppliesTo": { "EndpointReference": { "Address": request.entity_id } },
                "KeyType": "http://docs.oasis-open.org/ws-sx/ws-trust/200512/PublicKey",
                "TokenType": "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV2.0",
                "RequestType": "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue",
            });
            http(StatusCode::OK, "application/json", json.to_string())
        }
        Err(refusal) => {
            lock(&shared.stats).security_refusals += 1;
            let json = serde_json::json!({
                "status": 400,
                "error": refusal.subcode,
                "message": format!("{}: {}", refusal.subcode, refusal.reason),
            });
            http(
                StatusCode::BAD_REQUEST,
                "application/json",
                json.to_string(),
            )
        }
    }
}

/// Issues an assertion when the CVR is served (has a service agreement).
fn issue(
    shared: &Shared,
    security: &SimSecurity,
    request: &security::TokenRequest,
    now: DateTime<Utc>,
) -> Result<(String, String), Refusal> {
    let served = Cvr::parse(&request.cvr).ok().is_some_and(|cvr| {
        shared
            .worlds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&cvr)
    });
    if !served {
        return Err(Refusal {
            code: "Sender",
            subcode: "ServiceAgreementNotFound",
            reason: format!(
                "der findes ingen serviceaftale for CVR {} og {} (no service agreement)",
                request.cvr, request.entity_id
            ),
        });
    }
    let assertion = security::assertion(
        security,
        &security.pki.sts,
        &request.cvr,
        &request.entity_id,
        &request.holder,
        now,
    );
    let id = assertion
        .split("ID=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    *lock(&shared.stats)
        .tokens_issued
        .entry(request.cvr.clone())
        .or_default() += 1;
    tracing::info!(customer.cvr = %request.cvr, entity_id = %request.entity_id, "simulated STS issued a token");
    Ok((assertion, id))
}

/// A relation in a search that names an Organisation other than the token's municipality's.
fn foreign_organisation(world: &World, payload: &str) -> Option<Uuid> {
    let input: SoegIn = quick_xml::de::from_str(payload).ok()?;
    let relations = input.relations?;
    relations
        .belongs_to
        .iter()
        .chain(relations.organisations.iter())
        .filter_map(reference)
        .find(|id| *id != world.organisation)
}

#[allow(clippy::too_many_arguments)]
fn respond(
    shared: &Shared,
    options: &SimOptions,
    dialect: Dialect,
    service: Service,
    op: Op,
    request: &crate::xml::Request<'_>,
    headers: &HeaderMap,
    token_cvr: Option<&Cvr>,
    injected: Option<&FaultKind>,
) -> (Response, usize) {
    let transaction = request.transaction.as_deref();
    if request.namespace != dialect.namespace(service) {
        return (
            fault(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sender",
                Some("WrongNamespace"),
                &format!(
                    "{} skal være i navnerummet {}, ikke {}",
                    request.local_name,
                    dialect.namespace(service),
                    request.namespace
                ),
            ),
            0,
        );
    }
    if (op == Op::Hierarchy) != (service == Service::OrganisationSystem) {
        return (
            fault(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sender",
                Some("UnknownOperation"),
                "operationen findes ikke på denne service",
            ),
            0,
        );
    }
    let expected_action = dialect.action(service, op.name());
    if let Some(expected) = dialect.wrapper_namespace(service) {
        let wanted = format!(
            "{}Request",
            op.response_wrapper().trim_end_matches("Response")
        );
        let ok = request
            .wrapper
            .as_ref()
            .is_some_and(|(ns, local)| *ns == expected && *local == wanted);
        if !ok {
            return (
                fault(
                    dialect,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sender",
                    Some("Malformed"),
                    &format!(
                        "{} skal stå i {{{expected}}}{wanted}, ikke i {:?}",
                        request.local_name, request.wrapper
                    ),
                ),
                0,
            );
        }
    }
    for action in [action_of(headers), request.wsa_action.clone()]
        .into_iter()
        .flatten()
    {
        if action != expected_action {
            return (
                fault(
                    dialect,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sender",
                    Some("ActionMismatch"),
                    &format!(
                        "soapAction {action} passer ikke til {}; forventet {expected_action}",
                        request.local_name
                    ),
                ),
                0,
            );
        }
    }
    let worlds = shared.worlds.read().unwrap_or_else(|e| e.into_inner());
    let authority = request
        .authority_cvr
        .as_deref()
        .and_then(|c| Cvr::parse(c).ok());
    if let (Some(token), Some(authority)) = (token_cvr, authority.as_ref()) {
        if token != authority {
            drop(worlds);
            return (
                security_fault(
                    shared,
                    &Refusal {
                        code: "Sender",
                        subcode: "AccessDenied",
                        reason: format!(
                            "the token is for CVR {token}; its AuthorityContext names {authority}"
                        ),
                    },
                ),
                0,
            );
        }
    }
    let world = match headers.get(SIM_CVR_HEADER).and_then(|v| v.to_str().ok()) {
        _ if token_cvr.is_some() => token_cvr.and_then(|c| worlds.get(c).cloned()),
        // v5: the municipality is the AuthorityContext's, whatever else the call says.
        _ if dialect == Dialect::Serviceplatformen5 => {
            authority.as_ref().and_then(|c| worlds.get(c).cloned())
        }
        Some(cvr) => Cvr::parse(cvr).ok().and_then(|c| worlds.get(&c).cloned()),
        None if worlds.len() == 1 => worlds.values().next().cloned(),
        None => None,
    };
    let Some(world) = world else {
        return (
            fault(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sender",
                Some("ServiceAgreementNotFound"),
                "ingen serviceaftale for denne myndighed (ukendt eller manglende CVR)",
            ),
            0,
        );
    };
    if token_cvr.is_some() && op == Op::Soeg {
        if let Some(foreign) = foreign_organisation(&world, request.payload) {
            drop(worlds);
            return (
                security_fault(
                    shared,
                    &Refusal {
                        code: "Sender",
                        subcode: "AccessDenied",
                        reason: format!(
                            "the token is for CVR {}, whose Organisation is {}; it gives no access to Organisation {foreign}",
                            world.cvr, world.organisation
                        ),
                    },
                ),
                0,
            );
        }
    }
    let now = Utc::now();
    let output = match op {
        Op::Soeg => soeg(
            dialect,
            &worlds,
            &world,
            options,
            service,
            request.payload,
            now,
        ),
        Op::List | Op::Laes => list(dialect, &world, options, service, op, request.payload, now),
        Op::Hierarchy => hierarchy(dialect, &world, options, request.payload, now),
    };
    drop(worlds);
    let output = match injected {
        Some(FaultKind::Status { code, message }) => {
            Output::status(dialect, service, op, *code, message)
        }
        _ => output,
    };
    (
        soap_response(
            dialect,
            StatusCode::OK,
            transaction,
            &wrap_output(dialect, service, op, &output.xml),
        ),
        output.rows,
    )
}

struct Output {
    xml: String,
    rows: usize,
}

fn output_element(dialect: Dialect, service: Service, op: Op) -> (String, Vec<(String, String)>) {
    let ns = |service: Service| dialect.namespace(service);
    match op {
        Op::Hierarchy => (
            "ns6:FremsoegObjekthierarkiOutput".to_owned(),
            root_namespaces(
                dialect,
                &ns(Service::OrganisationEnhed),
                &[("ns6", ns(Service::OrganisationSystem))],
            ),
        ),
        Op::Soeg => (
            "ns5:SoegOutput".to_owned(),
            root_namespaces(dialect, &ns(service), &[]),
        ),
        Op::List => (
            "ns5:ListOutput".to_owned(),
            root_namespaces(dialect, &ns(service), &[]),
        ),
        Op::Laes => (
            "ns5:LaesOutput".to_owned(),
            root_namespaces(dialect, &ns(service), &[]),
        ),
    }
}

fn standard_retur(w: &mut XmlWriter, code: i64, message: &str) {
    w.open("ns2:StandardRetur");
    w.leaf("ns2:StatusKode", &code.to_string());
    w.leaf("ns2:FejlbeskedTekst", message);
    w.end("ns2:StandardRetur");
}

impl Output {
    fn status(dialect: Dialect, service: Service, op: Op, code: i64, message: &str) -> Output {
        let (root, attrs) = output_element(dialect, service, op);
        let mut w = XmlWriter::new();
        w.start(&root, &attrs);
        standard_retur(&mut w, code, message);
        if op == Op::Hierarchy {
            for container in [
                "Organisationer",
                "OrganisationEnheder",
                "OrganisationFunktioner",
                "Brugere",
                "Interessefaellesskaber",
                "ItSystemer",
            ] {
                w.empty(&format!("ns6:{container}"));
            }
        }
        w.end(&root);
        Output {
            xml: w.finish(),
            rows: 0,
        }
    }
}

#[derive(Deserialize, Default)]
struct TidIn {
    #[serde(rename = "TidsstempelDatoTid", default)]
    stamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct VirkningIn {
    #[serde(rename = "FraTidspunkt", default)]
    from: Option<TidIn>,
    #[serde(rename = "TilTidspunkt", default)]
    to: Option<TidIn>,
}

#[derive(Deserialize, Default)]
struct IdIn {
    #[serde(rename = "UUIDIdentifikator", default)]
    uuid: Option<String>,
}

#[derive(Deserialize, Default)]
struct RefIn {
    #[serde(rename = "ReferenceID", default)]
    reference: Option<IdIn>,
}

#[derive(Deserialize, Default)]
struct RelationsIn {
    #[serde(rename = "Tilhoerer", default)]
    belongs_to: Vec<RefIn>,
    #[serde(rename = "Virksomhed", default)]
    company: Vec<RefIn>,
    #[serde(rename = "Funktionstype", default)]
    function_type: Vec<RefIn>,
    #[serde(rename = "TilknyttedeBrugere", default)]
    users: Vec<RefIn>,
    #[serde(rename = "TilknyttedeEnheder", default)]
    units: Vec<RefIn>,
    #[serde(rename = "TilknyttedeOrganisationer", default)]
    organisations: Vec<RefIn>,
    #[serde(rename = "Overordnet", default)]
    parent: Vec<RefIn>,
}

#[derive(Deserialize, Default)]
struct EgenskabIn {
    #[serde(rename = "CVR-NummerTekst", default)]
    cvr: Option<String>,
    #[serde(rename = "BrugerNavn", default)]
    user_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct AttributesIn {
    #[serde(rename = "Egenskab", default)]
    properties: Vec<EgenskabIn>,
}

#[derive(Deserialize, Default)]
struct GyldighedIn {
    #[serde(rename = "GyldighedStatusKode", default)]
    status: Option<String>,
}

#[derive(Deserialize, Default)]
struct StatesIn {
    #[serde(rename = "Gyldighed", default)]
    validity: Vec<GyldighedIn>,
}

#[derive(Deserialize, Default)]
struct SoegIn {
    #[serde(rename = "FoersteResultatReference", default)]
    offset: Option<String>,
    #[serde(rename = "MaksimalAntalKvantitet", default)]
    limit: Option<String>,
    #[serde(rename = "SoegVirkning", default)]
    virkning: Option<VirkningIn>,
    #[serde(rename = "AttributListe", default)]
    attributes: Option<AttributesIn>,
    #[serde(rename = "TilstandListe", default)]
    states: Option<StatesIn>,
    #[serde(rename = "RelationListe", default)]
    relations: Option<RelationsIn>,
}

#[derive(Deserialize, Default)]
struct ListIn {
    #[serde(rename = "UUIDIdentifikator", default)]
    ids: Vec<String>,
    #[serde(rename = "VirkningFraFilter", default)]
    from: Option<TidIn>,
    #[serde(rename = "VirkningTilFilter", default)]
    to: Option<TidIn>,
}

fn parse_stamp(t: &Option<TidIn>) -> Option<DateTime<Utc>> {
    let text = t.as_ref()?.stamp.as_deref()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn window(
    options: &SimOptions,
    from: &Option<TidIn>,
    to: &Option<TidIn>,
    given: bool,
    now: DateTime<Utc>,
) -> Window {
    if options.full_history {
        return Window {
            from: None,
            to: None,
            everything: true,
        };
    }
    if !given {
        return Window::now(now);
    }
    let from = parse_stamp(from);
    let to = parse_stamp(to);
    if from.is_some() && from == to {
        return Window::now(from.unwrap_or(now));
    }
    Window {
        from,
        to,
        everything: false,
    }
}

fn reference(r: &RefIn) -> Option<Uuid> {
    r.reference
        .as_ref()?
        .uuid
        .as_deref()
        .and_then(|t| Uuid::parse_str(t.trim()).ok())
}

fn paging(
    options: &SimOptions,
    offset: &Option<String>,
    limit: &Option<String>,
) -> Result<(usize, usize), String> {
    let offset = match offset.as_deref().map(str::trim) {
        _ if options.ignore_offset => 0,
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| format!("FoersteResultatReference {t:?} er ikke et tal"))?,
    };
    let limit = match limit.as_deref().map(str::trim) {
        None => options.max_page_size as usize,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| format!("MaksimalAntalKvantitet {t:?} er ikke et tal"))?,
    };
    if limit > options.max_page_size as usize {
        return Err(format!(
            "MaksimalAntalKvantitet må højst være {}",
            options.max_page_size
        ));
    }
    Ok((offset, limit))
}

fn soeg(
    dialect: Dialect,
    worlds: &HashMap<Cvr, Arc<World>>,
    world: &World,
    options: &SimOptions,
    service: Service,
    payload: &str,
    now: DateTime<Utc>,
) -> Output {
    let input: SoegIn = match quick_xml::de::from_str(payload) {
        Ok(input) => input,
        Err(e) => {
            return Output::status(
                dialect,
                service,
                Op::Soeg,
                40,
                &format!("ugyldig SoegInput: {e}"),
            );
        }
    };
    let (offset, limit) = match paging(options, &input.offset, &input.limit) {
        Ok(p) => p,
        Err(message) => return Output::status(dialect, service, Op::Soeg, 40, &message),
    };
    let window = window(
        options,
        &input.virkning.as_ref().and_then(|v| {
            v.from.as_ref().map(|t| TidIn {
                stamp: t.stamp.clone(),
            })
        }),
        &input.virkning.as_ref().and_then(|v| {
            v.to.as_ref().map(|t| TidIn {
                stamp: t.stamp.clone(),
            })
        }),
        input.virkning.is_some(),
        now,
    );
    let relations = input.relations.unwrap_or_default();
    let status = input
        .states
        .as_ref()
        .and_then(|s| s.validity.iter().find_map(|g| g.status.clone()))
        .map(|s| s.trim().to_owned());
    let properties = input.attributes.unwrap_or_default().properties;
    let one = |list: &Vec<RefIn>| list.iter().find_map(reference);
    let org_ok = |list: &Vec<RefIn>| {
        list.is_empty()
            || list
                .iter()
                .filter_map(reference)
                .any(|id| id == world.organisation)
    };
    let ids: Vec<Uuid> = match service {
        Service::Virksomhed => {
            let cvr = properties
                .iter()
                .find_map(|p| p.cvr.clone())
                .map(|c| c.trim().to_owned());
            worlds
                .values()
                .filter(|w| cvr.as_deref().is_none_or(|c| c == w.cvr.as_str()))
                .map(|w| w.company)
                .collect()
        }
        // v5 has no Virksomhed: an unfiltered search finds the AuthorityContext's Organisation.
        Service::Organisation if dialect == Dialect::Serviceplatformen5 => {
            let company = one(&relations.company);
            if company.is_none_or(|c| c == world.company) {
                vec![world.organisation]
            } else {
                Vec::new()
            }
        }
        Service::Organisation => {
            let company = one(&relations.company);
            worlds
                .values()
                .filter(|w| company.is_none_or(|c| c == w.company))
                .map(|w| w.organisation)
                .collect()
        }
        Service::Bruger => {
            if !org_ok(&relations.belongs_to) {
                Vec::new()
            } else {
                let name = properties.iter().find_map(|p| p.user_name.clone());
                let mut ids: Vec<Uuid> = world
                    .snapshot
                    .users
                    .iter()
                    .filter(|u| match status.as_deref() {
                        Some("Aktiv") => u.active,
                        Some("Inaktiv") => !u.active,
                        _ => true,
                    })
                    .filter(|u| name.as_deref().is_none_or(|n| n.trim() == u.user_name))
                    .map(|u| u.uuid.0)
                    .collect();
                if status.is_none() && name.is_none() {
                    ids.extend(world.ghosts.iter().copied());
                }
                ids
            }
        }
        Service::OrganisationEnhed => {
            if !org_ok(&relations.belongs_to) {
                Vec::new()
            } else {
                let parent = one(&relations.parent);
                world
                    .snapshot
                    .units
                    .iter()
                    .filter(|u| match status.as_deref() {
                        Some("Aktiv") => u.active,
                        Some("Inaktiv") => !u.active,
                        _ => true,
                    })
                    .filter(|u| parent.is_none_or(|p| u.parent_uuid.map(|x| x.0) == Some(p)))
                    .map(|u| u.uuid.0)
                    .collect()
            }
        }
        Service::OrganisationFunktion => {
            if !org_ok(&relations.organisations) {
                Vec::new()
            } else {
                let kind = one(&relations.function_type);
                let unit = one(&relations.units);
                let user = one(&relations.users);
                let candidates: Box<dyn Iterator<Item = usize>> = match unit {
                    Some(unit) => Box::new(
                        world
                            .functions_by_unit
                            .get(&unit)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter(),
                    ),
                    None => Box::new(0..world.functions.len()),
                };
                candidates
                    .filter(|&i| {
                        let f = &world.functions[i];
                        let f_kind = if f.position.manager {
                            FUNCTION_TYPE_MANAGER
                        } else {
                            FUNCTION_TYPE_POSITION
                        };
                        kind.is_none_or(|k| k == f_kind)
                            && user.is_none_or(|u| world.snapshot.users[f.user].uuid.0 == u)
                            && match status.as_deref() {
                                Some("Inaktiv") => !world.function_active_in(f, &window),
                                _ => world.function_active_in(f, &window),
                            }
                    })
                    .map(|i| world.functions[i].uuid)
                    .collect()
            }
        }
        Service::Person | Service::Adresse | Service::OrganisationSystem => {
            return Output::status(
                dialect,
                service,
                Op::Soeg,
                40,
                "simulatoren understøtter ikke soeg på denne service",
            );
        }
    };
    let page: Vec<Uuid> = ids.into_iter().skip(offset).take(limit).collect();
    let (root, attrs) = output_element(dialect, service, Op::Soeg);
    let mut w = XmlWriter::new();
    w.start(&root, &attrs);
    if page.is_empty() {
        standard_retur(&mut w, 44, "Ingen objekter fundet");
    } else {
        standard_retur(&mut w, 20, "OK");
        w.open("ns2:IdListe");
        for id in &page {
            w.leaf("ns2:UUIDIdentifikator", &id.to_string());
        }
        w.end("ns2:IdListe");
    }
    w.end(&root);
    Output {
        xml: w.finish(),
        rows: page.len(),
    }
}

fn list(
    dialect: Dialect,
    world: &World,
    options: &SimOptions,
    service: Service,
    op: Op,
    payload: &str,
    now: DateTime<Utc>,
) -> Output {
    let input: ListIn = match quick_xml::de::from_str(payload) {
        Ok(input) => input,
        Err(e) => {
            return Output::status(
                dialect,
                service,
                op,
                40,
                &format!(
                    "ugyldig {}: {e}",
                    if op == Op::Laes {
                        "LaesInput"
                    } else {
                        "ListInput"
                    }
                ),
            );
        }
    };
    if input.ids.is_empty() {
        return Output::status(dialect, service, op, 40, "UUIDIdentifikator mangler");
    }
    if input.ids.len() > options.max_list_ids || (op == Op::Laes && input.ids.len() > 1) {
        return Output::status(
            dialect,
            service,
            op,
            40,
            &format!("højst {} UUIDIdentifikator pr. kald", options.max_list_ids),
        );
    }
    let window = window(
        options,
        &input.from,
        &input.to,
        input.from.is_some() || input.to.is_some(),
        now,
    );
    let (root, attrs) = output_element(dialect, service, op);
    let mut body = XmlWriter::new();
    let mut found = 0;
    for text in &input.ids {
        let Ok(id) = Uuid::parse_str(text.trim()) else {
            return Output::status(
                dialect,
                service,
                op,
                40,
                &format!("{text:?} er ikke en UUID"),
            );
        };
        let mut item = XmlWriter::new();
        let written = match service {
            Service::OrganisationEnhed => world
                .units
                .get(&id)
                .map(|&i| world.write_unit(&mut item, dialect, "ns5", i, &window))
                .is_some(),
            Service::Bruger => match world.users.get(&id) {
                Some(&i) => {
                    world.write_user(&mut item, dialect, "ns5", i, &window);
                    true
                }
                None if world.ghosts.contains(&id) => {
                    world.write_ghost(&mut item, "ns5", id);
                    true
                }
                None => false,
            },
            Service::Person => world
                .persons
                .get(&id)
                .map(|&i| world.write_person(&mut item, "ns5", id, i))
                .is_some(),
            Service::Adresse => world
                .address(id)
                .map(|address| world.write_address(&mut item, "ns5", address))
                .is_some(),
            Service::OrganisationFunktion => world
                .function_index
                .get(&id)
                .map(|&i| world.write_function(&mut item, "ns5", i, &window))
                .is_some(),
            Service::Virksomhed => world
                .companies
                .get(&id)
                .map(|&company| world.write_company(&mut item, "ns5", id, company, &window))
                .is_some(),
            _ => false,
        };
        if written {
            found += 1;
            body.open("ns5:FiltreretOejebliksbillede");
            body.raw(&item.finish());
            body.end("ns5:FiltreretOejebliksbillede");
        }
    }
    let mut w = XmlWriter::new();
    w.start(&root, &attrs);
    if found == 0 {
        standard_retur(&mut w, 44, "Ingen objekter fundet");
    } else {
        standard_retur(&mut w, 20, "OK");
        w.raw(&body.finish());
    }
    w.end(&root);
    Output {
        xml: w.finish(),
        rows: 0,
    }
}

fn hierarchy(
    dialect: Dialect,
    world: &World,
    options: &SimOptions,
    payload: &str,
    now: DateTime<Utc>,
) -> Output {
    let service = Service::OrganisationSystem;
    let input: SoegIn = match quick_xml::de::from_str(payload) {
        Ok(input) => input,
        Err(e) => {
            return Output::status(
                dialect,
                service,
                Op::Hierarchy,
                40,
                &format!("ugyldig FremsoegObjekthierarkiInput: {e}"),
            );
        }
    };
    let (offset, limit) = match paging(options, &input.offset, &input.limit) {
        Ok(p) => p,
        Err(message) => return Output::status(dialect, service, Op::Hierarchy, 40, &message),
    };
    let window = window(options, &None, &None, false, now);
    let (root, attrs) = output_element(dialect, service, Op::Hierarchy);
    let mut w = XmlWriter::new();
    w.start(&root, &attrs);
    standard_retur(&mut w, 20, "OK");
    w.empty("ns6:Organisationer");
    let end = (offset.saturating_add(limit)).min(world.snapshot.units.len());
    let rows = end.saturating_sub(offset);
    if rows == 0 {
        w.empty("ns6:OrganisationEnheder");
    } else {
        w.open("ns6:OrganisationEnheder");
        for index in offset..end {
            w.open("ns6:FiltreretOejebliksbillede");
            world.write_unit(&mut w, dialect, "ns5", index, &window);
            w.end("ns6:FiltreretOejebliksbillede");
        }
        w.end("ns6:OrganisationEnheder");
    }
    for container in [
        "OrganisationFunktioner",
        "Brugere",
        "Interessefaellesskaber",
        "ItSystemer",
    ] {
        w.empty(&format!("ns6:{container}"));
    }
    w.end(&root);
    Output {
        xml: w.finish(),
        rows,
    }
}
