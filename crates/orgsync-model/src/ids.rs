//! Parsed domain values: CVR numbers, e-mail addresses, mail domains and STS object UUIDs.
//!
//! Each type can only be built through its `parse` function, so holding one means the value
//! has been checked (parse, don't validate).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A Danish CVR number (company registration number): exactly 8 ASCII digits.
///
/// The modulus-11 check digit is *not* enforced: KOMBIT's test municipality uses `11111111`,
/// which fails it. [`Cvr::has_valid_check_digit`] lets callers warn instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cvr(String);

/// Why a string is not a CVR number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected exactly 8 digits, got {got:?}")]
pub struct CvrError {
    /// The rejected input.
    pub got: String,
}

impl Cvr {
    /// Parses a CVR number: exactly 8 ASCII digits, no spaces or separators.
    pub fn parse(input: &str) -> Result<Cvr, CvrError> {
        if input.len() == 8 && input.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Cvr(input.to_owned()))
        } else {
            Err(CvrError {
                got: input.to_owned(),
            })
        }
    }

    /// The 8 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the number passes the CVR modulus-11 check (weights 2,7,6,5,4,3,2,1).
    /// Real municipalities pass it; KOMBIT's test CVR `11111111` does not.
    pub fn has_valid_check_digit(&self) -> bool {
        const WEIGHTS: [u32; 8] = [2, 7, 6, 5, 4, 3, 2, 1];
        let sum: u32 = self
            .0
            .bytes()
            .zip(WEIGHTS)
            .map(|(digit, weight)| u32::from(digit - b'0') * weight)
            .sum();
        sum % 11 == 0
    }
}

impl TryFrom<String> for Cvr {
    type Error = CvrError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Cvr::parse(&value)
    }
}

impl From<Cvr> for String {
    fn from(value: Cvr) -> Self {
        value.0
    }
}

impl fmt::Display for Cvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mail domain such as `aarhus.dk`: lower-case labels of letters, digits and hyphens,
/// at least two labels, no label starting or ending with a hyphen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

/// Why a string is not a mail domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{got:?} is not a mail domain ({why}); expected something like \"kommune.dk\"")]
pub struct DomainError {
    /// The rejected input.
    pub got: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Domain {
    /// Parses a mail domain, lower-casing it. A leading `@` is refused rather than stripped,
    /// so that a configuration typo is reported instead of guessed at.
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        let err = |why| DomainError {
            got: input.to_owned(),
            why,
        };
        let domain = input.to_ascii_lowercase();
        if domain.is_empty() {
            return Err(err("it is empty"));
        }
        if domain.len() > 253 {
            return Err(err("it is longer than 253 characters"));
        }
        if domain.contains('@') {
            return Err(err("it contains '@'; give the part after it"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(err("it needs at least one dot"));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(err("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(err("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label starts or ends with '-'"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("the last label is numeric"));
        }
        Ok(Domain(domain))
    }

    /// The domain, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Domain {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(value: Domain) -> Self {
        value.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, trimmed and lower-cased, syntactically valid (RFC 5322 addr-spec as the
/// `email_address` crate checks it) with a domain that [`Domain::parse`] accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    address: String,
    at: usize,
}

/// Why a string is not an e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{got:?} is not an e-mail address: {why}")]
pub struct EmailError {
    /// The rejected input.
    pub got: String,
    /// What is wrong with it.
    pub why: String,
}

impl Email {
    /// Parses an address, trimming surrounding white space and lower-casing it.
    pub fn parse(input: &str) -> Result<Email, EmailError> {
        let address = input.trim().to_lowercase();
        let err = |why: String| EmailError {
            got: input.to_owned(),
            why,
        };
        if let Err(e) = email_address::EmailAddress::parse_with_options(
            &address,
            email_address::Options::default().without_display_text(),
        ) {
            return Err(err(e.to_string()));
        }
        let at = address.rfind('@').ok_or_else(|| err("no '@'".to_owned()))?;
        Domain::parse(&address[at + 1..]).map_err(|e| err(e.why.to_owned()))?;
        Ok(Email { address, at })
    }

    /// The whole address, lower-case.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The part after `@`.
    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }

    /// Whether the address is in one of `domains` (exact match; sub-domains must be listed).
    pub fn is_in(&self, domains: &[Domain]) -> bool {
        domains.iter().any(|d| d.as_str() == self.domain())
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.address
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses the canonical hyphenated form (any case).
            pub fn parse(input: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(input).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

uuid_id!(
    /// The UUID of an STS `OrganisationEnhed` (a unit), which becomes a department's external id.
    UnitId
);
uuid_id!(
    /// The UUID of an STS `Bruger` (a user), which becomes a target user's external id.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cvr_is_exactly_eight_digits() {
        assert!(Cvr::parse("29189846").is_ok());
        assert!(Cvr::parse("11111111").is_ok());
        for bad in [
            "",
            "1234567",
            "123456789",
            "1234 678",
            "2918984a",
            "٢٩١٨٩٨٤٦",
        ] {
            assert!(Cvr::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_modulus_eleven_check_is_reported_not_enforced() {
        assert!(Cvr::parse("29189846").unwrap().has_valid_check_digit());
        assert!(Cvr::parse("55133018").unwrap().has_valid_check_digit());
        assert!(!Cvr::parse("11111111").unwrap().has_valid_check_digit());
    }

    #[test]
    fn emails_are_lower_cased_and_know_their_domain() {
        let email = Email::parse("  Anne.Hansen@Aarhus.DK ").unwrap();
        assert_eq!(email.as_str(), "anne.hansen@aarhus.dk");
        assert_eq!(email.domain(), "aarhus.dk");
        assert!(email.is_in(&[Domain::parse("aarhus.dk").unwrap()]));
        assert!(!email.is_in(&[Domain::parse("mail.aarhus.dk").unwrap()]));
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "anne",
            "anne@",
            "@aarhus.dk",
            "anne@aarhus",
            "a b@x.dk",
            "anne@-x.dk",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn domains_are_checked_label_by_label() {
        assert_eq!(Domain::parse("KK.dk").unwrap().as_str(), "kk.dk");
        assert!(Domain::parse("sub.kommune-x.dk").is_ok());
        for bad in [
            "", "dk", "@kk.dk", "kk..dk", "-kk.dk", "kk-.dk", "kk dk.dk", "kk.123", "kk_x.dk",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
