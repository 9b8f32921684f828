//! Client configuration: where STS is, how politely to call it, and how much to read per call.

use std::time::Duration;

use url::Url;
use uuid::Uuid;

use crate::wire::Dialect;

/// Which STS installation the client talks to. The unsigned transport only works for `Sim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Environment {
    /// The local simulator (`orgsync-sts-sim`): unsigned SOAP on a loopback address.
    #[default]
    Sim,
    /// KOMBIT's external test ("eksterntest"): needs the signed profile (issue #7).
    ExternalTest,
    /// Production: needs the signed profile (issue #7).
    Production,
}

/// Everything the client needs, with the defaults of docs/sts-protocol.md §12 and docs/sizes.md §5.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The STS installation.
    pub environment: Environment,
    /// Which contract the services speak: Organisation 6 (default) or the legacy
    /// Serviceplatformen v5.
    pub dialect: Dialect,
    /// The Organisation base URL, ending in `/organisation/` (v5: `/service/Organisation/`);
    /// service paths are appended.
    pub base_url: Url,
    /// The municipality's Organisation UUID; `None` = look it up from the CVR (2 calls).
    pub organisation_uuid: Option<Uuid>,
    /// At most this many `list` calls in flight per customer (default 6).
    pub max_in_flight: usize,
    /// At most this many pages of searches (`soeg`, `FremsoegObjekthierarki`) in flight per
    /// customer, issued ahead of the page being read (default 4). A budget of its own, so that
    /// pages do not starve the lists: a customer has at most `max_in_flight +
    /// max_pages_in_flight` calls in flight; the calls per second hold regardless.
    pub max_pages_in_flight: usize,
    /// At most this many calls per second for the whole system, shared by all customers
    /// (default 14: KOMBIT's 50,000 calls/hour capacity rule). Enforced by [`crate::limits::SystemLimits`].
    pub max_calls_per_second: f64,
    /// Per-call timeout, connection to last byte (default 180 s, like OS2sync).
    pub call_timeout: Duration,
    /// The longest wait for the next bytes of a response body (default 30 s): a body that
    /// stalls after its headers fails after this rather than after `call_timeout`.
    pub read_timeout: Duration,
    /// At most this many STS calls per read, retries included (default 20,000: an `xl` read,
    /// Copenhagen, the largest, makes about 3,300; 20,000 take 24 minutes at 14 calls/s). With the previous read's size
    /// ([`ReadExpectation`]) the budget is derived from that instead. Reaching it stops the read
    /// with [`crate::error::StsError::ReadBound`].
    pub max_read_calls: u64,
    /// At most this many distinct objects (units, functions, users) found by one read's
    /// searches (default 500,000; `xl` has about 130,000). With the previous read's size the
    /// bound is derived from that instead.
    pub max_read_objects: u64,
    /// The longest a whole read may take (default 2 hours; an `xl` read takes about 5 min at
    /// 14 calls/s).
    pub read_deadline: Duration,
    /// Attempts per call, the first included (default 4).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, with ±25 % jitter (default 1 s).
    pub backoff_initial: Duration,
    /// Upper bound of the backoff (default 30 s).
    pub backoff_max: Duration,
    /// Largest response accepted, in bytes (default 8 MiB).
    pub max_response_bytes: usize,
    /// Page size of `soeg` and `FremsoegObjekthierarki` (default and maximum 500).
    pub page_size: u32,
    /// UUIDs per `list` call (default 100, the maximum).
    pub list_batch_size: usize,
    /// Read each unit's contact data (its `Adresser` relations and the Adresse objects they
    /// name): the customer's `unit_contact` mapping. Off (the default) costs no call.
    pub unit_contact: bool,
}

impl ClientOptions {
    /// Defaults for the simulator at `base_url`.
    pub fn for_sim(base_url: Url) -> ClientOptions {
        ClientOptions {
            base_url,
            ..ClientOptions::default()
        }
    }

    /// The options with page and batch sizes clamped to the protocol's limits.
    pub(crate) fn clamped(&self) -> ClientOptions {
        let mut options = self.clone();
        options.page_size = options.page_size.clamp(1, 500);
        options.list_batch_size = options.list_batch_size.clamp(1, 100);
        options.max_in_flight = options.max_in_flight.max(1);
        options.max_pages_in_flight = options.max_pages_in_flight.max(1);
        options.max_attempts = options.max_attempts.max(1);
        options
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            environment: Environment::Sim,
            dialect: Dialect::default(),
            base_url: Url::parse("http://127.0.0.1:8089/organisation/")
                .unwrap_or_else(|_| unreachable!()),
            organisation_uuid: None,
            max_in_flight: 6,
            max_pages_in_flight: 4,
            max_calls_per_second: 14.0,
            call_timeout: Duration::from_secs(180),
            read_timeout: Duration::from_secs(30),
            max_read_calls: 20_000,
            max_read_objects: 500_000,
            read_deadline: Duration::from_secs(2 * 60 * 60),
            max_attempts: 4,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_response_bytes: 8 * 1024 * 1024,
            page_size: 500,
            list_batch_size: 100,
            unit_contact: false,
        }
    }
}

/// The size of the customer's last trusted read (the pipeline's source-drop baseline), from
/// which a read derives its bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadExpectation {
    /// Active units of the last trusted read.
    pub units: u64,
    /// Active users of the last trusted read.
    pub users: u64,
}

impl ReadExpectation {
    /// The distinct objects the last read's searches found, about: its units, its users and
    /// as many functions (positions) as users.
    pub fn objects(&self) -> u64 {
        self.units.saturating_add(self.users.saturating_mul(2))
    }

    /// The distinct objects a read may find: three times the last read's, plus 10,000 (a
    /// municipality does not triple overnight; a small one may merge with another), never
    /// more than `absolute`.
    pub fn objects_bound(&self, absolute: u64) -> u64 {
        self.objects()
            .saturating_mul(3)
            .saturating_add(10_000)
            .min(absolute)
    }

    /// The calls a read may make: one call per 20 objects of the objects bound, plus 1,000
    /// (an `xl` read makes about 3,300 calls for about 130,000 objects, one per 40, so this is
    /// about 6 times the last read's calls; retries and the contact data fit the margin),
    /// never more than `absolute`.
    pub fn calls_bound(&self, absolute: u64) -> u64 {
        (self.objects_bound(u64::MAX) / 20)
            .saturating_add(1_000)
            .min(absolute)
    }
}
