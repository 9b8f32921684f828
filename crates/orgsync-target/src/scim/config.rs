//! Settings of the SCIM adapter.

use std::time::Duration;

use orgsync_model::ids::Cvr;
use orgsync_model::policy::Mappings;
use secrecy::SecretString;
use url::Url;

/// How to reach one customer's SCIM service provider.
#[derive(Clone, Debug)]
pub struct ScimOptions {
    /// The base URL (`/Users` and `/Groups` are joined onto it); a trailing `/` is added.
    pub base_url: Url,
    /// The bearer token (never logged; `Debug` prints `[REDACTED]`).
    pub token: SecretString,
    /// The customer.
    pub cvr: Cvr,
    /// Which optional fields orgsync manages; the others are never written.
    pub mappings: Mappings,
    /// At most this many requests in flight.
    pub max_in_flight: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Page size for list requests (`count`).
    pub page_size: u32,
    /// A 429 whose `Retry-After` is longer than this is returned as an error for the job
    /// layer to retry later, rather than waited out in the adapter.
    pub max_retry_after: Duration,
    /// How many 429s in a row one request waits out.
    pub max_rate_limit_retries: u32,
}

impl ScimOptions {
    /// Options with the defaults: 4 in flight, 30 s timeout, pages of 100, 429s waited out up to
    /// 60 s, three times.
    pub fn new(base_url: Url, token: SecretString, cvr: Cvr, mappings: Mappings) -> ScimOptions {
        let mut base_url = base_url;
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        ScimOptions {
            base_url,
            token,
            cvr,
            mappings,
            max_in_flight: 4,
            timeout: Duration::from_secs(30),
            page_size: 100,
            max_retry_after: Duration::from_secs(60),
            max_rate_limit_retries: 3,
        }
    }
}
