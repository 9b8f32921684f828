//! One pager for every paged STS search (`soeg`, `FremsoegObjekthierarki`) and the read's progress figure.
//!
//! The pager issues offsets ahead (page `k` at `k × page_size`) with up to `ahead` pages in
//! flight, and consumes the answers in offset order, so the stop rules see pages in order:
//!
//! * an empty page ends the search (complete);
//! * a short page (fewer entries than asked for) ends it too: no extra call for the empty page
//!   after it; of the pages issued ahead beyond it, those still waiting for a call slot are
//!   never sent and those already sent are awaited and ignored;
//! * a page that brings no UUID not seen before stops the search and marks it partial: a server
//!   that ignores `FoersteResultatReference` returns the first page again and again, and must not
//!   make the read loop;
//! * a failed page (after the client's retries) stops the search as failed;
//! * a page that takes the read's distinct objects over its bound stops the search and the
//!   read as a failure ([`crate::error::ReadBound::Objects`]): a server that returns new
//!   UUIDs on every page, whatever the offset, must not make the read loop either.
//!
//! Pages in flight are aborted when the search's future is dropped (the read's deadline, a
//! worker shutting down).
//!
//! The window opens gradually (1, 2, 4, … up to `ahead` pages), so a search with one page makes
//! one call and a search that ends early wastes at most the pages in flight when its last page
//! came back.
//!
//! The pages take their call slots from their own budget ([`crate::options::ClientOptions::max_pages_in_flight`]),
//! so pages issued ahead never starve the `list` batches that turn them into objects.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{ReadBound, StsError};
use crate::issues::ReadIssue;

/// What one page held.
pub(crate) struct PageItems<I> {
    /// Entries the page returned (compared with the page size to find the last page).
    pub returned: usize,
    /// The entries with their UUIDs, for the distinct-UUID guard.
    pub items: Vec<(Uuid, I)>,
    /// Problems noticed while reading the page.
    pub issues: Vec<ReadIssue>,
}

/// How a search ended.
#[derive(Debug)]
pub(crate) enum PagerEnd {
    /// An empty or short page ended it: everything was read.
    Complete,
    /// The page at `offset` brought no new UUID: paging stopped, the result is incomplete.
    Repeated {
        /// The page's `FoersteResultatReference`.
        offset: u64,
    },
    /// The read's searches found more distinct objects than its bound: the read stops as a
    /// failure ([`crate::error::StsError::ReadBound`]).
    Bound(ReadBound),
    /// The page at `offset` failed for good.
    Failed {
        /// The page's `FoersteResultatReference`.
        offset: u64,
        /// Why.
        error: StsError,
    },
}

/// The paging parameters of one search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pager {
    /// Entries asked for per page (`MaksimalAntalKvantitet`).
    pub page_size: u32,
    /// Pages in flight at most for this search.
    pub ahead: usize,
}

impl Pager {
    /// Pages through one search. `fetch(offset, limit)` starts one page's call (spawned, so
    /// pages run concurrently); `split` reads a page's entries; `on_page` receives each page's
    /// new entries (UUIDs not seen before in this search), in offset order.
    pub(crate) async fn run<T, I>(
        self,
        progress: &Progress,
        mut fetch: impl FnMut(u64, u32, Arc<AtomicBool>) -> JoinHandle<Result<Option<T>, StsError>>,
        split: impl Fn(Option<T>) -> PageItems<I>,
        mut on_page: impl FnMut(Vec<I>, Vec<ReadIssue>),
    ) -> PagerEnd {
        let limit = self.page_size.max(1);
        let ahead = self.ahead.max(1);
        let _search = progress.work(0, true);
        let mut window = 1usize;
        let mut next_offset = 0u64;
        // Pages in flight are aborted when this future is dropped (a read cancelled by its
        // deadline or by a worker shutting down makes no further calls).
        let mut in_flight: VecDeque<(u64, AbortOnDrop<_>, Weight<'_>)> = VecDeque::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        let cancelled = Arc::new(AtomicBool::new(false));
        let end = loop {
            while in_flight.len() < window {
                let handle = AbortOnDrop(fetch(next_offset, limit, cancelled.clone()));
                in_flight.push_back((next_offset, handle, progress.work(1, false)));
                next_offset += u64::from(limit);
            }
            let Some((offset, handle, weight)) = in_flight.pop_front() else {
                break PagerEnd::Complete;
            };
            let result = match handle.finish().await {
                Ok(result) => result,
                Err(error) => Err(StsError::Config(format!("a page task failed: {error}"))),
            };
            drop(weight);
            let page = match result {
                Ok(page) => split(page),
                Err(error) => break PagerEnd::Failed { offset, error },
            };
            if page.returned == 0 {
                break PagerEnd::Complete;
            }
            if page.returned > limit as usize {
                break PagerEnd::Bound(ReadBound::Answer {
                    asked: u64::from(limit),
                    returned: page.returned as u64,
                });
            }
            let new: Vec<I> = page
                .items
                .into_iter()
                .filter(|(id, _)| seen.insert(*id))
                .map(|(_, item)| item)
                .collect();
            if new.is_empty() {
                on_page(new, page.issues);
                break PagerEnd::Repeated { offset };
            }
            progress.found(new.len() as u64);
            if let Some(bound) = progress.objects_bound_reached() {
                break PagerEnd::Bound(bound);
            }
            on_page(new, page.issues);
            if page.returned < limit as usize {
                break PagerEnd::Complete;
            }
            window = (window * 2).min(ahead);
        };
        // Pages issued beyond the end: those without a call slot are not sent; those already
        // sent are awaited (and ignored), so every call counted was made.
        cancelled.store(true, Ordering::Relaxed);
        for (_, handle, weight) in in_flight {
            let _ = handle.finish().await;
            drop(weight);
        }
        end
    }
}

/// A page's task, aborted when dropped before it finished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn finish(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How far a read has got: what `orgsync sts snapshot` and a run's report show while it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadProgress {
    /// STS calls made so far by this read (retries included).
    pub calls: u64,
    /// Distinct objects found so far (units, positions and users).
    pub objects: u64,
    /// Calls still expected: the pages in flight and the `list` batches not yet done, or, when
    /// the caller gave the previous read's call count, what is left of it, whichever is larger.
    /// While `paging` is true more pages may come, so this is a lower bound.
    pub remaining_estimate: u64,
    /// Whether a search is still paging.
    pub paging: bool,
    /// Whether the read has ended.
    pub done: bool,
}

/// The counters behind [`ReadProgress`], shared by the client's clones.
#[derive(Debug)]
pub(crate) struct Progress {
    base_calls: AtomicU64,
    objects: AtomicU64,
    outstanding: AtomicI64,
    searches: AtomicI64,
    expected_calls: AtomicU64,
    /// The bound of distinct objects of the current read, and whether it was derived from
    /// the previous read's size.
    objects_limit: AtomicU64,
    objects_limit_derived: AtomicBool,
    done: AtomicBool,
    sender: watch::Sender<ReadProgress>,
}

/// Work counted in the estimate until dropped (a page in flight, a batch, a running search).
pub(crate) struct Weight<'p> {
    progress: &'p Progress,
    calls: i64,
    search: bool,
}

impl Drop for Weight<'_> {
    fn drop(&mut self) {
        self.progress
            .outstanding
            .fetch_sub(self.calls, Ordering::Relaxed);
        if self.search {
            self.progress.searches.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Like [`Weight`], for work done in a spawned task (a `list` batch).
pub(crate) struct OwnedWeight {
    progress: Arc<Progress>,
    calls: i64,
}

impl Drop for OwnedWeight {
    fn drop(&mut self) {
        self.progress
            .outstanding
            .fetch_sub(self.calls, Ordering::Relaxed);
    }
}

impl OwnedWeight {
    /// Counts `calls` expected calls until the weight is dropped.
    pub(crate) fn new(progress: Arc<Progress>, calls: i64) -> OwnedWeight {
        progress.outstanding.fetch_add(calls, Ordering::Relaxed);
        OwnedWeight { progress, calls }
    }
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            base_calls: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            outstanding: AtomicI64::new(0),
            searches: AtomicI64::new(0),
            expected_calls: AtomicU64::new(0),
            objects_limit: AtomicU64::new(u64::MAX),
            objects_limit_derived: AtomicBool::new(false),
            done: AtomicBool::new(false),
            sender: watch::Sender::new(ReadProgress::default()),
        }
    }

    /// A new read starts with the client's call counter at `calls`.
    pub(crate) fn start(&self, calls: u64) {
        self.base_calls.store(calls, Ordering::Relaxed);
        self.objects.store(0, Ordering::Relaxed);
        self.done.store(false, Ordering::Relaxed);
        self.publish(calls);
    }

    /// The read has ended.
    pub(crate) fn finish(&self, calls: u64) {
        self.done.store(true, Ordering::Relaxed);
        self.publish(calls);
    }

    /// The previous read's call count, for the estimate.
    pub(crate) fn expect(&self, calls: u64) {
        self.expected_calls.store(calls, Ordering::Relaxed);
    }

    pub(crate) fn work(&self, calls: i64, search: bool) -> Weight<'_> {
        self.outstanding.fetch_add(calls, Ordering::Relaxed);
        if search {
            self.searches.fetch_add(1, Ordering::Relaxed);
        }
        Weight {
            progress: self,
            calls,
            search,
        }
    }

    fn found(&self, objects: u64) {
        self.objects.fetch_add(objects, Ordering::Relaxed);
    }

    /// A read begins: sets its bound of distinct objects and counts them from zero.
    pub(crate) fn bound_objects(&self, limit: u64, derived: bool) {
        self.objects.store(0, Ordering::Relaxed);
        self.objects_limit.store(limit, Ordering::Relaxed);
        self.objects_limit_derived.store(derived, Ordering::Relaxed);
    }

    /// The bound, once the read's searches have found more distinct objects than it.
    fn objects_bound_reached(&self) -> Option<ReadBound> {
        let limit = self.objects_limit.load(Ordering::Relaxed);
        (self.objects.load(Ordering::Relaxed) > limit).then(|| ReadBound::Objects {
            limit,
            derived: self.objects_limit_derived.load(Ordering::Relaxed),
        })
    }

    /// Sends the current figure to the watchers; `calls` is the client's call counter.
    pub(crate) fn publish(&self, calls: u64) {
        let calls = calls.saturating_sub(self.base_calls.load(Ordering::Relaxed));
        let outstanding = self.outstanding.load(Ordering::Relaxed).max(0) as u64;
        let expected = self
            .expected_calls
            .load(Ordering::Relaxed)
            .saturating_sub(calls);
        let done = self.done.load(Ordering::Relaxed);
        let figure = ReadProgress {
            calls,
            objects: self.objects.load(Ordering::Relaxed),
            remaining_estimate: if done { 0 } else { outstanding.max(expected) },
            paging: !done && self.searches.load(Ordering::Relaxed) > 0,
            done,
        };
        self.sender.send_replace(figure);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ReadProgress> {
        self.sender.subscribe()
    }
}
