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
