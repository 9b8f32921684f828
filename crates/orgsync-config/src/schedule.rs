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

/// Checks every number of every field against its range (`hour 25 is out of range 0-23`),
/// which the cron parser reports without naming the field.
fn check_ranges(expression: &str, with_seconds: bool) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let names = if with_seconds {
        &FIELDS[..]
    } else {
        &FIELDS[1..]
    };
    for ((name, low, high), field) in names.iter().zip(expression.split_whitespace()) {
        for part in field.split(',') {
            // `a-b/step`: the step is a count, not a value of the field.
            let values = part.split('/').next().unwrap_or(part);
            for value in values.split('-') {
                if let Ok(n) = value.parse::<u32>()
                    && !(*low..=*high).contains(&n)
                {
                    return Err(format!(
                        "{expression:?}: {name} {n} is out of range {low}-{high} (fields: {}minute hour day-of-month month day-of-week)",
                        if with_seconds { "second " } else { "" }
                    ));
                }
            }
        }
    }
    Ok(())
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
        check_ranges(expression, fields == 6)?;
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
