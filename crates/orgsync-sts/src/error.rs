//! Errors of STS calls, split by what the caller does next: retry later, fix configuration, or report malformed data.

use std::time::Duration;

use orgsync_model::error_class::ErrorClass;

use crate::wire::{Operation, Service};

/// What a SOAP fault (from a service or from the STS's token endpoint) is about. STS and
/// KOMBIT's services put the meaning in the subcode (`wsse:FailedAuthentication`) or the reason
/// text (`ServiceAgreementNotFound`); it is parsed **once**, where the fault is read, and every
/// decision (retry, end the read, error class, hint) is made from this value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No (approved) service agreement between the municipality and this IT system.
    ServiceAgreement,
    /// The token's CVR gives no access to the objects asked for.
    AccessDenied,
    /// The token's audience or the entity ID does not fit the service.
    Audience,
    /// A timestamp outside its validity: the host's clock is off.
    Clock,
    /// The certificate, a signature or the security header was refused.
    Security,
    /// The token itself was refused (expired, revoked, unauthorised).
    Token,
    /// Anything else: server trouble (`Receiver`) or a bad request (`Sender`).
    Other,
}

impl FaultKind {
    /// Reads a fault's subcode and reason text.
    pub fn parse(subcode: Option<&str>, reason: &str) -> FaultKind {
        let text = format!("{} {reason}", subcode.unwrap_or("")).to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&["serviceagreement", "serviceaftale"]) {
            FaultKind::ServiceAgreement
        } else if has(&["accessdenied", "no access"]) {
            FaultKind::AccessDenied
        } else if has(&["audience", "appliesto", "entityid", "entity id"]) {
            FaultKind::Audience
        } else if has(&["messageexpired", "timestamp"]) {
            FaultKind::Clock
        } else if has(&[
            "invalidsecuritytoken",
            "failedauthentication",
            "invalidsecurity",
            "failedcheck",
            "certificate",
            "signature",
            "security",
        ]) {
            FaultKind::Security
        } else if has(&["token", "unauthorized"]) {
            FaultKind::Token
        } else {
            FaultKind::Other
        }
    }

    /// Whether the fault is about trust or agreements: such a fault is never retried and ends
    /// the read, because every other call would be refused the same way.
    pub fn is_about_trust(self) -> bool {
        !matches!(self, FaultKind::Other)
    }

    /// The error class of a refusal of this kind.
    pub fn class(self) -> ErrorClass {
        match self {
            FaultKind::ServiceAgreement => ErrorClass::StsAgreementMissing,
            FaultKind::AccessDenied => ErrorClass::StsAccessDenied,
            FaultKind::Audience | FaultKind::Clock | FaultKind::Security | FaultKind::Token => {
                ErrorClass::StsAuth
            }
            FaultKind::Other => ErrorClass::StsUnavailable,
        }
    }

    /// What to do about it, for people reading the error ("" when nothing specific is known).
    pub fn hint(self) -> &'static str {
        match self {
            FaultKind::ServiceAgreement => {
                ". The municipality has not approved a service agreement for this IT system and service: ask it to approve the agreement in KOMBIT's administration module (Fælleskommunalt Administrationsmodul); retrying will not help"
            }
            FaultKind::AccessDenied => {
                ". The token's CVR gives no access to these objects: check the customer's CVR and organisation_uuid; retrying will not help"
            }
            FaultKind::Audience => {
                ". Check [sts] entity_id against the service's entity ID; retrying will not help"
            }
            FaultKind::Clock => ". Check the host's clock (NTP); retrying will not help",
            FaultKind::Security => {
                ". Check the system certificate (registered with KOMBIT for this system, not expired) and [sts] sts_certificate_files; retrying will not help"
            }
            FaultKind::Token | FaultKind::Other => "",
        }
    }
}

/// Which call an error came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSite {
    /// The service called.
    pub service: Service,
    /// The operation called.
    pub operation: Operation,
}

impl std::fmt::Display for CallSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.service.segment(),
            self.operation.action_name()
        )
    }
}

/// A failed STS call or read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StsError {
    /// The client is configured in a way that cannot work (for example the unsigned transport
    /// pointed at a real STS address). Not retriable: fix the configuration.
    #[error("STS client configuration: {0}")]
    Config(String),

    /// The connection failed, was reset, or the body could not be read (network trouble). Retriable.
    #[error("{site}: transport failure: {message}")]
    Transport {
        /// The call.
        site: CallSite,
        /// What the transport reported.
        message: String,
    },

    /// No answer within the per-call timeout. Retriable.
    #[error("{site}: no answer within {timeout:?}")]
    Timeout {
        /// The call.
        site: CallSite,
        /// The per-call timeout.
        timeout: Duration,
    },

    /// The answer stalled: no byte arrived for the read timeout (`ClientOptions::read_timeout`),
    /// for example a body that stops after its headers. Retriable (the connection may have
    /// hung), and fails within the read timeout rather than the whole call timeout.
    #[error("{site}: the answer stalled: no data for {} s (sts.read_timeout_ms)", after.as_secs_f64())]
    Stalled {
        /// The call.
        site: CallSite,
        /// The read timeout.
        after: Duration,
    },

    /// An HTTP error status without a SOAP fault. 5xx, 408 and 429 are retriable; other 4xx are not.
    #[error("{site}: HTTP status {status}")]
    Http {
        /// The call.
        site: CallSite,
        /// The HTTP status.
        status: u16,
    },

    /// HTTP 404 without a SOAP fault: no service at the URL called, nearly always a wrong
    /// `base_url`. Not retriable.
    #[error(
        "{site}: HTTP 404 Not Found from {url}: there is no such service at that address; check [sts] base_url (the Organisation base usually ends in /organisation/)"
    )]
    NotFound {
        /// The call.
        site: CallSite,
        /// The URL called.
        url: String,
    },

    /// A SOAP fault. `Receiver` faults (server-side trouble, throttling) are retriable;
    /// `Sender` faults and anything about the service agreement or security are not.
    #[error("{site}: SOAP fault {code}{}: {reason}{}", subcode.as_ref().map(|s| format!("/{s}")).unwrap_or_default(), kind.hint())]
    Fault {
        /// The call.
        site: CallSite,
        /// What the fault is about (parsed once from `subcode` and `reason`).
        kind: FaultKind,
        /// `Code/Value` without prefix (`Sender`, `Receiver`, ...).
        code: String,
        /// `Code/Subcode/Value` without prefix.
        subcode: Option<String>,
        /// `Reason/Text`.
        reason: String,
        /// The HTTP status the fault came with.
        http_status: u16,
    },

    /// `StandardRetur/StatusKode` other than 20 (data) or 44 (empty). Codes from 50 up
    /// (server errors) are retriable; 40 (bad input), 49 (conflict) and others are not.
    #[error("{site}: StatusKode {code}: {message}")]
    Status {
        /// The call.
        site: CallSite,
        /// `StatusKode`.
        code: i64,
        /// `FejlbeskedTekst`.
        message: String,
    },

    /// The response exceeded the configured size limit. Not retriable.
    #[error("{site}: response larger than the limit of {limit} bytes")]
    TooLarge {
        /// The call.
        site: CallSite,
        /// The configured limit.
        limit: usize,
    },

    /// The response ended early (cut connection). Retriable.
    #[error("{site}: truncated response: {message}")]
    Truncated {
        /// The call.
        site: CallSite,
        /// Where it ended.
        message: String,
    },

    /// The response is not what the protocol says: not XML, wrong namespace, missing mandatory
    /// element. Names the element. Not retriable.
    #[error("{site}: malformed response: {message}")]
    Malformed {
        /// The call.
        site: CallSite,
        /// What is wrong, naming the element.
        message: String,
    },

    /// No token could be had from the STS for this municipality (refused, unreachable, unusable).
    /// Retriable only when the STS was unreachable or had a transient server problem.
    #[error("{site}: {cause}")]
    Token {
        /// The call that needed the token.
        site: CallSite,
        /// Why. Shown in the message and not also as the error's source, so that a printed
        /// error chain states the cause once.
        cause: Box<crate::token::TokenError>,
    },

    /// The read reached one of its bounds (calls, distinct objects, time: see [`ReadBound`])
    /// and stopped as a failure, not as a partial snapshot. Not retriable: a server that
    /// answers without end does so again on the next attempt, and a retry would hold the
    /// customer's run lock and KOMBIT's call capacity for another round; the next scheduled
    /// run tries again.
    #[error("the STS read stopped: {bound}")]
    ReadBound {
        /// Which bound, with its value.
        bound: ReadBound,
    },

    /// The response nests elements deeper than the limit (hostile or broken XML). Not
    /// retriable.
    #[error("{site}: malformed response: elements nested deeper than {limit} levels")]
    TooDeep {
        /// The call.
        site: CallSite,
        /// The limit of nesting levels.
        limit: usize,
    },

    /// No Organisation was found for the CVR (no Virksomhed, or no Organisation pointing at it). Not retriable.
    #[error("no STS Organisation found for CVR {cvr}: {message}")]
    OrganisationNotFound {
        /// The CVR looked up.
        cvr: String,
        /// Which step found nothing.
        message: String,
    },
}

impl StsError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            StsError::Transport { .. }
            | StsError::Timeout { .. }
            | StsError::Stalled { .. }
            | StsError::Truncated { .. } => true,
            StsError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            StsError::Fault { code, kind, .. } => code == "Receiver" && !kind.is_about_trust(),
            StsError::Token { cause, .. } => cause.is_retriable(),
            StsError::Status { code, .. } => *code >= 50,
            StsError::Config(_)
            | StsError::NotFound { .. }
            | StsError::TooLarge { .. }
            | StsError::Malformed { .. }
            | StsError::OrganisationNotFound { .. }
            | StsError::ReadBound { .. }
            | StsError::TooDeep { .. } => false,
        }
    }
}

impl StsError {
    /// Whether this error stops the whole read rather than one page: the STS refused the token,
    /// or a service refused the call for a reason every other call shares (no service
    /// agreement, security checks, access outside the token's CVR).
    pub fn ends_read(&self) -> bool {
        match self {
            StsError::Token { cause, .. } => !cause.is_retriable(),
            StsError::Fault { kind, .. } => kind.is_about_trust(),
            StsError::ReadBound { .. } => true,
            _ => false,
        }
    }

    /// The error class (see `orgsync_model::error_class`), from the variant alone.
    pub fn class(&self) -> ErrorClass {
        match self {
            StsError::Config(_) => ErrorClass::ConfigInvalid,
            StsError::Transport { .. }
            | StsError::Timeout { .. }
            | StsError::Stalled { .. }
            | StsError::Truncated { .. } => ErrorClass::StsUnavailable,
            StsError::Http { status, .. } => match status {
                401 | 403 => ErrorClass::StsAuth,
                404 => ErrorClass::ConfigInvalid,
                s if *s >= 500 || *s == 408 || *s == 429 => ErrorClass::StsUnavailable,
                _ => ErrorClass::StsBadData,
            },
            StsError::Fault { code, kind, .. } => match kind {
                FaultKind::Other if code != "Receiver" => ErrorClass::StsBadData,
                kind => kind.class(),
            },
            StsError::Status { code, .. } if *code >= 50 => ErrorClass::StsUnavailable,
            StsError::Status { .. }
            | StsError::TooLarge { .. }
            | StsError::Malformed { .. }
            | StsError::TooDeep { .. } => ErrorClass::StsBadData,
            StsError::ReadBound { bound } => bound.class(),
            StsError::Token { cause, .. } => cause.class(),
            StsError::OrganisationNotFound { .. } => ErrorClass::StsOrganisationNotFound,
            StsError::NotFound { .. } => ErrorClass::ConfigInvalid,
        }
    }
}

/// A bound of one read (`ClientOptions::max_read_calls`, `max_read_objects`, `read_deadline`,
/// or the bounds derived from the previous read's size): what stops a server that answers
/// without end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadBound {
    /// The read made this many calls (its call budget) and was not done.
    #[error(
        "it reached its call budget of {limit} STS calls without finishing{}; a server that ignores the page offset or answers without end makes a read loop",
        derived_note(*derived)
    )]
    Calls {
        /// The budget.
        limit: u64,
        /// Whether the budget was derived from the previous read's size.
        derived: bool,
    },
    /// The searches found this many distinct objects (units, functions, users) and were not done.
    #[error(
        "its searches found more than {limit} distinct objects{}; STS keeps returning new ones",
        derived_note(*derived)
    )]
    Objects {
        /// The bound.
        limit: u64,
        /// Whether the bound was derived from the previous read's size.
        derived: bool,
    },
    /// An answer held more entries than the call asked for (a page more than its
    /// `MaksimalAntalKvantitet`, a `list` more objects than UUIDs): STS never does that.
    #[error("an answer held {returned} entries where at most {asked} were asked for")]
    Answer {
        /// Entries asked for.
        asked: u64,
        /// Entries returned.
        returned: u64,
    },
    /// The read had not finished after this long.
    #[error("it had not finished after its deadline of {} s (sts.read_deadline_s)", limit.as_secs())]
    Deadline {
        /// The deadline.
        limit: Duration,
    },
}

fn derived_note(derived: bool) -> &'static str {
    if derived {
        " (derived from the last trusted run's size)"
    } else {
        ""
    }
}

impl ReadBound {
    /// The error class: too many calls or objects is bad data from STS; a read that takes too
    /// long is STS being unavailable (slow), though it is not retried either.
    pub fn class(&self) -> ErrorClass {
        match self {
            ReadBound::Calls { .. } | ReadBound::Objects { .. } | ReadBound::Answer { .. } => {
                ErrorClass::StsBadData
            }
            ReadBound::Deadline { .. } => ErrorClass::StsUnavailable,
        }
    }
}

/// What a [`crate::transport::Transport`] reports when it got no usable HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Connection refused, reset, TLS failure, body read error. Retriable.
    #[error("{0}")]
    Io(String),
    /// No byte of the answer arrived for `after` (the read timeout): a stalled body.
    #[error("no data for {after:?}")]
    Stalled {
        /// The read timeout.
        after: Duration,
    },
    /// The body exceeded `limit` bytes; the transport stopped reading.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The transport refuses this call for good (for example a non-loopback address on the unsigned profile).
    #[error("{0}")]
    Refused(String),
    /// No token for the call's municipality.
    #[error(transparent)]
    Token(Box<crate::token::TokenError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> CallSite {
        CallSite {
            service: Service::Bruger,
            operation: Operation::List,
        }
    }

    #[test]
    fn server_trouble_is_retriable_and_caller_mistakes_are_not() {
        assert!(
            StsError::Http {
                site: site(),
                status: 503
            }
            .is_retriable()
        );
        assert!(
            StsError::Http {
                site: site(),
                status: 429
            }
            .is_retriable()
        );
        assert!(
            !StsError::Http {
                site: site(),
                status: 403
            }
            .is_retriable()
        );
        assert!(
            StsError::Status {
                site: site(),
                code: 50,
                message: String::new()
            }
            .is_retriable()
        );
        assert!(
            !StsError::Status {
                site: site(),
                code: 40,
                message: String::new()
            }
            .is_retriable()
        );
        let fault = |code: &str, reason: &str| StsError::Fault {
            site: site(),
            kind: FaultKind::parse(None, reason),
            code: code.to_owned(),
            subcode: None,
            reason: reason.to_owned(),
            http_status: 500,
        };
        assert!(fault("Receiver", "Throttled").is_retriable());
        assert!(!fault("Sender", "bad input").is_retriable());
        assert!(!fault("Receiver", "ServiceAgreementNotFound").is_retriable());
        assert!(!StsError::Config("x".into()).is_retriable());
    }

    #[test]
    fn classes_and_retries_follow_the_fault_kind_not_the_hint_text() {
        let fault = |code: &str, subcode: Option<&str>, reason: &str| StsError::Fault {
            site: site(),
            kind: FaultKind::parse(subcode, reason),
            code: code.to_owned(),
            subcode: subcode.map(str::to_owned),
            reason: reason.to_owned(),
            http_status: 500,
        };
        let agreement = fault("Sender", Some("ServiceAgreementNotFound"), "no agreement");
        assert_eq!(agreement.class(), ErrorClass::StsAgreementMissing);
        assert!(!agreement.is_retriable() && agreement.ends_read());
        let auth = fault("Sender", Some("wsse:FailedAuthentication"), "refused");
        assert_eq!(auth.class(), ErrorClass::StsAuth);
        assert!(auth.ends_read());
        // A token refusal carries no hint text, and is still neither retried nor read on.
        let token = fault("Receiver", None, "Token expired");
        assert_eq!(token.class(), ErrorClass::StsAuth);
        assert!(!token.is_retriable() && token.ends_read());
        let busy = fault("Receiver", None, "Throttled");
        assert_eq!(busy.class(), ErrorClass::StsUnavailable);
        assert!(busy.is_retriable() && !busy.ends_read());
        let bad = fault("Sender", None, "bad input");
        assert_eq!(bad.class(), ErrorClass::StsBadData);
        assert_eq!(
            StsError::Timeout {
                site: site(),
                timeout: Duration::from_secs(1)
            }
            .class(),
            ErrorClass::StsUnavailable
        );
        assert_eq!(
            StsError::Malformed {
                site: site(),
                message: String::new()
            }
            .class(),
            ErrorClass::StsBadData
        );
    }
}
