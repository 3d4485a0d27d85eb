//! `GET /api/stats[?agent=NAME][&since=WHEN]`: the derived telemetry of
//! `Hive::stats_summary`, the same `StatsSummary` host.sock's `stats` answers.
//!
//! `since` is where the window starts: unix seconds (`1767225600`) or a
//! duration back from now (`90s`, `15m`, `1h`, `2d`: `hive_sh4re::duration`);
//! the default is 1 h.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hive_sh4re::dashboard::StatsQuery;
use hive_sh4re::host::StatsSummary;

use super::Ctx;
use super::errors::{ApiError, ApiResult};
use super::extract::{Q, parse_name, require_agent};

/// The window without `since`, in ms.
pub const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;
/// The longest window (as host.sock's `stats` allows), in ms.
pub const MAX_WINDOW_MS: i64 = 366 * 24 * 3600 * 1000;
/// The shortest window, in ms: `stats_summary` needs a non-empty one.
const MIN_WINDOW_MS: i64 = 1000;

/// Reads `since` as a window length in ms ending at `now_ms`.
pub fn window_ms(since: Option<&str>, now_ms: i64) -> Result<i64, String> {
    let Some(raw) = since.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_WINDOW_MS);
    };
    let ms = if raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = raw.parse().map_err(|_| {
            format!("since={raw:?} is not a time: give unix seconds or a duration such as 15m")
        })?;
        let start = (secs * 1000.0) as i64;
        if start > now_ms {
            return Err(format!(
                "since={raw} is in the future: give a past unix time in seconds, or a duration such as 15m"
            ));
        }
        now_ms - start
    } else {
        let d = hive_sh4re::duration::parse(raw)
            .map_err(|e| format!("since: {e} (or give unix seconds)"))?;
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    };
    Ok(ms.clamp(MIN_WINDOW_MS, MAX_WINDOW_MS))
}

/// `GET /api/stats?agent=NAME&since=WHEN`: one agent's figures, or every agent's.
pub(crate) async fn stats(
    State(ctx): State<Ctx>,
    Q(q): Q<StatsQuery>,
) -> ApiResult<Json<StatsSummary>> {
    let agent = match q.agent.as_deref().filter(|a| !a.is_empty()) {
        Some(raw) => {
            let name = parse_name(raw)?;
            require_agent(&ctx, &name).await?;
            Some(name)
        }
        None => None,
    };
    let window = window_ms(q.since.as_deref(), crate::clock::now_ms()).map_err(ApiError::bad)?;
    Ok(Json(
        ctx.hive
            .stats_summary(agent.as_ref(), window)
            .await
            .map_err(ApiError::from_hive(StatusCode::NOT_FOUND))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn since_is_unix_seconds_or_a_duration() {
        assert_eq!(window_ms(None, NOW), Ok(DEFAULT_WINDOW_MS));
        assert_eq!(window_ms(Some(" "), NOW), Ok(DEFAULT_WINDOW_MS));
        assert_eq!(window_ms(Some("15m"), NOW), Ok(15 * 60 * 1000));
        assert_eq!(window_ms(Some("90s"), NOW), Ok(90_000));
        assert_eq!(window_ms(Some("2d"), NOW), Ok(2 * 86_400_000));
        assert_eq!(window_ms(Some("1799999400"), NOW), Ok(600_000));
        assert_eq!(window_ms(Some("1799999999.5"), NOW), Ok(MIN_WINDOW_MS));
        assert_eq!(window_ms(Some("0"), NOW), Ok(MAX_WINDOW_MS), "clamped");
        assert_eq!(window_ms(Some("9999d"), NOW), Ok(MAX_WINDOW_MS));
    }

    #[test]
    fn bad_since_says_what_to_write() {
        let e = window_ms(Some("1900000000"), NOW).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
        let e = window_ms(Some("15 minutes"), NOW).unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        let e = window_ms(Some("1.2.3"), NOW).unwrap_err();
        assert!(e.contains("not a time"), "{e}");
        let e = window_ms(Some("soon"), NOW).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
    }
}
