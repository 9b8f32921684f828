//! The closed set of error classes: what support filters dead letters by, what tickets are keyed
//! by, and what every failed attempt, dead letter and run report carries.
//!
//! A class is decided once, from the variant of the library error where the failure happened
//! (`StsError::class`, `TargetError::class`, the pipeline's own failures), and is passed through
//! unchanged to the queue (as its stable string), the report and the tickets. Nothing decides a
//! class or a retry from message text.
//!
//! Each class has a [`Scope`] (does it stop the whole run, or one object) and the action support
//! takes ([`ErrorClass::action`]); README's error-class table is generated from the same texts
//! (a test checks they agree).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whether a problem stops a customer's whole run or concerns one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The run (or a department job of it) cannot go on: a ticket is about the customer.
    Run,
    /// One department or user was refused; the rest of the run went on.
    Object,
}

impl Scope {
    /// `run` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Run => "run",
            Scope::Object => "object",
        }
    }
}

macro_rules! error_classes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $scope:ident, $action:literal; )*) => {
        /// An error class (see the module documentation). Serialises as its dotted name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ErrorClass {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorClass {
            /// Every class, in documentation order.
            pub const ALL: &'static [ErrorClass] = &[$(ErrorClass::$variant),*];

            /// The stable dotted name (`sts.unavailable`): in the queue, the reports, the tickets'
            /// `external_id` and `dlq list --error-class`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorClass::$variant => $name,)* }
            }

            /// Whether it stops the run or concerns one object.
            pub fn scope(self) -> Scope {
                match self { $(ErrorClass::$variant => Scope::$scope,)* }
            }

            /// What support does about it, in one or two sentences.
            pub fn action(self) -> &'static str {
                match self { $(ErrorClass::$variant => $action,)* }
            }
        }
    };
}

error_classes! {
    /// STS refused the system certificate or the token (signature, certificate, audience or
    /// clock checks).
    StsAuth = "sts.auth", Run,
        "Check that the system certificate is the one registered with KOMBIT for this IT system and has not expired (`orgsync config check` shows it), that [sts] entity_id is the service's, and that the host's clock is right; then replay the dead letter.";
    /// The municipality has not approved (or has withdrawn) the service agreement for this IT
    /// system and service.
    StsAgreementMissing = "sts.agreement_missing", Run,
        "Ask the municipality to approve the service agreement for this IT system in KOMBIT's administration module (Faelleskommunalt Administrationsmodul); replay the dead letter once it is approved.";
    /// The token's CVR gives no access to the objects asked for.
    StsAccessDenied = "sts.access_denied", Run,
        "Check the customer's CVR and organisation_uuid in its customer file against what the municipality has in STS.";
    /// No STS Organisation was found for the customer's CVR.
    StsOrganisationNotFound = "sts.organisation_not_found", Run,
        "Check the customer's CVR (and organisation_uuid, if set); ask the municipality whether its organisation is registered in FK Organisation.";
    /// STS could not be reached, timed out, was throttled or failed on its side.
    StsUnavailable = "sts.unavailable", Run,
        "Usually passes: the job is retried for about 1.5 hours. If it lasts a night, send the KOMBIT text in the ticket to KOMBIT's service desk and replay the dead letter afterwards.";
    /// STS answered something that is not valid (malformed XML, a refused request, a snapshot
    /// that fails validation: no root, a cycle, unknown parents).
    StsBadData = "sts.bad_data", Run,
        "Nothing was written. Send the KOMBIT text in the ticket (what was called, when, the answer) to KOMBIT's service desk, or ask the municipality to correct its organisation; the next night's run tries again.";
    /// The STS read finished with parts missing: what is absent may only be unread, so every
    /// deactivation of the run is held. A `SyncCustomer` attempt fails with it (retriable) while
    /// attempts are left, so the whole read is done again.
    StsPartialRead = "sts.partial_read", Run,
        "A `SyncCustomer` attempt whose read STS cut short is retried (the whole read again); the run itself ends with this class when the read stayed partial through every attempt: creates and updates were written, deactivations are held, those of objects the read may have missed marked `[unread]`. Check `orgsync runs show <run>`; when the next run reads completely it decides again. Release only if you know the held objects are really gone (`--include-unread` for the unread ones).";
    /// The target refused orgsync's credentials.
    TargetAuth = "target.auth", Run,
        "Renew the target's API token or password (the customer file names the environment variable), then replay the dead letters.";
    /// The target could not be reached, timed out, throttled or failed on its side.
    TargetUnavailable = "target.unavailable", Run,
        "Usually passes (retried with backoff). If it lasts, check the HR system's status, then replay the dead letters.";
    /// The target answered something orgsync cannot read.
    TargetBadResponse = "target.bad_response", Run,
        "The HR system answered outside its API contract: send the dead letter's error chain to the HR system's developers.";
    /// The target refused one object (a uniqueness conflict, an invalid value).
    TargetRejected = "target.rejected", Object,
        "Open the run report's rejected objects: usually a user name or e-mail taken by another user in the HR system, or a value it refuses. Fix the object in the HR system or STS; the next run retries it.";
    /// One object kept changing on the target while orgsync wrote it.
    TargetConflict = "target.conflict", Object,
        "Someone or something else is editing the object at the same time; the next run retries it.";
    /// The embedded target database failed in a way that can recover (locked, busy, full disk,
    /// read-only, I/O): retried with a long backoff.
    TargetStorage = "target.storage", Run,
        "Free disk space or fix the file's permissions (the error names the database file); the job is retried with a long backoff, or replay it after the fix.";
    /// The embedded target database is corrupt or not a database: retries cannot help.
    TargetStorageCorrupt = "target.storage_corrupt", Run,
        "Restore the database file from a backup (the error names it); then run the customer again. Do not replay before the file is restored.";
    /// A run would deactivate more than the customer's guards allow: deactivations held.
    GuardMassDeactivation = "guard.mass_deactivation", Run,
        "Check the held deactivations (`orgsync runs show <run>`, or the dashboard). If they are right (a reorganisation), `orgsync runs release <run>`; if not, ask the municipality what happened in STS.";
    /// STS returned implausibly fewer units or users than the last trusted run: deactivations
    /// held.
    GuardSourceDrop = "guard.source_drop", Run,
        "Ask the municipality whether units or employees were really removed; if so, `orgsync runs release <run>`, which also accepts the new size as the baseline.";
    /// A run's deactivations wait for a person for another reason (department jobs were
    /// dead-lettered, a newer run superseded it, or it was finished by a replay).
    GuardHeld = "guard.held", Run,
        "Replay the failed department jobs first if any (`orgsync dlq list --run <run>`), then check and `orgsync runs release <run>`.";
    /// The target is missing or empty at a run's start while the last trusted run read objects
    /// for it (an SQLite file deleted or replaced, a wiped HR system): the run wrote nothing,
    /// rather than creating everything again in an empty target.
    GuardTargetLost = "guard.target_lost", Run,
        "Nothing was written. Restore the target (the error names the file and how many objects the last trusted run read), then replay the dead letter or run the customer again. If the target is meant to start empty, `orgsync runs accept-empty <cvr>` forgets the baseline and the next run fills it.";
    /// The configuration cannot work for this customer (unknown or invalid CVR, a missing
    /// secret, a bad path).
    ConfigInvalid = "config.invalid", Run,
        "Fix the configuration (`orgsync config check` names the file and field), then replay the dead letter.";
    /// Redis failed while a job ran.
    QueueUnavailable = "queue.unavailable", Run,
        "Check Redis (memory, connections, failover); jobs are retried and nothing is lost.";
    /// Another run of the customer holds its lock (a department replay waits for it).
    RunBusy = "run.busy", Run,
        "Wait: the job is retried when the other run ends (a replay snoozes without spending attempts, for up to 2 hours). Replay it if it was dead-lettered.";
    /// The stored plan of the run expired before the job ran (`[runs] data_ttl_hours`).
    RunExpired = "run.expired", Run,
        "The run's plan is gone; the next run plans again. Delete the dead letter, or run the customer now (`orgsync sync <cvr>`).";
    /// The job's payload does not decode (an upgrade changed it, or it was edited).
    JobUndecodable = "job.undecodable", Run,
        "Delete the dead letter and run the customer again; report it to the developers if it happens after an upgrade.";
    /// The job's handler panicked (a bug).
    JobPanicked = "job.panicked", Run,
        "A bug: send the dead letter's error chain to the developers. Replay after a fix.";
    /// Workers died too often while running the job (killed, out of memory).
    JobAbandoned = "job.abandoned", Run,
        "Check the workers' memory limits and restarts; then replay the dead letter.";
    /// A handler gave up on the job for good by its own decision (apalis' `AbortError`):
    /// dead-lettered at once, without retries.
    JobAborted = "job.aborted", Run,
        "The job refused to go on: read the dead letter's error chain for why, fix the cause, then replay it.";
    /// A failure orgsync did not classify (a bug: every failure should have a class).
    Unclassified = "unclassified", Run,
        "Send the dead letter's error chain to the developers.";
}

impl ErrorClass {
    /// The class of a run-level hold, from the reasons that held it.
    pub fn of_hold(reasons: &[crate::plan::HoldReason]) -> ErrorClass {
        use crate::plan::HoldReason;
        if reasons.contains(&HoldReason::PartialRead) {
            ErrorClass::StsPartialRead
        } else if reasons.contains(&HoldReason::SourceDrop) {
            ErrorClass::GuardSourceDrop
        } else if reasons
            .iter()
            .any(|r| matches!(r, HoldReason::OverCount | HoldReason::OverPercent))
        {
            ErrorClass::GuardMassDeactivation
        } else {
            ErrorClass::GuardHeld
        }
    }

    /// Whether the problem is on KOMBIT's side, so that a ticket carries a text for KOMBIT's
    /// service desk.
    pub fn is_sts_side(self) -> bool {
        matches!(self, ErrorClass::StsUnavailable | ErrorClass::StsBadData)
    }
}

/// An STS call that failed for good (after its retries), recorded for KOMBIT's service desk:
/// a supplier reports STS-side problems there, and KOMBIT traces a request by its
/// `TransactionUUID`. Holds no credentials (STS endpoints carry none in their URLs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStsCall {
    /// The service and operation called, e.g. `organisationenhed fremsoeg`.
    pub operation: String,
    /// The URL called.
    pub endpoint: String,
    /// When the first failing attempt was made.
    pub first_at: chrono::DateTime<chrono::Utc>,
    /// When the last failing attempt was made.
    pub last_at: chrono::DateTime<chrono::Utc>,
    /// The `TransactionUUID` of each failing attempt, oldest first (at most
    /// [`FailedStsCall::MAX_TRANSACTIONS`], the newest kept).
    pub transaction_ids: Vec<uuid::Uuid>,
    /// What STS answered (the fault, status or transport failure), as the error states it.
    pub answer: String,
}

impl FailedStsCall {
    /// How many transaction UUIDs a record keeps: enough for KOMBIT to find the calls, few
    /// enough for a ticket.
    pub const MAX_TRANSACTIONS: usize = 20;

    /// Folds a later failure of the same run into this one: the first time stays, the later
    /// call's operation, endpoint, answer and time replace these, and its transactions are
    /// added (the newest [`FailedStsCall::MAX_TRANSACTIONS`] kept). Merging a record into itself
    /// (a run's attempt that read its own stored record back) changes nothing.
    pub fn merge(&mut self, later: FailedStsCall) {
        self.first_at = self.first_at.min(later.first_at);
        self.last_at = self.last_at.max(later.last_at);
        self.operation = later.operation;
        self.endpoint = later.endpoint;
        self.answer = later.answer;
        for id in later.transaction_ids {
            if !self.transaction_ids.contains(&id) {
                self.transaction_ids.push(id);
            }
        }
        let excess = self
            .transaction_ids
            .len()
            .saturating_sub(Self::MAX_TRANSACTIONS);
        self.transaction_ids.drain(..excess);
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the classes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an error class (one of: {list})", list = ErrorClass::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownErrorClass(pub String);

impl FromStr for ErrorClass {
    type Err = UnknownErrorClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorClass(s.to_owned()))
    }
}

impl Serialize for ErrorClass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        // A class this version does not know (written by a newer one) reads as unclassified
        // rather than making a whole report unreadable.
        Ok(name.parse().unwrap_or(ErrorClass::Unclassified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_round_trips_through_its_name_and_json() {
        for class in ErrorClass::ALL {
            assert_eq!(class.as_str().parse::<ErrorClass>(), Ok(*class));
            let json = serde_json::to_string(class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            assert_eq!(serde_json::from_str::<ErrorClass>(&json).unwrap(), *class);
            assert!(!class.action().is_empty());
        }
    }

    #[test]
    fn names_are_unique_and_dotted_by_origin() {
        let mut names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate class names");
        for name in names {
            assert!(
                name == "unclassified" || name.contains('.'),
                "{name} is not dotted"
            );
        }
    }

    #[test]
    fn the_readme_table_says_what_the_code_says() {
        let readme = include_str!("../../../README.md");
        for class in ErrorClass::ALL {
            let row = format!(
                "| `{}` | {} | {} |",
                class.as_str(),
                class.scope().as_str(),
                class.action()
            );
            assert!(
                readme.contains(&row),
                "README.md's error-class table lacks or differs from:\n{row}"
            );
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_known_ones() {
        let error = "sts.nope".parse::<ErrorClass>().unwrap_err();
        assert!(error.to_string().contains("sts.agreement_missing"));
    }

    #[test]
    fn holds_map_to_the_guard_that_held_them() {
        use crate::plan::HoldReason;
        assert_eq!(
            ErrorClass::of_hold(&[HoldReason::OverCount]),
            ErrorClass::GuardMassDeactivation
        );
        assert_eq!(
            ErrorClass::of_hold(&[HoldReason::SourceDrop, HoldReason::OverPercent]),
            ErrorClass::GuardSourceDrop
        );
        assert_eq!(
            ErrorClass::of_hold(&[HoldReason::RunFailed]),
            ErrorClass::GuardHeld
        );
        assert_eq!(
            ErrorClass::of_hold(&[HoldReason::PartialRead, HoldReason::OverCount]),
            ErrorClass::StsPartialRead
        );
        assert_eq!(ErrorClass::TargetRejected.scope(), Scope::Object);
    }

    #[test]
    fn a_failed_call_merged_keeps_the_first_time_and_the_newest_transactions() {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
        let call = |first: i64, ids: std::ops::Range<u128>| FailedStsCall {
            operation: format!("bruger list {first}"),
            endpoint: "https://sts.example/organisation/bruger/6".to_owned(),
            first_at: at(first),
            last_at: at(first + 10),
            transaction_ids: ids.map(uuid::Uuid::from_u128).collect(),
            answer: format!("HTTP status 503 at {first}"),
        };
        let mut night = call(100, 0..3);
        night.merge(call(200, 3..25));
        let once = night.clone();
        night.merge(once.clone());
        assert_eq!(
            night, once,
            "merging the record into itself changes nothing"
        );
        assert_eq!(night.first_at, at(100));
        assert_eq!(night.last_at, at(210));
        assert_eq!(night.answer, "HTTP status 503 at 200");
        assert_eq!(night.transaction_ids.len(), FailedStsCall::MAX_TRANSACTIONS);
        assert_eq!(night.transaction_ids[0], uuid::Uuid::from_u128(5));
        assert_eq!(night.transaction_ids[19], uuid::Uuid::from_u128(24));
    }
}
