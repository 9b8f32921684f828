//! A customer's sync schedule: a cron expression read in the customer's time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed cron expression (5 fields, or 6 with seconds first) and its time zone.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: croner::Cron,
    timezone: Tz,
}

impl Schedule {
    /// Parses `expression` (`minute hour day-of-month month day-of-week`, optionally with a
    /// leading seconds field) for the time zone `timezone`.
    pub fn parse(expression: &str, timezone: Tz) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "{expression:?} has {fields} fields; expected 5 (minute hour day month weekday), or 6 with seconds first"
            ));
        }
        let cron = croner::Cron::from_str(expression)
            .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))?;
        Ok(Schedule {
            expression: expression.to_owned(),
            cron,
            timezone,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first fire strictly after `after`, in UTC; `None` if it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The expression in words (English), for `config check`.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.timezone)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.timezone == other.timezone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn midnight_in_copenhagen_is_23_utc_in_winter_and_22_in_summer() {
        let schedule = Schedule::parse("0 0 * * *", chrono_tz::Europe::Copenhagen).unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        assert_eq!(
            schedule.next_after(winter),
            Some(Utc.with_ymd_and_hms(2026, 11, 22, 23, 0, 0).unwrap())
        );
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(
            schedule.next_after(summer),
            Some(Utc.with_ymd_and_hms(2026, 7, 1, 22, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_leading_seconds_field_fires_within_the_minute() {
        let schedule = Schedule::parse("*/5 * * * * *", chrono_tz::UTC).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 1).unwrap();
        assert_eq!(
            schedule.next_after(now),
            Some(Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 5).unwrap())
        );
    }

    #[test]
    fn malformed_expressions_are_refused_with_the_reason() {
        for bad in [
            "",
            "0 0 * *",
            "61 0 * * *",
            "0 0 * * * * * *",
            "every night",
        ] {
            assert!(
                Schedule::parse(bad, chrono_tz::UTC).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
