//! The scrubber every outgoing text passes through (ticket subjects, bodies and comments, log
//! sink lines, Sentry events): CPR-shaped numbers, bearer and basic credentials, `password=`,
//! `token=` and similar values, credentials in URLs, PEM blocks and SAML assertions, and any
//! secret the caller registers literally.

use std::sync::LazyLock;

use regex::Regex;

/// What replaces a removed value.
pub const REMOVED: &str = "[removed]";

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

fn rule(pattern: &str, replacement: &'static str) -> Rule {
    Rule {
        pattern: Regex::new(pattern).expect("the scrubber's patterns are valid"),
        replacement,
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // PEM blocks (keys, certificates) and SAML assertions, whole.
        rule(
            r"(?s)-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----",
            "[key removed]",
        ),
        rule(
            r"(?s)<(?:[A-Za-z0-9_]+:)?Assertion[\s>].*?</(?:[A-Za-z0-9_]+:)?Assertion>",
            "[assertion removed]",
        ),
        // Authorization schemes with their credentials.
        rule(
            r"\b(Bearer|bearer|Basic|Negotiate)\s+[A-Za-z0-9._~+/=-]{8,}",
            "$1 [removed]",
        ),
        // user:password@ in URLs.
        rule(
            r"(?i)([a-z][a-z0-9+.-]*://)[^/\s@:]*:[^/\s@]*@",
            "$1[removed]@",
        ),
        // key=value and "key": "value" for secret-looking keys.
        rule(
            r#"(?i)\b((?:[a-z0-9_-]*)(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|private[_-]?key|dsn))(\s*=\s*)("[^"\[][^"]*"|'[^'\[][^']*'|[^\s&,;"'\[][^\s&,;"']*)"#,
            "$1$2[removed]",
        ),
        rule(
            r#"(?i)("(?:[a-z0-9_-]*)(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|private[_-]?key|dsn)"\s*:\s*)"[^"\[][^"]*""#,
            "$1\"[removed]\"",
        ),
        // CPR-shaped numbers: ddmmyy-xxxx or ddmmyyxxxx standing alone.
        rule(r"\b\d{6}-?\d{4}\b", "[cpr removed]"),
    ]
});

/// Removes secrets and CPR-shaped numbers from text. Cheap to clone.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber with the built-in rules only.
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Also removes `secret` wherever it appears literally (e.g. the Zendesk token). Secrets
    /// shorter than 4 characters are ignored (they would remove ordinary words).
    pub fn with_secret(mut self, secret: &str) -> Scrubber {
        if secret.len() >= 4 {
            self.secrets.push(secret.to_owned());
        }
        self
    }

    /// `text` without secrets or CPR-shaped numbers.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REMOVED);
            }
        }
        for rule in RULES.iter() {
            if rule.pattern.is_match(&out) {
                out = rule
                    .pattern
                    .replace_all(&out, rule.replacement)
                    .into_owned();
            }
        }
        out
    }

    /// Scrubs every string inside a JSON value, keys left as they are, except that the value
    /// of a secret-looking key is removed whatever it is.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                let scrubbed = self.scrub(s);
                if scrubbed != *s {
                    *s = scrubbed;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if is_secret_key(key) && !v.is_null() {
                        *v = serde_json::Value::String(REMOVED.to_owned());
                    } else {
                        self.scrub_json(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a field name looks like it holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Whether `text` contains something [`Scrubber::scrub`] would remove (for tests and checks).
pub fn contains_secret_or_cpr(text: &str) -> bool {
    RULES.iter().any(|rule| rule.pattern.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        assert_eq!(Scrubber::new().scrub(input), expect, "scrubbing {input:?}");
    }

    #[test]
    fn cpr_shaped_numbers_are_removed_with_or_without_the_dash() {
        check(
            "cpr 010203-1234 and 0102031234.",
            "cpr [cpr removed] and [cpr removed].",
        );
    }

    #[test]
    fn run_ids_uuids_cvrs_and_dates_are_kept() {
        for text in [
            "run 11111111-20261207T171700-ab12",
            "unit 12345678-1234-1234-1234-123456789012",
            "cvr 29189846 on 2026-12-07, ticket #4711, phone 12345678",
        ] {
            check(text, text);
        }
    }

    #[test]
    fn credentials_in_headers_urls_and_key_values_are_removed() {
        check(
            "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.abc.def",
            "Authorization: Bearer [removed]",
        );
        check("Basic dXNlcjpwYXNz", "Basic [removed]");
        check("basic checks passed", "basic checks passed");
        check(
            "redis://:hunter2@redis:6379 and https://u:p@host/x",
            "redis://[removed]@redis:6379 and https://[removed]@host/x",
        );
        check(
            "password=hunter2&token=abc123 ZENDESK_TOKEN=zz",
            "password=[removed]&token=[removed] ZENDESK_TOKEN=[removed]",
        );
        check(r#"{"password": "hunter2"}"#, r#"{"password": "[removed]"}"#);
    }

    #[test]
    fn pem_blocks_and_saml_assertions_are_removed_whole() {
        check(
            "key -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- end",
            "key [key removed] end",
        );
        check(
            "<saml:Assertion ID=\"a\"><x/></saml:Assertion> after",
            "[assertion removed] after",
        );
    }

    #[test]
    fn scrubbed_text_is_left_alone_and_no_longer_looks_secret() {
        let once = Scrubber::new().scrub(
            "password=hunter2 Bearer abcdefghijkl https://u:p@h/ 010203-1234 {\"token\": \"x\"}",
        );
        assert_eq!(Scrubber::new().scrub(&once), once);
        assert!(!contains_secret_or_cpr(&once), "{once}");
    }

    #[test]
    fn registered_secrets_are_removed_literally() {
        let scrubber = Scrubber::new().with_secret("s3cr3t-value");
        assert_eq!(scrubber.scrub("it was s3cr3t-value!"), "it was [removed]!");
    }

    #[test]
    fn json_values_of_secret_keys_are_removed() {
        let mut value = serde_json::json!({"token": 42, "nested": {"text": "010203-1234"}});
        Scrubber::new().scrub_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"token": "[removed]", "nested": {"text": "[cpr removed]"}})
        );
    }
}
