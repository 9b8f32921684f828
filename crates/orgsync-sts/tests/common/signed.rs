//! Helpers for the signed profile: a simulator with its PKI, mutual TLS and `--require-signatures`, and signed clients for it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::Snapshot;
use orgsync_sts::client::StsClient;
use orgsync_sts::identity::ClientIdentity;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::signed::{SignedOptions, SignedSession};
use orgsync_sts::token::TokenOptions;
use orgsync_sts_sim::pki::SimPki;
use orgsync_sts_sim::security::SimSecurity;
use orgsync_sts_sim::server::{SimOptions, Simulator};

use super::fast_options;

/// One PKI per test binary (rcgen is quick, but there is no need to repeat it).
pub fn pki() -> Arc<SimPki> {
    static PKI: OnceLock<Arc<SimPki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(SimPki::generate().unwrap()))
        .clone()
}

/// A simulator with HTTPS, mutual TLS, the STS, and signature checks on every call.
pub async fn start_secure(municipalities: Vec<Snapshot>) -> Simulator {
    let options = SimOptions {
        security: Some(SimSecurity::new(pki(), true)),
        ..SimOptions::default()
    };
    Simulator::start(municipalities, options).await.unwrap()
}

/// The supplier's identity from the simulator's PKI.
pub fn identity() -> Arc<ClientIdentity> {
    let pki = pki();
    Arc::new(
        ClientIdentity::from_pem(
            pki.client.certificate_pem.as_bytes(),
            pki.client.key_pem.as_bytes(),
        )
        .unwrap(),
    )
}

/// Token options for the simulator's STS (the entity ID of Organisation 6).
pub fn token_options(sim: &Simulator) -> TokenOptions {
    TokenOptions::new(
        sim.sts_url(),
        sim.sts_rest_url(),
        "http://stoettesystemerne.dk/service/organisation/3",
    )
}

/// A session (certificate, mutual TLS, token cache) trusting the simulator's CA.
pub fn session_with(options: TokenOptions) -> SignedSession {
    SignedSession::new(identity(), &[pki().ca.clone()], options).unwrap()
}

/// A signed client for `cvr` on `session`.
pub fn signed_client(sim: &Simulator, session: &SignedSession, cvr: &Cvr) -> StsClient {
    let options = fast_options(sim);
    StsClient::with_transport(
        cvr.clone(),
        &options,
        SystemLimits::new(0.0),
        Arc::new(session.transport(SignedOptions::default())),
    )
}
