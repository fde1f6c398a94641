//! Time arithmetic on a clock that is always passed in: elapsed, saturating add, backoff, human form.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Time since `since`, zero when `since` is in the future.
pub fn elapsed(since: &Time, now: Timestamp) -> Duration {
    let d = now.duration_since(since.0);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Time from `now` until `at`, zero when `at` has passed.
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// `now + d`, saturating at the far future instead of panicking.
pub fn after(now: Timestamp, d: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Backoff for transient failures: 2s, 4s, 8s ... capped at 2 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 7)).min(120))
}

/// A duration as a person reads it in a condition message: 45s, 12m, 3h5m.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_reads_well() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_090).unwrap();
        assert_eq!(elapsed(&Time(t0), t1), Duration::from_secs(90));
        assert_eq!(elapsed(&Time(t1), t0), Duration::ZERO);
        assert_eq!(until(t1, t0), Duration::from_secs(90));
        assert_eq!(until(t0, t1), Duration::ZERO);
        assert_eq!(after(t0, Duration::MAX), Timestamp::MAX);
        assert_eq!(
            [backoff(0), backoff(1), backoff(3), backoff(30)],
            [2, 2, 8, 120].map(Duration::from_secs)
        );
        assert_eq!(
            [45, 720, 11_100].map(|s| human(Duration::from_secs(s))),
            ["45s", "12m", "3h5m"]
        );
    }
}
