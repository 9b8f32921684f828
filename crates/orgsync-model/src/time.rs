//! Danish dates: STS time stamps and the run's "today" are compared as dates in Europe/Copenhagen.
//!
//! A position that starts at midnight Danish time on 1 January is stamped
//! `2026-12-31T23:00:00Z` by a server that writes UTC; its date is 1 January. Taking the date in
//! UTC (or in whatever offset the server happened to write) would make it 31 December. Every
//! boundary and the planner's "today" therefore go through [`danish_date`], which knows the
//! daylight-saving changes (chrono-tz's copy of the IANA database).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Copenhagen;

/// The date in Denmark (Europe/Copenhagen, DST-correct) at the instant `at`.
#[allow(clippy::disallowed_methods)] // the one place a date is taken, in Copenhagen time
pub fn danish_date<Z: TimeZone>(at: &DateTime<Z>) -> NaiveDate {
    at.with_timezone(&Copenhagen).date_naive()
}

/// The instant a Danish day begins (midnight in Europe/Copenhagen, as UTC).
pub fn danish_midnight(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    // Denmark never changes the clock at midnight, so midnight exists exactly once; the
    // fallback (UTC+1, standard time) is only for completeness.
    Copenhagen
        .from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| midnight.and_utc() - chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

    use super::{danish_date, danish_midnight};

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).expect("a valid time stamp")
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a valid date")
    }

    #[test]
    fn midnight_in_copenhagen_written_in_utc_is_the_next_day() {
        // Winter: Copenhagen is UTC+1.
        assert_eq!(danish_date(&at("2026-12-31T23:00:00Z")), date("2027-01-01"));
        assert_eq!(danish_date(&at("2026-12-31T22:59:59Z")), date("2026-12-31"));
        // Midnight UTC is already 01:00 in Copenhagen: the same date.
        assert_eq!(danish_date(&at("2027-01-01T00:00:00Z")), date("2027-01-01"));
        // The offset the server wrote does not matter, only the instant.
        assert_eq!(
            danish_date(&at("2027-01-01T00:00:00+01:00")),
            danish_date(&at("2026-12-31T23:00:00Z"))
        );
    }

    #[test]
    fn summer_midnight_is_two_hours_before_utc_midnight() {
        assert_eq!(danish_date(&at("2026-06-30T22:00:00Z")), date("2026-07-01"));
        assert_eq!(danish_date(&at("2026-06-30T21:59:59Z")), date("2026-06-30"));
    }

    #[test]
    fn the_spring_change_moves_midnight_from_23_to_22_utc() {
        // DST starts 2026-03-29 at 02:00 local (01:00 UTC).
        assert_eq!(danish_date(&at("2026-03-28T23:00:00Z")), date("2026-03-29"));
        assert_eq!(danish_date(&at("2026-03-29T00:59:59Z")), date("2026-03-29"));
        assert_eq!(danish_date(&at("2026-03-29T22:00:00Z")), date("2026-03-30"));
        assert_eq!(danish_date(&at("2026-03-29T21:59:59Z")), date("2026-03-29"));
    }

    #[test]
    fn the_autumn_change_moves_midnight_from_22_to_23_utc() {
        // DST ends 2026-10-25 at 03:00 local (01:00 UTC).
        assert_eq!(danish_date(&at("2026-10-24T22:00:00Z")), date("2026-10-25"));
        assert_eq!(danish_date(&at("2026-10-25T01:30:00Z")), date("2026-10-25"));
        assert_eq!(danish_date(&at("2026-10-25T23:00:00Z")), date("2026-10-26"));
        assert_eq!(danish_date(&at("2026-10-25T22:59:59Z")), date("2026-10-25"));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the UTC date, to show it differs
    fn a_run_just_after_danish_midnight_plans_for_the_danish_day() {
        let run: DateTime<Utc> = "2027-01-01T00:30:00+01:00".parse().expect("a valid time");
        assert_eq!(run.date_naive(), date("2026-12-31"));
        assert_eq!(danish_date(&run), date("2027-01-01"));
    }

    #[test]
    fn danish_midnight_is_23_utc_in_winter_and_22_in_summer() {
        let utc = |t: &str| t.parse::<DateTime<Utc>>().expect("a valid time");
        assert_eq!(
            danish_midnight(date("2027-01-01")),
            utc("2026-12-31T23:00:00Z")
        );
        assert_eq!(
            danish_midnight(date("2026-03-29")),
            utc("2026-03-28T23:00:00Z")
        );
        assert_eq!(
            danish_midnight(date("2026-03-30")),
            utc("2026-03-29T22:00:00Z")
        );
        assert_eq!(
            danish_midnight(date("2026-10-25")),
            utc("2026-10-24T22:00:00Z")
        );
        assert_eq!(
            danish_midnight(date("2026-10-26")),
            utc("2026-10-25T23:00:00Z")
        );
        for day in ["2026-03-29", "2026-07-01", "2026-10-25", "2027-01-01"] {
            assert_eq!(danish_date(&danish_midnight(date(day))), date(day));
        }
    }
}
