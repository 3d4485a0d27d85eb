//! Durations as people write them: a whole number and a unit, `ms`, `s`, `m`,
//! `h` or `d` (`90s`, `15m`, `2h`, `1d`).
//!
//! The one duration parser of the hive: the CLI's `stats --since`, the
//! dashboard's `since`, and a schedule's `when` (`30s`, `every:15m`) all read
//! durations here, so a client can check one before it sends it. A bare
//! number is no duration: seconds, milliseconds and a unix time would each be
//! a fair guess (the dashboard's `since` reads one as a unix time), so the
//! unit is required.

use std::time::Duration;

/// Why a text is not a duration; each reads as a sentence that says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// It does not start with a whole number.
    #[error("{0:?} is not a duration: write a whole number and a unit, e.g. 90s, 15m, 2h or 1d")]
    NotADuration(String),
    /// A number alone.
    #[error("{0:?} has no unit: write {0}s for seconds (or use ms, m, h or d)")]
    NoUnit(String),
    /// A number and something that is not a unit.
    #[error("{text:?} has an unknown unit {unit:?}: use ms, s, m, h or d")]
    UnknownUnit { text: String, unit: String },
    /// More than a `Duration` of milliseconds holds.
    #[error("{0:?} is longer than any duration the hive keeps")]
    TooLong(String),
}

/// Parses `500ms`, `90s`, `15m`, `2h` or `1d` (surrounding spaces are ignored).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits);
    if num.is_empty() {
        return Err(DurationError::NotADuration(text.to_owned()));
    }
    let unit_ms: u64 = match unit {
        "" => return Err(DurationError::NoUnit(text.to_owned())),
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_and_a_unit() {
        let ms = |t| parse(t).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("90s"), Ok(90_000));
        assert_eq!(ms(" 15m "), Ok(900_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("0s"), Ok(0));
    }

    #[test]
    fn a_bare_number_is_no_duration() {
        let e = parse("90").unwrap_err();
        assert_eq!(e, DurationError::NoUnit("90".into()));
        assert!(e.to_string().contains("write 90s"), "{e}");
    }

    #[test]
    fn what_is_refused_says_what_to_write() {
        assert!(matches!(parse("soon"), Err(DurationError::NotADuration(_))));
        assert!(matches!(parse(""), Err(DurationError::NotADuration(_))));
        assert!(matches!(parse("-5s"), Err(DurationError::NotADuration(_))));
        let e = parse("15 minutes").unwrap_err().to_string();
        assert!(e.contains("unknown unit"), "{e}");
        assert!(matches!(
            parse("1.5h"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse("999999999999999999d"),
            Err(DurationError::TooLong(_))
        ));
    }
}
