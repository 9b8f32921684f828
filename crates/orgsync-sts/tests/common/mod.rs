//! Helpers shared by the integration tests: a simulator with one municipality and a client for it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod signed;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::Snapshot;
use orgsync_sts::client::StsClient;
use orgsync_sts::error::TransportError;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts::transport::{SoapCall, Transport, TransportFuture, UnsignedTransport};
use orgsync_sts_sim::generate::{Size, generate};
use orgsync_sts_sim::server::{SimOptions, Simulator};

pub fn cvr() -> Cvr {
    Cvr::parse("29189846").unwrap()
}

pub fn today() -> chrono::NaiveDate {
    orgsync_model::time::danish_date(&chrono::Utc::now())
}

pub fn municipality(size: Size, seed: u64) -> Snapshot {
    generate(&cvr(), size, seed, today())
}

/// Options for tests: fast backoff, no per-second limit unless asked.
pub fn fast_options(sim: &Simulator) -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        call_timeout: Duration::from_secs(20),
        ..ClientOptions::for_sim(sim.base_url())
    }
}

pub async fn start(snapshot: Snapshot, options: SimOptions) -> Simulator {
    Simulator::start(vec![snapshot], options).await.unwrap()
}

pub fn client(sim: &Simulator) -> StsClient {
    StsClient::new(cvr(), &fast_options(sim), SystemLimits::new(0.0)).unwrap()
}

/// Snapshots compare equal regardless of order.
pub fn normalised(mut snapshot: Snapshot) -> Snapshot {
    snapshot.units.sort_by_key(|u| u.uuid);
    snapshot.users.sort_by_key(|u| u.uuid);
    for user in &mut snapshot.users {
        user.positions.sort_by(|a, b| {
            (a.unit_uuid, a.manager, &a.title, a.valid_from, a.valid_to).cmp(&(
                b.unit_uuid,
                b.manager,
                &b.title,
                b.valid_from,
                b.valid_to,
            ))
        });
    }
    snapshot
}

/// A transport that records every call and answer.
#[derive(Debug)]
pub struct Recording {
    pub inner: UnsignedTransport,
    pub log: Mutex<Vec<(SoapCall, u16, Vec<u8>)>>,
}

impl Recording {
    pub fn new(options: &ClientOptions) -> Arc<Recording> {
        Arc::new(Recording {
            inner: UnsignedTransport::new(options).unwrap(),
            log: Mutex::new(Vec::new()),
        })
    }
}

impl Transport for Recording {
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a> {
        Box::pin(async move {
            let response = self.inner.send(call).await?;
            self.log
                .lock()
                .unwrap()
                .push((call.clone(), response.status, response.body.clone()));
            Ok::<_, TransportError>(response)
        })
    }
}
