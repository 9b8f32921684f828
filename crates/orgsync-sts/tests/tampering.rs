//! Tampered or misused signed calls: the simulator with `--require-signatures` refuses each with a SOAP fault, and the client reports it clearly and does not retry.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::sync::Arc;

use common::signed::*;
use common::*;
use orgsync_model::ids::Cvr;
use orgsync_sts::client::StsClient;
use orgsync_sts::error::StsError;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::signed::{SignedOptions, SignedTransport};
use orgsync_sts::token::SamlToken;
use orgsync_sts::transport::{SoapCall, Transport, TransportFuture};
use orgsync_sts_sim::generate::Size;
use orgsync_sts_sim::server::Simulator;

/// A signed transport whose envelope is edited after signing.
#[derive(Debug)]
struct Tampering {
    inner: SignedTransport,
    edit: fn(String) -> String,
}

impl Transport for Tampering {
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a> {
        Box::pin(async move {
            let envelope = self.inner.envelope(call).await?;
            self.inner.post(call, (self.edit)(envelope)).await
        })
    }
}

fn client_on(sim: &Simulator, cvr: &Cvr, transport: Arc<dyn Transport>) -> StsClient {
    StsClient::with_transport(
        cvr.clone(),
        &fast_options(sim),
        SystemLimits::new(0.0),
        transport,
    )
}

/// The read fails with a non-retriable fault naming `expected`, and the service refused at most
/// `max_refusals` calls (one per concurrent stream of the read; none is retried).
fn assert_refused(error: &StsError, sim: &Simulator, expected: &str, max_refusals: u64) {
    assert!(matches!(error, StsError::Fault { .. }), "{error:?}");
    assert!(!error.is_retriable(), "{error}");
    let text = error.to_string();
    assert!(text.contains(expected), "{text}");
    assert!(text.contains("retrying will not help"), "{text}");
    let refusals = sim.stats().security_refusals;
    assert!(
        (1..=max_refusals).contains(&refusals),
        "{refusals} refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_changed_after_signing_is_refused() {
    let sim = start_secure(vec![municipality(Size::Xs, 1)]).await;
    let session = session_with(token_options(&sim));
    let transport = Tampering {
        inner: session.transport(SignedOptions::default()),
        edit: |envelope| envelope.replacen("</s:Body>", "<x:Extra xmlns:x=\"urn:x\"/></s:Body>", 1),
    };
    let error = client_on(&sim, &cvr(), Arc::new(transport))
        .read_snapshot()
        .await
        .unwrap_err();
    assert_refused(&error, &sim, "FailedCheck", 1);
    assert!(error.to_string().contains("#_1"), "{error}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_timestamp_is_refused() {
    let sim = start_secure(vec![municipality(Size::Xs, 1)]).await;
    let session = session_with(token_options(&sim));
    session.tokens().token(&cvr()).await.unwrap();
    let late = session.transport(SignedOptions {
        clock_offset: chrono::Duration::hours(-1),
        ..SignedOptions::default()
    });
    let error = client_on(&sim, &cvr(), Arc::new(late))
        .read_snapshot()
        .await
        .unwrap_err();
    assert_refused(&error, &sim, "MessageExpired", 1);
    assert!(error.to_string().contains("clock"), "{error}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_cvr_gives_no_access_to_this_municipality() {
    let ours = municipality(Size::Xs, 1);
    let theirs_cvr = Cvr::parse("11111111").unwrap();
    let theirs = orgsync_sts_sim::generate::generate(&theirs_cvr, Size::Xs, 2, today());
    let sim = start_secure(vec![ours, theirs]).await;
    let session = session_with(token_options(&sim));
    let their_token = session.tokens().token(&theirs_cvr).await.unwrap();
    session.tokens().insert(&cvr(), their_token).await;
    let error = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap_err();
    assert_refused(&error, &sim, "AccessDenied", 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() {
    let sim = start_secure(vec![municipality(Size::Xs, 1)]).await;
    let mut options = token_options(&sim);
    options.entity_id = "http://stoettesystemerne.dk/service/klassifikation/7".to_owned();
    let session = session_with(options);
    let error = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap_err();
    // The first refusal (wsse:InvalidSecurityToken) renews the token once; the new token has
    // the same wrong audience, so the second refusal stands: two refusals, then the error.
    assert_refused(&error, &sim, "Audience", 2);
    assert!(error.to_string().contains("entity_id"), "{error}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_signed_by_an_untrusted_key_is_refused_and_replaced_by_a_genuine_token_once() {
    let sim = start_secure(vec![municipality(Size::Xs, 1)]).await;
    let session = session_with(token_options(&sim));
    let forged = sim
        .issue_assertion(
            cvr().as_str(),
            "http://stoettesystemerne.dk/service/organisation/3",
            &pki().client.certificate,
            true,
        )
        .unwrap();
    session
        .tokens()
        .insert(&cvr(), SamlToken::from_assertion(&forged).unwrap())
        .await;
    // The service refuses the forged token (wsse:InvalidSecurityToken): the client drops it,
    // fetches a genuine one from the STS once, and the read goes on with that; the forged token
    // never gets data.
    let read = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap();
    assert!(!read.snapshot.users.is_empty());
    assert_eq!(
        sim.stats().security_refusals,
        1,
        "only the forged token's call was refused"
    );
    assert_eq!(
        session.tokens().issued(),
        1,
        "the forged token was replaced by one genuine token, once"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_itself_refuses_a_token_not_signed_by_a_trusted_sts_certificate() {
    let sim = start_secure(vec![municipality(Size::Xs, 1)]).await;
    let mut options = token_options(&sim);
    options.trusted_sts_certificates = vec![pki().rogue.certificate.clone()];
    let session = session_with(options);
    let error = session.tokens().token(&cvr()).await.unwrap_err();
    assert!(!error.is_retriable());
    assert!(
        error.to_string().contains("not a trusted STS certificate"),
        "{error}"
    );
    // With the real STS certificate trusted, the same token is accepted after verification.
    let mut options = token_options(&sim);
    options.trusted_sts_certificates = vec![pki().sts.certificate.clone()];
    let token = session_with(options).tokens().token(&cvr()).await.unwrap();
    assert_eq!(token.cvr(), cvr().as_str());
    sim.shutdown().await;
}
