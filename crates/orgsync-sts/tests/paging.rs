//! The pager: pages issued ahead within their own budget, the stop rules, and the progress figure.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts::pager::ReadProgress;
use orgsync_sts::transport::{SoapCall, Transport, TransportFuture, UnsignedTransport};
use orgsync_sts::wire::Operation;
use orgsync_sts_sim::generate::{Size, expected_read};
use orgsync_sts_sim::server::{LatencyModel, SimOptions};

/// Counts the calls in flight at once, pages and lists apart.
#[derive(Debug)]
struct Concurrency {
    inner: UnsignedTransport,
    pages: AtomicUsize,
    lists: AtomicUsize,
    max_pages: AtomicUsize,
    max_lists: AtomicUsize,
}

struct Out<'a>(&'a AtomicUsize);

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Transport for Concurrency {
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a> {
        Box::pin(async move {
            let (now, max) = match call.operation {
                Operation::Soeg | Operation::FremsoegObjekthierarki => {
                    (&self.pages, &self.max_pages)
                }
                Operation::List | Operation::Laes => (&self.lists, &self.max_lists),
            };
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(current, Ordering::SeqCst);
            // A page cancelled by the pager is dropped mid-call: count it out then too.
            let _out = Out(now);
            self.inner.send(call).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_the_offset_stops_the_read_as_partial_without_looping() {
    let truth = municipality(Size::S, 4);
    assert!(truth.users.len() > 500, "the users need two pages");
    let sim = start(
        truth,
        SimOptions {
            ignore_offset: true,
            ..SimOptions::default()
        },
    )
    .await;
    let read = tokio::time::timeout(Duration::from_secs(60), client(&sim).read_snapshot())
        .await
        .expect("the read ends")
        .unwrap();
    let partial = read.snapshot.partial.expect("the read is partial");
    assert!(
        !partial.is_retriable(),
        "a server ignoring the offset does so again: {partial:?}"
    );
    let partial = partial.to_string();
    assert!(
        partial.contains(
            "bruger soeg: the page at FoersteResultatReference 500 brought no UUID not seen before"
        ),
        "{partial}"
    );
    // The first page's users are read; the repeated page is not read twice.
    let soeg = sim.stats().by_operation["bruger/soeg"];
    assert!((2..=3).contains(&soeg), "{soeg} Bruger soeg calls");
    // The first page's users are read (passivated ones among them are absent).
    assert!(
        (400..=500).contains(&read.snapshot.users.len()),
        "{} users",
        read.snapshot.users.len()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_page_ends_a_search_without_a_call_for_the_empty_page() {
    let truth = municipality(Size::Xs, 2);
    let sim = start(truth.clone(), SimOptions::default()).await;
    let read = client(&sim).read_snapshot().await.unwrap();
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    let calls = sim.stats().by_operation;
    // Every search of an xs municipality fits in one page: one call each, no empty page after it.
    assert_eq!(calls["organisationsystem/fremsoegobjekthierarki"], 1);
    assert_eq!(calls["bruger/soeg"], 1);
    // Enhedsrolle and Lederrolle.
    assert_eq!(calls["organisationfunktion/soeg"], 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_issued_ahead_within_their_own_budget_and_the_read_is_complete() {
    let truth = municipality(Size::S, 6);
    let sim = start(
        truth.clone(),
        SimOptions {
            latency: LatencyModel::fixed(20),
            ..SimOptions::default()
        },
    )
    .await;
    let options = ClientOptions {
        page_size: 40,
        max_in_flight: 3,
        max_pages_in_flight: 4,
        ..fast_options(&sim)
    };
    let transport = Arc::new(Concurrency {
        inner: UnsignedTransport::new(&options).unwrap(),
        pages: AtomicUsize::new(0),
        lists: AtomicUsize::new(0),
        max_pages: AtomicUsize::new(0),
        max_lists: AtomicUsize::new(0),
    });
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), transport.clone());
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    let max_pages = transport.max_pages.load(Ordering::SeqCst);
    let max_lists = transport.max_lists.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&max_pages),
        "{max_pages} pages in flight at once"
    );
    assert!(
        (1..=3).contains(&max_lists),
        "{max_lists} lists in flight at once"
    );
    let bruger = sim.stats().by_operation["bruger/soeg"] as usize;
    assert!(
        bruger >= truth.users.len().div_ceil(40),
        "{bruger} Bruger soeg calls"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_figure_counts_calls_and_objects_and_estimates_what_is_left() {
    let truth = municipality(Size::S, 8);
    let sim = start(
        truth.clone(),
        SimOptions {
            latency: LatencyModel::fixed(5),
            ..SimOptions::default()
        },
    )
    .await;
    let client = client(&sim);
    let mut watch = client.progress();
    let collector = tokio::spawn(async move {
        let mut seen: Vec<ReadProgress> = Vec::new();
        while watch.changed().await.is_ok() {
            let figure = *watch.borrow_and_update();
            seen.push(figure);
            if figure.done {
                break;
            }
        }
        seen
    });
    let first = client.read_snapshot().await.unwrap();
    let seen = collector.await.unwrap();
    let last = seen.last().copied().unwrap();
    assert!(last.done);
    assert_eq!(last.calls, first.calls);
    assert_eq!(last.remaining_estimate, 0);
    // Objects: distinct units, positions (functions) and users found by the searches.
    assert!(
        last.objects as usize > first.snapshot.units.len() + first.snapshot.users.len(),
        "{last:?}"
    );
    assert!(seen.iter().any(|p| p.paging && p.remaining_estimate > 0));
    assert!(seen.windows(2).all(|w| w[0].calls <= w[1].calls));

    // Given the previous read's calls, the estimate starts from them.
    client.expect_calls(first.calls);
    let mut watch = client.progress();
    let collector = tokio::spawn(async move {
        let mut seen: Vec<ReadProgress> = Vec::new();
        while watch.changed().await.is_ok() {
            let figure = *watch.borrow_and_update();
            seen.push(figure);
            if figure.done {
                break;
            }
        }
        seen
    });
    let second = client.read_snapshot().await.unwrap();
    let seen = collector.await.unwrap();
    assert_eq!(second.snapshot, first.snapshot);
    let early = seen.iter().find(|p| p.calls >= 1 && !p.done).unwrap();
    assert_eq!(early.remaining_estimate, first.calls - early.calls);
    sim.shutdown().await;
}
