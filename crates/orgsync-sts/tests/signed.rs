//! The signed profile against the simulator with `--require-signatures`: tokens over mutual TLS, one per CVR, signed calls accepted and tampered ones refused.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use common::signed::*;
use common::*;
use orgsync_model::ids::Cvr;
use orgsync_sts::error::StsError;
use orgsync_sts::token::TokenProtocol;
use orgsync_sts_sim::generate::{Size, expected_read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_m_read_with_require_signatures_yields_the_model_with_one_token_per_cvr() {
    // The xl read is `cargo bench -p orgsync-sts --bench signed_xl` (too slow for a debug test).
    let truth = municipality(Size::M, 5);
    let other =
        orgsync_sts_sim::generate::generate(&Cvr::parse("11111111").unwrap(), Size::Xs, 2, today());
    let sim = start_secure(vec![truth.clone(), other.clone()]).await;
    let session = session_with(token_options(&sim));
    let client = signed_client(&sim, &session, &cvr());
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    // A second read (a second client of the same session, as a second run would be) reuses the token.
    let again = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap();
    assert_eq!(again.snapshot.units.len(), truth.units.len());
    // Another municipality gets its own token, and only its own data.
    let theirs = signed_client(&sim, &session, &other.cvr)
        .read_snapshot()
        .await
        .unwrap();
    assert_eq!(
        normalised(theirs.snapshot),
        normalised(expected_read(&other, today()))
    );
    let stats = sim.stats();
    assert_eq!(
        stats.tokens_issued.get(cvr().as_str()),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.tokens_issued.get("11111111"), Some(&1));
    assert_eq!(session.tokens().issued(), 2);
    assert_eq!(stats.security_refusals, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_refuses_a_tls_client_without_a_certificate() {
    let sim = start_secure(vec![municipality(Size::Xs, 5)]).await;
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&pki().ca).unwrap())
        .build()
        .unwrap();
    let refused = anonymous.post(sim.sts_url()).body("<x/>").send().await;
    assert!(refused.is_err(), "{refused:?}");
    // With the system certificate the same STS issues a token.
    let session = session_with(token_options(&sim));
    let _ = session.tokens().token(&cvr()).await.unwrap();
    assert_eq!(sim.stats().tokens_issued.get(cvr().as_str()), Some(&1));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_token_endpoint_is_an_alternative_to_soap() {
    let truth = municipality(Size::Xs, 5);
    let sim = start_secure(vec![truth.clone()]).await;
    let mut options = token_options(&sim);
    options.protocol = TokenProtocol::Rest;
    let session = session_with(options);
    let read = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap();
    assert_eq!(read.snapshot.units.len(), truth.units.len());
    assert_eq!(session.tokens().issued(), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_without_a_service_agreement_is_refused_clearly_and_not_retried() {
    let sim = start_secure(vec![municipality(Size::Xs, 5)]).await;
    let session = session_with(token_options(&sim));
    let stranger = Cvr::parse("22222222").unwrap();
    let error = signed_client(&sim, &session, &stranger)
        .read_snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, StsError::Token { .. }), "{error:?}");
    assert!(!error.is_retriable());
    let text = error.to_string();
    assert!(text.contains("ServiceAgreementNotFound"), "{text}");
    assert!(text.contains("administration module"), "{text}");
    assert_eq!(sim.stats().security_refusals, 1, "one refusal, no retry");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_xl_read_with_require_signatures_succeeds_with_one_token() {
    let truth = municipality(Size::Xl, 1);
    let sim = start_secure(vec![truth.clone()]).await;
    let session = session_with(token_options(&sim));
    let started = std::time::Instant::now();
    let read = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    let stats = sim.stats();
    assert_eq!(stats.tokens_issued.get(cvr().as_str()), Some(&1));
    assert_eq!(stats.security_refusals, 0);
    assert_eq!(stats.calls, read.calls);
    eprintln!(
        "xl signed read: {} calls in {seconds:.1} s, 1 token",
        read.calls
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_read_is_renewed_once_and_the_read_completes() {
    let truth = municipality(Size::S, 5);
    let options = orgsync_sts_sim::server::SimOptions {
        security: Some(orgsync_sts_sim::security::SimSecurity::new(pki(), true)),
        latency: orgsync_sts_sim::server::LatencyModel::fixed(20),
        ..orgsync_sts_sim::server::SimOptions::default()
    };
    let sim = orgsync_sts_sim::server::Simulator::start(vec![truth.clone()], options)
        .await
        .unwrap();
    let session = session_with(token_options(&sim));
    let client = signed_client(&sim, &session, &cvr());
    let mut progress = client.progress();
    let ledger = sim.options().security.unwrap().ledger;
    let revoker = tokio::spawn(async move {
        // Mid-read: once 10 calls are done, the STS revokes the token in use.
        while progress.changed().await.is_ok() {
            if progress.borrow_and_update().calls >= 10 {
                return ledger.revoke_all();
            }
        }
        0
    });
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(revoker.await.unwrap(), 1, "one token was revoked mid-read");
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    let stats = sim.stats();
    // Every call in flight with the revoked token was refused and repeated; one new token served all.
    assert!(stats.security_refusals >= 1, "{stats:?}");
    assert_eq!(session.tokens().issued(), 2);
    assert_eq!(stats.tokens_issued.get(cvr().as_str()), Some(&2));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_another_issuer_is_refused_and_the_cause_is_stated_once() {
    let truth = municipality(Size::Xs, 3);
    let sim = start_secure(vec![truth.clone()]).await;
    let issuer = sim.options().security.unwrap().issuer;

    // The environment's issuer: accepted.
    let mut options = token_options(&sim);
    options.issuer = Some(issuer.clone());
    let session = session_with(options);
    let read = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap();
    assert_eq!(read.snapshot.units.len(), truth.units.len());

    // Signed by the trusted STS key, but naming another issuer than the environment's.
    let mut options = token_options(&sim);
    options.issuer = Some("https://saml.n2adgangsstyring.stoettesystemerne.dk/runtime".to_owned());
    let session = session_with(options);
    let error = signed_client(&sim, &session, &cvr())
        .read_snapshot()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StsError::Token { cause, .. } if matches!(**cause, orgsync_sts::token::TokenError::Invalid(_))),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    // The whole chain, as the binary prints it, names the cause exactly once.
    let mut chain = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    let chain = chain.join(": ");
    assert_eq!(
        chain
            .matches(&format!("it was issued by {issuer:?}"))
            .count(),
        1,
        "{chain}"
    );
    assert_eq!(chain.matches("cannot be used").count(), 1, "{chain}");
    sim.shutdown().await;
}
