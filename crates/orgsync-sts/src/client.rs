//! The STS client: polite calls with retries, paging, and the bulk and per-unit reads that build the model's snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orgsync_model::error_class::{ErrorClass, FailedStsCall};
use orgsync_model::ids::{Cvr, UnitId, UserId};
use orgsync_model::snapshot::{
    PartialRead, Position, ReadFailure, ReadPart, Snapshot, Unit, UnitContact, UnitKind, User,
};
use serde::de::DeserializeOwned;
use tokio::sync::{OnceCell, Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::bitemporal::{self, CompanyRecord, FunctionRecord, UnitRecord, UserRecord};
use crate::error::{CallSite, ReadBound, StsError, TransportError};
use crate::issues::{ReadIssue, ReadIssueCode};
use crate::limits::SystemLimits;
use crate::options::{ClientOptions, ReadExpectation};
use crate::pager::{OwnedWeight, PageItems, Pager, PagerEnd, Progress, ReadProgress};
use crate::request::{self, Search};
use crate::response::{HasStatus, HierarchyOutput, ListOutput, ObjectXml, SoegOutput};
use crate::transport::{SoapCall, SoapResponse, Transport, UnsignedTransport};
use crate::wire::{
    ADDRESS_ROLE_EMAIL, ADDRESS_ROLE_LANDLINE, ADDRESS_ROLE_MOBILE, Dialect, FUNCTION_TYPE_MANAGER,
    FUNCTION_TYPE_POSITION, Operation, Service, UNIT_ADDRESS_ROLE_EAN, UNIT_ADDRESS_ROLE_EMAIL,
    UNIT_ADDRESS_ROLE_PHONE, UNIT_ADDRESS_ROLE_POSTAL, UNIT_TYPE_DEPARTMENT, UNIT_TYPE_TEAM,
};
use crate::xml::{self, Body};

/// A client for one municipality (one CVR). Cheap to clone; clones share limits and counters.
#[derive(Clone, Debug)]
pub struct StsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cvr: Cvr,
    options: ClientOptions,
    transport: Arc<dyn Transport>,
    limits: SystemLimits,
    /// Call slots of `list` and `laes` calls.
    in_flight: Semaphore,
    /// Call slots of paged searches (`soeg`, `FremsoegObjekthierarki`): their own budget, so
    /// pages issued ahead do not starve the lists.
    pages_in_flight: Semaphore,
    calls: AtomicU64,
    progress: Arc<Progress>,
    organisation: OnceCell<Uuid>,
    /// The first error that ends every read (token refused, no service agreement, security).
    fatal: Mutex<Option<StsError>>,
    /// The last call that failed for good, for KOMBIT's service desk.
    failed_call: Mutex<Option<FailedStsCall>>,
    /// The size of the customer's last trusted read, when the caller gave it.
    expectation: Mutex<Option<ReadExpectation>>,
    /// The call budget of the current read.
    budget: Mutex<CallBudget>,
}

/// The call budget of one read: calls from `base` on count against `limit`.
#[derive(Clone, Copy, Debug)]
struct CallBudget {
    base: u64,
    limit: u64,
    derived: bool,
}

/// The result of a bulk read: the snapshot and what was noticed on the way.
#[derive(Clone, Debug)]
pub struct SnapshotRead {
    /// The municipality as read; `partial` is set when a page or batch failed for good.
    pub snapshot: Snapshot,
    /// Problems in the data (the objects concerned were skipped or read without the element).
    pub issues: Vec<ReadIssue>,
    /// STS calls this read made (retries included).
    pub calls: u64,
}

/// The result of a per-unit read: one unit, the users with positions in it (only those positions).
#[derive(Clone, Debug)]
pub struct UnitRead {
    /// The unit; `None` when STS does not know it (or it is passivated).
    pub unit: Option<Unit>,
    /// Users with a position (current or future) in the unit; `positions` holds only those in this unit.
    pub users: Vec<User>,
    /// Problems in the data.
    pub issues: Vec<ReadIssue>,
    /// `Some(what failed)` when a page or batch failed for good.
    pub partial: Option<PartialRead>,
    /// STS calls this read made.
    pub calls: u64,
}

/// Issues and failures collected by concurrent parts of one read.
#[derive(Debug, Default)]
struct ReadState {
    issues: Mutex<Vec<ReadIssue>>,
    failures: Mutex<Vec<ReadFailure>>,
}

/// A failure of a read's part that a new read may cure (an outage, a timeout) or not, as the
/// error says.
fn failed(
    part: ReadPart,
    error: &StsError,
    message: String,
    unread: Option<Vec<Uuid>>,
) -> ReadFailure {
    ReadFailure {
        part,
        class: error.class(),
        retriable: error.is_retriable(),
        message,
        unread,
    }
}

/// Objects a search found that `list` did not return: a new read may see them (STS changing
/// while it is read).
fn not_returned(part: ReadPart, message: String, unread: Vec<Uuid>) -> ReadFailure {
    ReadFailure {
        part,
        class: ErrorClass::StsPartialRead,
        retriable: true,
        message,
        unread: Some(unread),
    }
}

/// A search whose pages repeat (a server that ignores the offset): a new read repeats it.
fn repeated(part: ReadPart, message: String) -> ReadFailure {
    ReadFailure {
        part,
        class: ErrorClass::StsBadData,
        retriable: false,
        message,
        unread: None,
    }
}

/// A read task that died (a panic): nothing of the read is known to be complete.
fn task_died(message: String) -> ReadFailure {
    ReadFailure {
        part: ReadPart::Other,
        class: ErrorClass::Unclassified,
        retriable: true,
        message,
        unread: None,
    }
}

/// The part of a read a service's objects are.
fn part_of(service: Service) -> ReadPart {
    match service {
        Service::OrganisationEnhed | Service::OrganisationSystem => ReadPart::Units,
        Service::Bruger => ReadPart::Users,
        Service::OrganisationFunktion => ReadPart::Positions,
        Service::Person => ReadPart::Persons,
        Service::Adresse => ReadPart::Addresses,
        Service::Virksomhed => ReadPart::Companies,
        Service::Organisation => ReadPart::Other,
    }
}

impl ReadState {
    fn issues(&self, mut more: Vec<ReadIssue>) {
        if !more.is_empty() {
            self.issues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&mut more);
        }
    }

    fn fail(&self, failure: ReadFailure) {
        tracing::warn!(failure = %failure.message, part = failure.part.as_str(), error.class = failure.class.as_str(), retriable = failure.retriable, "STS read incomplete");
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    }

    fn finish(&self) -> (Vec<ReadIssue>, Option<PartialRead>) {
        let issues = std::mem::take(&mut *self.issues.lock().unwrap_or_else(|e| e.into_inner()));
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        let partial = (!failures.is_empty()).then_some(PartialRead { failures });
        (issues, partial)
    }
}

/// A user with the values read from Person and Adresse.
#[derive(Debug)]
struct UserRow {
    record: UserRecord,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

impl StsClient {
    /// A client on the unsigned transport (simulator only: refuses other environments and non-loopback URLs).
    pub fn new(
        cvr: Cvr,
        options: &ClientOptions,
        limits: SystemLimits,
    ) -> Result<StsClient, StsError> {
        let transport = UnsignedTransport::new(options)?;
        Ok(StsClient::with_transport(
            cvr,
            options,
            limits,
            Arc::new(transport),
        ))
    }

    /// A client on any transport (the signed one of issue #7, or a recording wrapper in tests).
    pub fn with_transport(
        cvr: Cvr,
        options: &ClientOptions,
        limits: SystemLimits,
        transport: Arc<dyn Transport>,
    ) -> StsClient {
        let options = options.clamped();
        let organisation = OnceCell::new_with(options.organisation_uuid);
        StsClient {
            inner: Arc::new(Inner {
                cvr,
                in_flight: Semaphore::new(options.max_in_flight),
                pages_in_flight: Semaphore::new(options.max_pages_in_flight),
                options,
                transport,
                limits,
                calls: AtomicU64::new(0),
                progress: Arc::new(Progress::new()),
                organisation,
                fatal: Mutex::new(None),
                failed_call: Mutex::new(None),
                expectation: Mutex::new(None),
                budget: Mutex::new(CallBudget {
                    base: 0,
                    limit: u64::MAX,
                    derived: false,
                }),
            }),
        }
    }

    /// The municipality.
    pub fn cvr(&self) -> &Cvr {
        &self.inner.cvr
    }

    /// STS calls made by this client so far (every attempt counts).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The last call that failed for good (after its retries): its operation, endpoint, the
    /// `TransactionUUID` of every attempt and STS's answer, which KOMBIT's service desk needs
    /// to trace it. `None` while every call has succeeded.
    pub fn failed_call(&self) -> Option<FailedStsCall> {
        self.inner
            .failed_call
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The progress of the current (or last) read, updated after every call.
    pub fn progress(&self) -> watch::Receiver<ReadProgress> {
        self.inner.progress.subscribe()
    }

    /// The previous read's call count, so that the progress can estimate what is left.
    pub fn expect_calls(&self, calls: u64) {
        self.inner.progress.expect(calls);
    }

    /// The size of the customer's last trusted read: the next reads derive their bounds of
    /// calls and distinct objects from it ([`ReadExpectation`]) instead of the absolute
    /// `max_read_calls` and `max_read_objects`, which stay the ceiling.
    pub fn expect_size(&self, expectation: Option<ReadExpectation>) {
        *self
            .inner
            .expectation
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = expectation;
    }

    /// Starts a read's bounds: its call budget counts from the calls made so far, its bound
    /// of distinct objects from zero.
    fn begin_read(&self) -> u64 {
        let options = &self.inner.options;
        let expectation = *self
            .inner
            .expectation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (calls, objects) = match expectation {
            Some(e) => (
                e.calls_bound(options.max_read_calls),
                e.objects_bound(options.max_read_objects),
            ),
            None => (options.max_read_calls, options.max_read_objects),
        };
        let derived = expectation.is_some();
        let base = self.calls();
        *self.inner.budget.lock().unwrap_or_else(|e| e.into_inner()) = CallBudget {
            base,
            limit: calls.max(1),
            derived: derived && calls < options.max_read_calls,
        };
        self.inner.progress.bound_objects(
            objects.max(1),
            derived && objects < options.max_read_objects,
        );
        base
    }

    /// Stops the current read with `error`: every call of the read still to come fails with
    /// it, and the read returns it.
    fn stop_read(&self, error: StsError) -> StsError {
        tracing::warn!(customer.cvr = %self.inner.cvr, error = %error, "the STS read stops");
        self.inner
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| error.clone())
            .clone()
    }

    /// The call budget's bound, once the current read has spent it.
    fn budget_spent(&self) -> Option<ReadBound> {
        let budget = *self.inner.budget.lock().unwrap_or_else(|e| e.into_inner());
        (self.calls().saturating_sub(budget.base) >= budget.limit).then_some(ReadBound::Calls {
            limit: budget.limit,
            derived: budget.derived,
        })
    }

    /// The options in use (page and batch sizes clamped to the protocol's limits).
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn url(&self, service: Service) -> Result<url::Url, StsError> {
        let mut base = self.inner.options.base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.join(&self.inner.options.dialect.path(service))
            .map_err(|e| {
                StsError::Config(format!(
                    "cannot build the {} URL from {base}: {e}",
                    service.segment()
                ))
            })
    }

    /// One call with politeness, timeout and retries. `Ok(None)` = StatusKode 44 (nothing found).
    async fn call<T: DeserializeOwned + HasStatus>(
        &self,
        service: Service,
        operation: Operation,
        payload: String,
    ) -> Result<Option<T>, StsError> {
        self.call_unless(service, operation, payload, None).await
    }

    /// [`StsClient::call`], given up before it takes a call slot once `cancelled` is set (a page
    /// issued ahead beyond the end of its search). A call that has its slot is made and counted.
    async fn call_unless<T: DeserializeOwned + HasStatus>(
        &self,
        service: Service,
        operation: Operation,
        payload: String,
        cancelled: Option<&AtomicBool>,
    ) -> Result<Option<T>, StsError> {
        let site = CallSite { service, operation };
        let options = &self.inner.options;
        let dialect = options.dialect;
        let mut call = SoapCall {
            cvr: self.inner.cvr.clone(),
            service,
            operation,
            dialect,
            url: self.url(service)?,
            action: dialect.action(service, operation),
            payload: request::body(
                dialect,
                service,
                operation,
                self.inner.cvr.as_str(),
                payload,
            ),
            transaction_id: Uuid::new_v4(),
        };
        if let Some(fatal) = self.fatal() {
            return Err(fatal);
        }
        let mut attempt = 1;
        // Each attempt is its own request with its own TransactionUUID (KOMBIT traces requests).
        let first_at = Utc::now();
        let mut transaction_ids = Vec::new();
        loop {
            let budget = match operation {
                Operation::Soeg | Operation::FremsoegObjekthierarki => &self.inner.pages_in_flight,
                Operation::List | Operation::Laes => &self.inner.in_flight,
            };
            let result = {
                let _permit = budget
                    .acquire()
                    .await
                    .map_err(|_| StsError::Config("the client was shut down".to_owned()))?;
                if cancelled.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(StsError::Config(
                        "the page is not needed any more".to_owned(),
                    ));
                }
                if let Some(bound) = self.budget_spent() {
                    return Err(self.stop_read(StsError::ReadBound { bound }));
                }
                self.inner.limits.admit().await;
                self.inner.calls.fetch_add(1, Ordering::Relaxed);
                if !transaction_ids.is_empty() {
                    call.transaction_id = Uuid::new_v4();
                }
                transaction_ids.push(call.transaction_id);
                match tokio::time::timeout(options.call_timeout, self.inner.transport.send(&call))
                    .await
                {
                    Err(_) => Err(StsError::Timeout {
                        site: site.clone(),
                        timeout: options.call_timeout,
                    }),
                    Ok(Err(TransportError::Io(message))) => Err(StsError::Transport {
                        site: site.clone(),
                        message,
                    }),
                    Ok(Err(TransportError::Stalled { after })) => Err(StsError::Stalled {
                        site: site.clone(),
                        after,
                    }),
                    Ok(Err(TransportError::TooLarge { limit })) => Err(StsError::TooLarge {
                        site: site.clone(),
                        limit,
                    }),
                    Ok(Err(TransportError::Refused(message))) => Err(StsError::Config(message)),
                    Ok(Err(TransportError::Token(cause))) => Err(StsError::Token {
                        site: site.clone(),
                        cause,
                    }),
                    Ok(Ok(response)) if response.status == 404 && !is_fault(&response) => {
                        Err(StsError::NotFound {
                            site: site.clone(),
                            url: call.url.to_string(),
                        })
                    }
                    Ok(Ok(response)) => interpret::<T>(dialect, &site, &response),
                }
            };
            self.inner.progress.publish(self.calls());
            match result {
                Err(error) if error.is_retriable() && attempt < options.max_attempts => {
                    let delay = backoff(options, attempt);
                    tracing::debug!(call = %site, attempt, error = %error, delay_ms = delay.as_millis() as u64, "STS call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) if error.ends_read() => {
                    self.record_failure(&call, &site, first_at, transaction_ids, &error);
                    tracing::warn!(call = %site, customer.cvr = %self.inner.cvr, error = %error, "STS refused the call; the read stops");
                    let mut fatal = self.inner.fatal.lock().unwrap_or_else(|e| e.into_inner());
                    fatal.get_or_insert_with(|| error.clone());
                    return Err(error);
                }
                Err(error) => {
                    self.record_failure(&call, &site, first_at, transaction_ids, &error);
                    return Err(error);
                }
                ok => return ok,
            }
        }
    }

    fn record_failure(
        &self,
        call: &SoapCall,
        site: &CallSite,
        first_at: DateTime<Utc>,
        transaction_ids: Vec<Uuid>,
        error: &StsError,
    ) {
        let record = FailedStsCall {
            operation: site.to_string(),
            endpoint: call.url.to_string(),
            first_at,
            last_at: Utc::now(),
            transaction_ids,
            answer: error.to_string(),
        };
        *self
            .inner
            .failed_call
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(record);
    }

    fn fatal(&self) -> Option<StsError> {
        self.inner
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take_fatal(&self) -> Option<StsError> {
        self.inner
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The municipality's Organisation UUID: configured, or Virksomhed soeg (CVR) then
    /// Organisation soeg (Virksomhed). The v5 contract has no Virksomhed service: there an
    /// Organisation soeg without filters, scoped by `AuthorityContext` to the municipality, must
    /// find exactly one Organisation (otherwise configure `organisation_uuid`).
    pub async fn organisation_uuid(&self) -> Result<Uuid, StsError> {
        self.inner
            .organisation
            .get_or_try_init(|| async {
                let cvr = self.inner.cvr.as_str().to_owned();
                let dialect = self.inner.options.dialect;
                if !dialect.offers(Service::Virksomhed) {
                    return self.organisation_in_authority_context(cvr).await;
                }
                let search = Search {
                    cvr: Some(cvr.clone()),
                    ..Search::default()
                };
                let found: Option<SoegOutput> = self
                    .call(
                        Service::Virksomhed,
                        Operation::Soeg,
                        request::soeg(dialect, Service::Virksomhed, 0, 2, &search),
                    )
                    .await?;
                let company = first_id(found).ok_or_else(|| StsError::OrganisationNotFound {
                    cvr: cvr.clone(),
                    message: "Virksomhed soeg found no company with this CVR-NummerTekst"
                        .to_owned(),
                })?;
                let search = Search {
                    relations: vec![("Virksomhed", company)],
                    ..Search::default()
                };
                let found: Option<SoegOutput> = self
                    .call(
                        Service::Organisation,
                        Operation::Soeg,
                        request::soeg(dialect, Service::Organisation, 0, 2, &search),
                    )
                    .await?;
                first_id(found).ok_or_else(|| StsError::OrganisationNotFound {
                    cvr,
                    message: format!(
                        "Organisation soeg found no Organisation for Virksomhed {company}"
                    ),
                })
            })
            .await
            .copied()
    }

    /// The one Organisation an unfiltered Organisation soeg finds within the call's
    /// `AuthorityContext` (v5).
    async fn organisation_in_authority_context(&self, cvr: String) -> Result<Uuid, StsError> {
        let dialect = self.inner.options.dialect;
        let found: Option<SoegOutput> = self
            .call(
                Service::Organisation,
                Operation::Soeg,
                request::soeg(dialect, Service::Organisation, 0, 2, &Search::default()),
            )
            .await?;
        let ids: Vec<Uuid> = found
            .and_then(|f| f.ids)
            .map(|l| {
                l.ids
                    .iter()
                    .filter_map(|t| Uuid::parse_str(t.trim()).ok())
                    .collect()
            })
            .unwrap_or_default();
        match ids.as_slice() {
            [one] => Ok(*one),
            [] => Err(StsError::OrganisationNotFound {
                cvr,
                message: "Organisation soeg within the AuthorityContext found no Organisation"
                    .to_owned(),
            }),
            _ => Err(StsError::OrganisationNotFound {
                cvr,
                message: "Organisation soeg within the AuthorityContext found more than one \
                          Organisation; set the customer's organisation_uuid"
                    .to_owned(),
            }),
        }
    }

    /// Reads the whole municipality: units, positions, users, names, e-mail and phone.
    ///
    /// The read is bounded: by its call budget, by the distinct objects its searches may find
    /// (both from the options, or derived from [`StsClient::expect_size`]) and by
    /// `read_deadline`. Reaching a bound stops it with [`StsError::ReadBound`]. Dropping the
    /// returned future cancels the read: its tasks are aborted and no further call is made.
    pub async fn read_snapshot(&self) -> Result<SnapshotRead, StsError> {
        let calls_before = self.begin_read();
        self.inner.progress.start(calls_before);
        let deadline = self.inner.options.read_deadline;
        let read = match tokio::time::timeout(deadline, self.read_snapshot_inner(calls_before))
            .await
        {
            Ok(read) => read,
            Err(_) => {
                let error = StsError::ReadBound {
                    bound: ReadBound::Deadline { limit: deadline },
                };
                tracing::warn!(customer.cvr = %self.inner.cvr, error = %error, "the STS read stops");
                Err(error)
            }
        };
        self.inner.progress.finish(self.calls());
        read
    }

    /// Reads as [`StsClient::read_snapshot`], calling `observe` with each new progress figure
    /// while it reads and once more with the final one.
    pub async fn read_snapshot_observed(
        &self,
        mut observe: impl FnMut(ReadProgress) + Send,
    ) -> Result<SnapshotRead, StsError> {
        let mut progress = self.progress();
        let read = self.read_snapshot();
        tokio::pin!(read);
        let result = loop {
            tokio::select! {
                result = &mut read => break result,
                changed = progress.changed() => match changed {
                    Ok(()) => observe(*progress.borrow_and_update()),
                    Err(_) => break read.await,
                },
            }
        };
        observe(*progress.borrow_and_update());
        result
    }

    async fn read_snapshot_inner(&self, calls_before: u64) -> Result<SnapshotRead, StsError> {
        let now = Utc::now();
        let organisation = self.organisation_uuid().await.inspect_err(|_| {
            self.take_fatal();
        })?;
        let state = Arc::new(ReadState::default());

        // The units, then (with the unit_contact option) the Adresse and Virksomhed objects
        // they name, while positions and users are read.
        let units = async {
            let units = self.read_units(&state, now).await?;
            let contact = self.unit_contact_data(&units, &state, now).await;
            Ok::<_, StsError>((units, contact))
        };
        let positions = self.read_functions(organisation, None, &state, now);
        let users = self.read_users(organisation, &state, now);
        let (units, functions, users) = tokio::join!(units, positions, users);
        if let Some(fatal) = self.take_fatal() {
            return Err(fatal);
        }
        let (units, contact) = units?;

        let (mut issues, partial) = state.finish();
        let snapshot = assemble(
            self.inner.cvr.clone(),
            organisation,
            (units, &contact),
            functions,
            users,
            partial,
            &mut issues,
        );
        Ok(SnapshotRead {
            snapshot,
            issues,
            calls: self.calls() - calls_before,
        })
    }

    /// Reads one unit with the users who have a position in it (to refresh a single department).
    pub async fn read_unit(&self, unit: UnitId) -> Result<UnitRead, StsError> {
        let calls_before = self.begin_read();
        let now = Utc::now();
        let organisation = self.organisation_uuid().await.inspect_err(|_| {
            self.take_fatal();
        })?;
        let state = Arc::new(ReadState::default());
        let objects = self
            .list_objects(Service::OrganisationEnhed, &[unit.0], None)
            .await?;
        let mut issues = Vec::new();
        let contact = self.inner.options.unit_contact;
        let record = objects
            .iter()
            .filter_map(|o| bitemporal::unit(o, now, contact, &mut issues))
            .find(|u| u.uuid == unit.0);
        state.issues(issues);
        let contact_data = self.unit_contact_data(record.as_slice(), &state, now).await;

        let functions = self
            .read_functions(organisation, Some(unit.0), &state, now)
            .await;
        let mut positions: BTreeMap<Uuid, Vec<Position>> = BTreeMap::new();
        for function in &functions {
            for (user, position) in &function.positions {
                if position.unit_uuid == unit {
                    positions.entry(*user).or_default().push(position.clone());
                }
            }
        }
        let user_ids: Vec<Uuid> = positions.keys().copied().collect();
        let mut tasks = JoinSet::new();
        for chunk in user_ids.chunks(self.inner.options.list_batch_size) {
            let client = self.clone();
            let state = state.clone();
            let ids = chunk.to_vec();
            tasks.spawn(async move { client.user_batch(ids, &state, now).await });
        }
        let rows = join_all(tasks, &state).await.into_iter().flatten();
        let mut users: Vec<User> = rows
            .map(|row| {
                let mut positions = positions.get(&row.record.uuid).cloned().unwrap_or_default();
                sort_positions(&mut positions);
                to_user(row, positions)
            })
            .collect();
        users.sort_by_key(|u| u.uuid);
        if let Some(fatal) = self.take_fatal() {
            return Err(fatal);
        }
        let (mut issues, partial) = state.finish();
        let unit = record.and_then(|r| to_unit(r, organisation, &contact_data, &mut issues));
        Ok(UnitRead {
            unit,
            users,
            issues,
            partial,
            calls: self.calls() - calls_before,
        })
    }

    /// All units, page by page. A failed page fails the read: without units nothing is usable.
    async fn read_units(
        &self,
        state: &ReadState,
        now: DateTime<Utc>,
    ) -> Result<Vec<UnitRecord>, StsError> {
        let mut units = Vec::new();
        let dialect = self.inner.options.dialect;
        let end = self
            .pager()
            .run(
                &self.inner.progress,
                self.page_fetch::<HierarchyOutput>(
                    Service::OrganisationSystem,
                    Operation::FremsoegObjekthierarki,
                    move |offset, limit| request::hierarchy(dialect, offset, limit),
                ),
                |page| {
                    let objects = page
                        .and_then(|p| p.units)
                        .map(|u| u.objects)
                        .unwrap_or_default();
                    let mut issues = Vec::new();
                    let returned = objects.len();
                    let items = objects
                        .into_iter()
                        .filter_map(|o| {
                            bitemporal::object_uuid(&o, "OrganisationEnhed", &mut issues)
                                .map(|id| (id, o))
                        })
                        .collect();
                    PageItems {
                        returned,
                        items,
                        issues,
                    }
                },
                |objects, mut issues| {
                    units.extend(objects.iter().filter_map(|o| {
                        bitemporal::unit(o, now, self.inner.options.unit_contact, &mut issues)
                    }));
                    state.issues(issues);
                },
            )
            .await;
        match end {
            PagerEnd::Complete => {}
            PagerEnd::Repeated { offset } => state.fail(repeated(ReadPart::Units, format!(
                "OrganisationSystem FremsoegObjekthierarki: the page at FoersteResultatReference {offset} brought no unit not seen before (does the server ignore the offset?); paging stopped"
            ))),
            PagerEnd::Bound(bound) => return Err(self.stop_read(StsError::ReadBound { bound })),
            PagerEnd::Failed { error, .. } => return Err(error),
        }
        Ok(units)
    }

    /// Positions: OrganisationFunktion soeg (Enhedsrolle and Lederrolle, or any type in one unit) + list.
    async fn read_functions(
        &self,
        organisation: Uuid,
        unit: Option<Uuid>,
        state: &Arc<ReadState>,
        now: DateTime<Utc>,
    ) -> Vec<FunctionRecord> {
        let searches: Vec<Search> = match unit {
            Some(unit) => vec![Search {
                validity: Some("Aktiv"),
                relations: vec![
                    ("TilknyttedeEnheder", unit),
                    ("TilknyttedeOrganisationer", organisation),
                ],
                from: Some(now),
                ..Search::default()
            }],
            None => [FUNCTION_TYPE_POSITION, FUNCTION_TYPE_MANAGER]
                .into_iter()
                .map(|kind| Search {
                    validity: Some("Aktiv"),
                    relations: vec![
                        ("Funktionstype", kind),
                        ("TilknyttedeOrganisationer", organisation),
                    ],
                    from: Some(now),
                    ..Search::default()
                })
                .collect(),
        };
        let runs: Vec<_> = searches
            .into_iter()
            .map(|search| {
                let task_state = state.clone();
                self.search_then(
                    Service::OrganisationFunktion,
                    search,
                    state.clone(),
                    1,
                    move |client, ids| {
                        let state = task_state.clone();
                        async move {
                            match client
                                .list_objects(Service::OrganisationFunktion, &ids, Some(now))
                                .await
                            {
                                Ok(objects) => {
                                    let returned: HashSet<Uuid> = objects
                                        .iter()
                                        .filter_map(|o| {
                                            o.object
                                                .as_ref()
                                                .and_then(|id| id.uuid.as_deref())
                                                .and_then(|t| Uuid::parse_str(t.trim()).ok())
                                        })
                                        .collect();
                                    let missing: Vec<Uuid> = ids.iter().copied().filter(|id| !returned.contains(id)).collect();
                                    if !missing.is_empty() {
                                        // Unread positions must not look ended: their users
                                        // would be deactivated for having none.
                                        state.fail(not_returned(ReadPart::Positions, format!(
                                            "OrganisationFunktion list did not return {} of {} functions that soeg found",
                                            missing.len(),
                                            ids.len()
                                        ), missing));
                                    }
                                    let mut issues = Vec::new();
                                    let records: Vec<FunctionRecord> = objects
                                        .iter()
                                        .filter_map(|o| bitemporal::function(o, now, &mut issues))
                                        .collect();
                                    state.issues(issues);
                                    records
                                }
                                Err(error) => {
                                    let message = format!(
                                        "OrganisationFunktion list of {} functions failed: {error}",
                                        ids.len()
                                    );
                                    state.fail(failed(ReadPart::Positions, &error, message, Some(ids)));
                                    Vec::new()
                                }
                            }
                        }
                    },
                )
            })
            .collect();
        // The searches run concurrently.
        let mut all: Vec<FunctionRecord> = join_futures(runs, state)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.retain(|f: &FunctionRecord| {
            if f.organisations.is_empty() || f.organisations.contains(&organisation) {
                true
            } else {
                state.issues(vec![ReadIssue {
                    code: ReadIssueCode::ForeignObject,
                    object_kind: "OrganisationFunktion".to_owned(),
                    object: Some(f.uuid),
                    element: "RelationListe/TilknyttedeOrganisationer".to_owned(),
                    message: format!(
                        "the function belongs to another Organisation than {organisation}; ignored"
                    ),
                }]);
                false
            }
        });
        let mut seen = HashSet::new();
        all.retain(|f| seen.insert(f.uuid));
        all
    }

    /// Users: Bruger soeg (Tilhoerer = the Organisation, active and inactive) + list, then Person and Adresse lists.
    async fn read_users(
        &self,
        organisation: Uuid,
        state: &Arc<ReadState>,
        now: DateTime<Utc>,
    ) -> Vec<UserRow> {
        let search = Search {
            relations: vec![("Tilhoerer", organisation)],
            ..Search::default()
        };
        let task_state = state.clone();
        // One batch: Bruger list, Person list, and Adresse lists (e-mail and phone).
        self.search_then(
            Service::Bruger,
            search,
            state.clone(),
            4,
            move |client, ids| {
                let state = task_state.clone();
                async move { client.user_batch(ids, &state, now).await }
            },
        )
        .await
    }

    /// One batch of users (at most `list_batch_size`): Bruger list, then Person and Adresse lists.
    async fn user_batch(
        &self,
        ids: Vec<Uuid>,
        state: &ReadState,
        now: DateTime<Utc>,
    ) -> Vec<UserRow> {
        let objects = match self.list_objects(Service::Bruger, &ids, None).await {
            Ok(objects) => objects,
            Err(error) => {
                let message = format!("Bruger list of {} users failed: {error}", ids.len());
                state.fail(failed(ReadPart::Users, &error, message, Some(ids)));
                return Vec::new();
            }
        };
        let mut issues = Vec::new();
        let records: Vec<UserRecord> = objects
            .iter()
            .filter_map(|o| bitemporal::user(o, now, &mut issues))
            .collect();
        let returned: HashSet<Uuid> = objects
            .iter()
            .filter_map(|o| {
                o.object
                    .as_ref()
                    .and_then(|id| id.uuid.as_deref())
                    .and_then(|t| Uuid::parse_str(t.trim()).ok())
            })
            .collect();
        for id in ids.iter().filter(|id| !returned.contains(id)) {
            issues.push(ReadIssue {
                code: ReadIssueCode::NotReturned,
                object_kind: "Bruger".to_owned(),
                object: Some(*id),
                element: "FiltreretOejebliksbillede".to_owned(),
                message: "soeg found the user but list did not return it".to_owned(),
            });
        }
        let missing: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !returned.contains(id))
            .collect();
        if !missing.is_empty() {
            // An unread user must not look absent: absent users are deactivated.
            state.fail(not_returned(
                ReadPart::Users,
                format!(
                    "Bruger list did not return {} of {} users that soeg found",
                    missing.len(),
                    ids.len()
                ),
                missing,
            ));
        }
        state.issues(issues);

        let person_ids: Vec<Uuid> = records.iter().filter_map(|r| r.person).collect();
        let chosen: Vec<(Option<Uuid>, Option<Uuid>)> =
            records.iter().map(choose_addresses).collect();
        let address_ids: Vec<Uuid> = chosen
            .iter()
            .flat_map(|(e, p)| [*e, *p])
            .flatten()
            .collect();
        let (persons, addresses) = tokio::join!(
            self.values(Service::Person, "Person", person_ids, state, now),
            self.values(Service::Adresse, "Adresse", address_ids, state, now)
        );
        records
            .into_iter()
            .zip(chosen)
            .map(|(record, (email, phone))| UserRow {
                name: record
                    .person
                    .and_then(|p| persons.get(&p).cloned().flatten()),
                email: email.and_then(|a| addresses.get(&a).cloned().flatten()),
                phone: phone.and_then(|a| addresses.get(&a).cloned().flatten()),
                record,
            })
            .collect()
    }

    /// The objects the units' contact data is read from (none without the `unit_contact`
    /// option: then no call is made): the texts of the Adresse objects their contact roles
    /// name, and the P-number / CVR of the Virksomhed objects their `Produktionsenhed` and
    /// `Skatteenhed` relations name. The legacy v5 contract has no Virksomhed service, so there
    /// P-number and CVR stay empty. Lists run concurrently, in batches of at most
    /// `list_batch_size`, within the client's in-flight limit.
    async fn unit_contact_data(
        &self,
        units: &[UnitRecord],
        state: &Arc<ReadState>,
        now: DateTime<Utc>,
    ) -> ContactData {
        if !self.inner.options.unit_contact {
            return ContactData::default();
        }
        let mut seen = HashSet::new();
        let address_ids: Vec<Uuid> = units
            .iter()
            .flat_map(|u| &u.addresses)
            .filter(|(role, _)| UNIT_CONTACT_ROLES.contains(role))
            .map(|(_, address)| *address)
            .filter(|a| seen.insert(*a))
            .collect();
        let company_ids: Vec<Uuid> = if self.inner.options.dialect.offers(Service::Virksomhed) {
            units
                .iter()
                .flat_map(|u| [u.production_unit, u.tax_unit])
                .flatten()
                .filter(|c| seen.insert(*c))
                .collect()
        } else {
            Vec::new()
        };
        let mut tasks = JoinSet::new();
        for chunk in address_ids.chunks(self.inner.options.list_batch_size) {
            let client = self.clone();
            let state = state.clone();
            let ids = chunk.to_vec();
            tasks.spawn(async move {
                let texts = client
                    .values(Service::Adresse, "Adresse", ids, &state, now)
                    .await;
                vec![ContactData {
                    texts,
                    companies: HashMap::new(),
                }]
            });
        }
        for chunk in company_ids.chunks(self.inner.options.list_batch_size) {
            let client = self.clone();
            let state = state.clone();
            let ids = chunk.to_vec();
            tasks.spawn(async move {
                vec![ContactData {
                    texts: HashMap::new(),
                    companies: client.companies(ids, &state, now).await,
                }]
            });
        }
        let mut data = ContactData::default();
        for part in join_all(tasks, state).await.into_iter().flatten() {
            data.texts.extend(part.texts);
            data.companies.extend(part.companies);
        }
        data
    }

    /// The P-number and CVR of Virksomhed objects by UUID (one `list` of at most
    /// `list_batch_size`). A failed list makes the read partial.
    async fn companies(
        &self,
        ids: Vec<Uuid>,
        state: &ReadState,
        now: DateTime<Utc>,
    ) -> HashMap<Uuid, CompanyRecord> {
        let mut companies = HashMap::new();
        if ids.is_empty() {
            return companies;
        }
        match self.list_objects(Service::Virksomhed, &ids, None).await {
            Ok(objects) => {
                let mut issues = Vec::new();
                for object in &objects {
                    if let Some((id, record)) = bitemporal::company(object, now, &mut issues) {
                        companies.insert(id, record);
                    }
                }
                for id in ids.iter().filter(|id| !companies.contains_key(id)) {
                    issues.push(ReadIssue {
                        code: ReadIssueCode::NotReturned,
                        object_kind: "Virksomhed".to_owned(),
                        object: Some(*id),
                        element: "FiltreretOejebliksbillede".to_owned(),
                        message: "a unit refers to it but list did not return it".to_owned(),
                    });
                }
                state.issues(issues);
            }
            Err(error) => {
                let message = format!("Virksomhed list of {} objects failed: {error}", ids.len());
                state.fail(failed(ReadPart::Companies, &error, message, Some(ids)));
            }
        }
        companies
    }

    /// Person names or Adresse texts by UUID (lists of at most `list_batch_size`).
    async fn values(
        &self,
        service: Service,
        kind: &'static str,
        ids: Vec<Uuid>,
        state: &ReadState,
        now: DateTime<Utc>,
    ) -> HashMap<Uuid, Option<String>> {
        let mut values = HashMap::new();
        if ids.is_empty() {
            return values;
        }
        match self.list_objects(service, &ids, None).await {
            Ok(objects) => {
                let mut issues = Vec::new();
                for object in &objects {
                    if let Some((id, value)) =
                        bitemporal::named_value(object, kind, now, &mut issues)
                    {
                        values.insert(id, value);
                    }
                }
                for id in ids.iter().filter(|id| !values.contains_key(id)) {
                    issues.push(ReadIssue {
                        code: ReadIssueCode::NotReturned,
                        object_kind: kind.to_owned(),
                        object: Some(*id),
                        element: "FiltreretOejebliksbillede".to_owned(),
                        message: "an object read refers to it but list did not return it"
                            .to_owned(),
                    });
                }
                state.issues(issues);
            }
            Err(error) => {
                let message = format!("{kind} list of {} objects failed: {error}", ids.len());
                state.fail(failed(part_of(service), &error, message, Some(ids)));
            }
        }
        values
    }

    /// `list` in batches of at most `list_batch_size`, one after the other.
    async fn list_objects(
        &self,
        service: Service,
        ids: &[Uuid],
        from: Option<DateTime<Utc>>,
    ) -> Result<Vec<ObjectXml>, StsError> {
        let mut objects = Vec::new();
        for chunk in ids.chunks(self.inner.options.list_batch_size) {
            let output: Option<ListOutput> = self
                .call(
                    service,
                    Operation::List,
                    request::list(self.inner.options.dialect, service, chunk, from),
                )
                .await?;
            if let Some(mut output) = output {
                if output.objects.len() > chunk.len() {
                    return Err(self.stop_read(StsError::ReadBound {
                        bound: ReadBound::Answer {
                            asked: chunk.len() as u64,
                            returned: output.objects.len() as u64,
                        },
                    }));
                }
                objects.append(&mut output.objects);
            }
        }
        Ok(objects)
    }

    /// The paging parameters of this client's searches.
    fn pager(&self) -> Pager {
        Pager {
            page_size: self.inner.options.page_size,
            ahead: self.inner.options.max_pages_in_flight,
        }
    }

    /// Starts one page's call as a task, so that pages issued ahead run concurrently. Once
    /// `cancelled` is set, pages that have no call slot yet are not sent.
    fn page_fetch<T>(
        &self,
        service: Service,
        operation: Operation,
        request: impl Fn(u64, u32) -> String,
    ) -> impl FnMut(u64, u32, Arc<AtomicBool>) -> tokio::task::JoinHandle<Result<Option<T>, StsError>>
    where
        T: DeserializeOwned + HasStatus + Send + 'static,
    {
        let client = self.clone();
        move |offset, limit, cancelled| {
            let client = client.clone();
            let payload = request(offset, limit);
            tokio::spawn(async move {
                client
                    .call_unless::<T>(service, operation, payload, Some(&cancelled))
                    .await
            })
        }
    }

    /// Pages through a soeg and starts `task` on each page's UUIDs in batches, concurrently.
    /// `calls_per_batch` is what one batch is expected to cost, for the progress estimate.
    /// A failed page, or one that brings nothing new, ends the search and marks the read partial.
    fn search_then<R, F, Fut>(
        &self,
        service: Service,
        search: Search,
        state: Arc<ReadState>,
        calls_per_batch: i64,
        task: F,
    ) -> impl Future<Output = Vec<R>> + Send + 'static
    where
        R: Send + 'static,
        F: Fn(StsClient, Vec<Uuid>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let client = self.clone();
        async move {
            let batch = client.inner.options.list_batch_size;
            let dialect = client.inner.options.dialect;
            let mut tasks = JoinSet::new();
            let end = client
                .pager()
                .run(
                    &client.inner.progress,
                    client.page_fetch::<SoegOutput>(
                        service,
                        Operation::Soeg,
                        move |offset, limit| {
                            request::soeg(dialect, service, offset, limit, &search)
                        },
                    ),
                    |page| {
                        let raw = page.and_then(|p| p.ids).map(|l| l.ids).unwrap_or_default();
                        let mut issues = Vec::new();
                        let items = raw
                            .iter()
                            .filter_map(|text| match Uuid::parse_str(text.trim()) {
                                Ok(id) => Some((id, id)),
                                Err(_) => {
                                    issues.push(ReadIssue {
                                        code: ReadIssueCode::Malformed,
                                        object_kind: service.segment().to_owned(),
                                        object: None,
                                        element: "IdListe/UUIDIdentifikator".to_owned(),
                                        message: format!("{text:?} is not a UUID; ignored"),
                                    });
                                    None
                                }
                            })
                            .collect();
                        PageItems {
                            returned: raw.len(),
                            items,
                            issues,
                        }
                    },
                    |ids: Vec<Uuid>, issues| {
                        state.issues(issues);
                        for chunk in ids.chunks(batch) {
                            let weight =
                                OwnedWeight::new(client.inner.progress.clone(), calls_per_batch);
                            let work = task(client.clone(), chunk.to_vec());
                            tasks.spawn(async move {
                                let result = work.await;
                                drop(weight);
                                result
                            });
                        }
                    },
                )
                .await;
            match end {
                PagerEnd::Complete => {}
                PagerEnd::Repeated { offset } => state.fail(repeated(part_of(service), format!(
                    "{} soeg: the page at FoersteResultatReference {offset} brought no UUID not seen before (does the server ignore the offset?); paging stopped",
                    service.segment()
                ))),
                PagerEnd::Bound(bound) => {
                    client.stop_read(StsError::ReadBound { bound });
                }
                PagerEnd::Failed { offset, error } => {
                    let message = format!(
                        "{} soeg stopped at offset {offset}: {error}",
                        service.segment()
                    );
                    state.fail(failed(part_of(service), &error, message, None));
                }
            }
            join_all(tasks, &state)
                .await
                .into_iter()
                .flatten()
                .collect()
        }
    }
}

fn backoff(options: &ClientOptions, attempt: u32) -> Duration {
    let base =
        options.backoff_initial.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = base.min(options.backoff_max.as_secs_f64());
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64((capped * jitter).max(0.0))
}

/// Turns an HTTP answer into the payload, or a typed error.
pub(crate) fn interpret<T: DeserializeOwned + HasStatus>(
    dialect: Dialect,
    site: &CallSite,
    response: &SoapResponse,
) -> Result<Option<T>, StsError> {
    let ok_status = (200..300).contains(&response.status);
    let wrapper_ns = dialect.wrapper_namespace(site.service);
    let (wrapper, body) = match xml::read_body_in(&response.body, wrapper_ns.is_some()) {
        Ok(read) => read,
        Err(error) if error.too_deep.is_some() => {
            return Err(StsError::TooDeep {
                site: site.clone(),
                limit: error.too_deep.unwrap_or(xml::MAX_DEPTH),
            });
        }
        Err(_) if !ok_status => {
            return Err(StsError::Http {
                site: site.clone(),
                status: response.status,
            });
        }
        Err(error) if error.truncated => {
            return Err(StsError::Truncated {
                site: site.clone(),
                message: error.message,
            });
        }
        Err(error) => {
            return Err(StsError::Malformed {
                site: site.clone(),
                message: error.message,
            });
        }
    };
    let (namespace, local_name, payload) = match body {
        Body::Fault(fault) => {
            return Err(StsError::Fault {
                site: site.clone(),
                kind: crate::error::FaultKind::parse(fault.subcode.as_deref(), &fault.reason),
                code: fault.code,
                subcode: fault.subcode,
                reason: fault.reason,
                http_status: response.status,
            });
        }
        Body::Payload { .. } if !ok_status => {
            return Err(StsError::Http {
                site: site.clone(),
                status: response.status,
            });
        }
        Body::Payload {
            namespace,
            local_name,
            xml,
        } => (namespace, local_name, xml),
    };
    if let (Some(expected_ns), Some((namespace, local_name))) = (&wrapper_ns, &wrapper) {
        let expected_name = site.operation.response_wrapper();
        if namespace != expected_ns || local_name != expected_name {
            return Err(StsError::Malformed {
                site: site.clone(),
                message: format!(
                    "expected {{{expected_ns}}}{expected_name} in the SOAP Body, got {{{namespace}}}{local_name}"
                ),
            });
        }
    }
    let expected_ns = dialect.namespace(site.service);
    let expected_name = site.operation.output_element();
    if namespace != expected_ns || local_name != expected_name {
        return Err(StsError::Malformed {
            site: site.clone(),
            message: format!(
                "expected {{{expected_ns}}}{expected_name} in the SOAP Body, got {{{namespace}}}{local_name}"
            ),
        });
    }
    let output: T = quick_xml::de::from_str(payload).map_err(|e| StsError::Malformed {
        site: site.clone(),
        message: format!("{expected_name}: {e}"),
    })?;
    let Some(retur) = output.standard_retur() else {
        return Err(StsError::Malformed {
            site: site.clone(),
            message: format!("{expected_name}: the mandatory element StandardRetur is missing"),
        });
    };
    let code_text = retur.status.as_deref().map(str::trim).unwrap_or_default();
    let code: i64 = code_text.parse().map_err(|_| StsError::Malformed {
        site: site.clone(),
        message: format!(
            "{expected_name}/StandardRetur/StatusKode: {code_text:?} is not an integer"
        ),
    })?;
    match code {
        20 => Ok(Some(output)),
        44 => Ok(None),
        code => Err(StsError::Status {
            site: site.clone(),
            code,
            message: retur.message.clone().unwrap_or_default(),
        }),
    }
}

/// Whether the answer is a SOAP fault (which then says more than its HTTP status).
fn is_fault(response: &SoapResponse) -> bool {
    matches!(xml::read_body(&response.body), Ok(Body::Fault(_)))
}

fn first_id(found: Option<SoegOutput>) -> Option<Uuid> {
    found?
        .ids?
        .ids
        .iter()
        .find_map(|t| Uuid::parse_str(t.trim()).ok())
}

async fn join_all<R: Send + 'static>(mut tasks: JoinSet<Vec<R>>, state: &ReadState) -> Vec<Vec<R>> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => state.fail(task_died(format!("a read task failed: {error}"))),
        }
    }
    results
}

async fn join_futures<R: Send + 'static>(
    futures: Vec<impl Future<Output = Vec<R>> + Send + 'static>,
    state: &ReadState,
) -> Vec<Vec<R>> {
    let mut set = JoinSet::new();
    for (index, future) in futures.into_iter().enumerate() {
        set.spawn(async move { (index, future.await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            // A search that died took its results with it: the read is not complete.
            Err(error) => state.fail(task_died(format!("a read task failed: {error}"))),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The e-mail and phone address UUIDs of a user, chosen by role UUID (never by label).
fn choose_addresses(record: &UserRecord) -> (Option<Uuid>, Option<Uuid>) {
    let by_role = |role: Uuid| {
        record
            .addresses
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, a)| *a)
    };
    let email = by_role(ADDRESS_ROLE_EMAIL);
    let phone = by_role(ADDRESS_ROLE_MOBILE).or_else(|| by_role(ADDRESS_ROLE_LANDLINE));
    (email, phone)
}

fn sort_positions(positions: &mut [Position]) {
    positions.sort_by(|a, b| {
        (a.unit_uuid, a.manager, &a.title, a.valid_from, a.valid_to).cmp(&(
            b.unit_uuid,
            b.manager,
            &b.title,
            b.valid_from,
            b.valid_to,
        ))
    });
}

fn to_user(row: UserRow, positions: Vec<Position>) -> User {
    User {
        uuid: UserId(row.record.uuid),
        user_name: row.record.user_name.unwrap_or_default(),
        name: row.name,
        email: row.email,
        phone: row.phone,
        active: row.record.active,
        positions,
    }
}

/// The unit address roles read as contact data (OS2sync's `UUIDConstants`, from KOMBIT's
/// "Anvisninger til anvendelse af STS-Organisation").
const UNIT_CONTACT_ROLES: [Uuid; 4] = [
    UNIT_ADDRESS_ROLE_POSTAL,
    UNIT_ADDRESS_ROLE_EMAIL,
    UNIT_ADDRESS_ROLE_PHONE,
    UNIT_ADDRESS_ROLE_EAN,
];

/// What the units' contact data is read from: Adresse texts and Virksomhed numbers by UUID
/// (both empty without the `unit_contact` option).
#[derive(Debug, Default)]
struct ContactData {
    texts: HashMap<Uuid, Option<String>>,
    companies: HashMap<Uuid, CompanyRecord>,
}

/// A unit's contact data: per role UUID (never by label) the first address valid now, by
/// `Indeks`; the P-number from the `Produktionsenhed` Virksomhed's `P-NummerTekst` and the
/// CVR from the `Skatteenhed` Virksomhed's `CVR-NummerTekst` (Organisation 6 holds these two
/// on Virksomhed objects, not as Adresse roles).
fn unit_contact(record: &UnitRecord, data: &ContactData) -> UnitContact {
    let by_role = |role: Uuid| {
        record
            .addresses
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, a)| data.texts.get(a).cloned().flatten())
    };
    let company = |id: Option<Uuid>| id.and_then(|c| data.companies.get(&c));
    UnitContact {
        postal_address: by_role(UNIT_ADDRESS_ROLE_POSTAL),
        email: by_role(UNIT_ADDRESS_ROLE_EMAIL),
        phone: by_role(UNIT_ADDRESS_ROLE_PHONE),
        ean: by_role(UNIT_ADDRESS_ROLE_EAN),
        p_number: company(record.production_unit).and_then(|c| c.p_number.clone()),
        cvr: company(record.tax_unit).and_then(|c| c.cvr.clone()),
    }
}

fn to_unit(
    record: UnitRecord,
    organisation: Uuid,
    contact: &ContactData,
    issues: &mut Vec<ReadIssue>,
) -> Option<Unit> {
    match record.belongs_to {
        Some(owner) if owner != organisation => {
            issues.push(ReadIssue {
                code: ReadIssueCode::ForeignObject,
                object_kind: "OrganisationEnhed".to_owned(),
                object: Some(record.uuid),
                element: "RelationListe/Tilhoerer".to_owned(),
                message: format!(
                    "the unit belongs to Organisation {owner}, not {organisation}; ignored"
                ),
            });
            return None;
        }
        None => issues.push(ReadIssue {
            code: ReadIssueCode::Missing,
            object_kind: "OrganisationEnhed".to_owned(),
            object: Some(record.uuid),
            element: "RelationListe/Tilhoerer".to_owned(),
            message: "the unit names no Organisation; kept".to_owned(),
        }),
        Some(_) => {}
    }
    let kind = record.unit_type.map(|t| match t {
        t if t == UNIT_TYPE_DEPARTMENT => UnitKind::Department,
        t if t == UNIT_TYPE_TEAM => UnitKind::Team,
        _ => UnitKind::Other,
    });
    let contact = unit_contact(&record, contact);
    Some(Unit {
        uuid: UnitId(record.uuid),
        name: record.name.unwrap_or_default(),
        user_key: record.user_key,
        parent_uuid: record.parent.map(UnitId),
        active: record.active,
        kind,
        contact,
    })
}

fn assemble(
    cvr: Cvr,
    organisation: Uuid,
    (units, contact): (Vec<UnitRecord>, &ContactData),
    functions: Vec<FunctionRecord>,
    users: Vec<UserRow>,
    partial: Option<PartialRead>,
    issues: &mut Vec<ReadIssue>,
) -> Snapshot {
    let units: Vec<Unit> = units
        .into_iter()
        .filter_map(|u| to_unit(u, organisation, contact, issues))
        .collect();
    let mut positions: HashMap<Uuid, Vec<Position>> = HashMap::new();
    for function in functions {
        for (user, position) in function.positions {
            positions.entry(user).or_default().push(position);
        }
    }
    let mut out: Vec<User> = Vec::with_capacity(users.len());
    for row in users {
        if let Some(owner) = row.record.belongs_to.filter(|o| *o != organisation) {
            issues.push(ReadIssue {
                code: ReadIssueCode::ForeignObject,
                object_kind: "Bruger".to_owned(),
                object: Some(row.record.uuid),
                element: "RelationListe/Tilhoerer".to_owned(),
                message: format!(
                    "the user belongs to Organisation {owner}, not {organisation}; ignored"
                ),
            });
            continue;
        }
        let mut mine = positions.remove(&row.record.uuid).unwrap_or_default();
        sort_positions(&mut mine);
        out.push(to_user(row, mine));
    }
    if partial.is_none() {
        for (user, list) in positions {
            issues.push(ReadIssue {
                code: ReadIssueCode::NotReturned,
                object_kind: "Bruger".to_owned(),
                object: Some(user),
                element: "RelationListe/TilknyttedeBrugere".to_owned(),
                message: format!(
                    "{} positions name this user, whom Bruger soeg did not return; ignored",
                    list.len()
                ),
            });
        }
    }
    out.sort_by_key(|u| u.uuid);
    Snapshot {
        cvr,
        units,
        users: out,
        partial,
    }
}

/// What [`inspect_response`] found in one response.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// UUIDs of a `SoegOutput`, objects kept from a `ListOutput` or hierarchy page.
    pub found: usize,
    /// Problems noticed in the objects.
    pub issues: Vec<ReadIssue>,
}

/// Parses one Organisation 6 HTTP answer exactly as the client does (envelope, fault, StandardRetur, payload,
/// bitemporal rules) without calling anything. For tests, fuzzing and support tools.
pub fn inspect_response(
    service: Service,
    operation: Operation,
    status: u16,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Inspection, StsError> {
    let site = CallSite { service, operation };
    let response = SoapResponse::new(status, body.to_vec());
    let mut issues = Vec::new();
    let found = match operation {
        Operation::Soeg => interpret::<SoegOutput>(Dialect::Organisation6, &site, &response)?
            .and_then(|o| o.ids)
            .map_or(0, |l| l.ids.len()),
        Operation::FremsoegObjekthierarki => {
            interpret::<HierarchyOutput>(Dialect::Organisation6, &site, &response)?
                .and_then(|o| o.units)
                .map_or(0, |u| {
                    u.objects
                        .iter()
                        .filter_map(|o| bitemporal::unit(o, now, true, &mut issues))
                        .count()
                })
        }
        Operation::List | Operation::Laes => {
            let objects = interpret::<ListOutput>(Dialect::Organisation6, &site, &response)?
                .map(|o| o.objects)
                .unwrap_or_default();
            objects
                .iter()
                .filter(|o| match service {
                    Service::OrganisationEnhed => {
                        bitemporal::unit(o, now, true, &mut issues).is_some()
                    }
                    Service::Bruger => bitemporal::user(o, now, &mut issues).is_some(),
                    Service::OrganisationFunktion => {
                        bitemporal::function(o, now, &mut issues).is_some()
                    }
                    Service::Person => {
                        bitemporal::named_value(o, "Person", now, &mut issues).is_some()
                    }
                    Service::Adresse => {
                        bitemporal::named_value(o, "Adresse", now, &mut issues).is_some()
                    }
                    _ => bitemporal::object_uuid(o, "object", &mut issues).is_some(),
                })
                .count()
        }
    };
    Ok(Inspection { found, issues })
}
