//! The known error classes' human text for tickets. What support does about a class, and
//! whether it is on KOMBIT's side, come from `orgsync_model::error_class::ErrorClass` (one
//! source with README's table); this table adds the sentence saying what failed, whether a
//! ticket opens at once, and the priority. An unknown class gets a generic text.

use orgsync_model::error_class::ErrorClass;

/// What the ticket says about one error class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// The class, dotted.
    pub class: &'static str,
    /// What failed, in a sentence.
    pub what: &'static str,
    /// What support can do about it.
    pub action: &'static str,
    /// Open a ticket at the first occurrence (not after `open_after_runs`).
    pub at_once: bool,
    /// An STS-side problem: the ticket carries a text for KOMBIT's service desk.
    pub kombit: bool,
    /// Zendesk priority: `urgent`, `high`, `normal` or `low`.
    pub priority: &'static str,
}

const fn info(
    class: &'static str,
    what: &'static str,
    action: &'static str,
    at_once: bool,
    kombit: bool,
    priority: &'static str,
) -> ClassInfo {
    ClassInfo {
        class,
        what,
        action,
        at_once,
        kombit,
        priority,
    }
}

/// Every class with its own text.
pub const KNOWN: &[ClassInfo] = &[
    info(
        "sts.auth",
        "STS refused orgsync's system certificate or token.",
        "",
        false,
        false,
        "high",
    ),
    info(
        "sts.agreement_missing",
        "The municipality has not approved the service agreement for orgsync in KOMBIT's administration module, so STS refuses to issue a token.",
        "",
        true,
        false,
        "high",
    ),
    info(
        "sts.unavailable",
        "STS Organisation did not answer, or answered with server errors, through every retry.",
        "",
        false,
        true,
        "normal",
    ),
    info(
        "sts.bad_data",
        "STS Organisation returned data orgsync cannot use (a broken unit tree or malformed objects).",
        "",
        false,
        true,
        "normal",
    ),
    info(
        "sts.partial_read",
        "Part of the municipality could not be read from STS, so deactivations were held.",
        "",
        false,
        false,
        "normal",
    ),
    info(
        "target.auth",
        "The HR system refused orgsync's credentials.",
        "",
        false,
        false,
        "high",
    ),
    info(
        "target.unavailable",
        "The HR system did not answer, or answered with server errors, through every retry.",
        "",
        false,
        false,
        "normal",
    ),
    info(
        "target.rejected",
        "The HR system refused some objects.",
        "",
        false,
        false,
        "low",
    ),
    info(
        "target.storage",
        "The target database could not be written (full disk, locked or corrupt database).",
        "",
        false,
        false,
        "high",
    ),
    info(
        "guard.mass_deactivation",
        "The run would deactivate more users or departments than the customer's guards allow, so every deactivation was held.",
        "",
        true,
        false,
        "high",
    ),
    info(
        "guard.source_drop",
        "STS returned markedly fewer active units or users than the last trusted run, so every deactivation was held.",
        "",
        true,
        false,
        "high",
    ),
    info(
        "config.invalid",
        "The customer's configuration is invalid.",
        "",
        false,
        false,
        "normal",
    ),
    info(
        "run.held",
        "The run held its deactivations.",
        "Check the held deactivations (`orgsync runs show`, `orgsync explain`); if they are right, release the run.",
        true,
        false,
        "high",
    ),
];

/// The text of `class`: its own, or a generic one for a class this table does not know; the
/// action and the KOMBIT side from [`ErrorClass`] when it is one.
pub fn class_info(class: &str) -> ClassInfo {
    let mut info = KNOWN
        .iter()
        .find(|info| info.class == class)
        .copied()
        .unwrap_or(ClassInfo {
            class: "",
            what: "The run failed.",
            action: "Read the run report and the dead letters; replay them once the cause is fixed.",
            at_once: class.starts_with("guard."),
            kombit: false,
            priority: "normal",
        });
    if let Ok(typed) = class.parse::<ErrorClass>() {
        info.action = typed.action();
        info.kombit = typed.is_sts_side();
        info.at_once |= matches!(
            typed,
            ErrorClass::StsAgreementMissing
                | ErrorClass::GuardMassDeactivation
                | ErrorClass::GuardSourceDrop
                | ErrorClass::GuardHeld
        );
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_class_gets_the_action_its_type_gives_and_the_table_repeats_none() {
        for class in ErrorClass::ALL {
            let info = class_info(class.as_str());
            assert_eq!(info.action, class.action(), "{class}");
            assert_eq!(info.kombit, class.is_sts_side(), "{class}");
        }
        for info in KNOWN {
            if info.class.parse::<ErrorClass>().is_ok() {
                assert_eq!(
                    info.action, "",
                    "{}: the action lives in ErrorClass",
                    info.class
                );
            }
        }
    }

    #[test]
    fn known_classes_have_their_own_text_and_unknown_ones_a_generic_one() {
        let agreement = class_info("sts.agreement_missing");
        assert!(agreement.at_once && agreement.what.contains("service agreement"));
        assert!(class_info("sts.unavailable").kombit && !class_info("sts.unavailable").at_once);
        let unknown = class_info("transport");
        assert_eq!(unknown.what, "The run failed.");
        assert!(!unknown.at_once && !unknown.kombit);
        // A guard the table does not know yet still holds deactivations: at once.
        assert!(class_info("guard.something_new").at_once);
    }

    #[test]
    fn every_known_class_is_listed_once_with_a_valid_priority() {
        for (i, info) in KNOWN.iter().enumerate() {
            assert!(
                KNOWN[i + 1..].iter().all(|other| other.class != info.class),
                "{} twice",
                info.class
            );
            assert!(
                ["urgent", "high", "normal", "low"].contains(&info.priority),
                "{}",
                info.class
            );
        }
    }
}
