//! Errors of STS calls, split by what the caller does next: retry later, fix configuration, or report malformed data.

use std::time::Duration;

use crate::wire::{Operation, Service};

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
    #[error("{site}: SOAP fault {code}{}: {reason}{}", subcode.as_ref().map(|s| format!("/{s}")).unwrap_or_default(), crate::token::hint(subcode.as_deref(), reason))]
    Fault {
        /// The call.
        site: CallSite,
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
            StsError::Transport { .. } | StsError::Timeout { .. } | StsError::Truncated { .. } => {
                true
            }
            StsError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            StsError::Fault {
                code,
                subcode,
                reason,
                ..
            } => {
                let text = format!("{} {}", subcode.as_deref().unwrap_or(""), reason);
                code == "Receiver"
                    && crate::token::hint(subcode.as_deref(), reason).is_empty()
                    && !text.contains("Token")
            }
            StsError::Token { cause, .. } => cause.is_retriable(),
            StsError::Status { code, .. } => *code >= 50,
            StsError::Config(_)
            | StsError::NotFound { .. }
            | StsError::TooLarge { .. }
            | StsError::Malformed { .. }
            | StsError::OrganisationNotFound { .. } => false,
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
            StsError::Fault {
                subcode, reason, ..
            } => !self.is_retriable() && !crate::token::hint(subcode.as_deref(), reason).is_empty(),
            _ => false,
        }
    }
}

/// What a [`crate::transport::Transport`] reports when it got no usable HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Connection refused, reset, TLS failure, body read error. Retriable.
    #[error("{0}")]
    Io(String),
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
}
