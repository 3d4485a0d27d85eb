//! Time as the hive stores it (unix milliseconds) and shows it (RFC 3339 UTC).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since the epoch) of a time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// `ms` as RFC 3339 UTC with second precision, e.g. `2026-11-25T15:52:49Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Milliseconds as `850ms`, `12.3s`, `4m 05s`, `3h 02m` or `2d 4h`.
pub fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        return format!("{}ms", ms.round());
    }
    if ms < 60_000.0 {
        return format!("{:.1}s", ms / 1000.0);
    }
    let s = (ms / 1000.0) as u64;
    let (m, h) = (s / 60, s / 3600);
    if h == 0 {
        format!("{m}m {:02}s", s % 60)
    } else if h < 48 {
        format!("{h}h {:02}m", m % 60)
    } else {
        format!("{}d {}h", h / 24, h % 24)
    }
}

/// Sleeps until `at`; never wakes without one (a `select!` arm for a deadline that may not be set).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Seconds from the environment variable `var` (a knob, mostly for tests:
/// `HIVE_..._SECS`, fractions allowed), else `default`; a value that is not
/// a positive number is ignored.
pub fn secs_from_env(var: &str, default: std::time::Duration) -> std::time::Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_seconds() {
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
