//! Maintenance windows in a time zone, and whether a backend's predicted time fits in one.

use std::time::Duration;

use jiff::civil::{Date, Time as CivilTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::Weekday;

/// A validated window: opens at `start` local time on `days` (all days when empty), lasts `length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub tz: TimeZone,
    pub start: CivilTime,
    pub length: Duration,
    pub days: Vec<Weekday>,
}

/// Where `now` is relative to the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    Open { remaining: Duration },
    Closed { opens_in: Duration },
}

/// Parses `HH:MM`.
pub fn parse_start(s: &str) -> Result<CivilTime, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: i8 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: i8 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    CivilTime::new(h, m, 0, 0).map_err(|e| format!("{s:?}: {e}"))
}

pub fn parse_tz(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("{name:?} is not a known IANA time zone"))
}

fn weekday(d: Date) -> Weekday {
    use jiff::civil::Weekday as W;
    match d.weekday() {
        W::Monday => Weekday::Mon,
        W::Tuesday => Weekday::Tue,
        W::Wednesday => Weekday::Wed,
        W::Thursday => Weekday::Thu,
        W::Friday => Weekday::Fri,
        W::Saturday => Weekday::Sat,
        W::Sunday => Weekday::Sun,
    }
}

fn to_std(d: jiff::SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl Window {
    /// Open or closed at `now`. A window that opens on a day looks back one day far enough to
    /// catch a window that started yesterday and runs past midnight (lengths up to 24h).
    pub fn at(&self, now: Timestamp) -> WindowState {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut next: Option<Timestamp> = None;
        for offset in -1i32..=8 {
            let Ok(day) = today.checked_add(offset.days()) else {
                continue;
            };
            if !self.days.is_empty() && !self.days.contains(&weekday(day)) {
                continue;
            }
            // a start inside a DST gap moves forward (jiff's "compatible" rule)
            let Ok(start) = day.to_datetime(self.start).to_zoned(self.tz.clone()) else {
                continue;
            };
            let start = start.timestamp();
            let end = crate::time::after(start, self.length);
            if start <= now && now < end {
                return WindowState::Open {
                    remaining: to_std(end.duration_since(now)),
                };
            }
            if start > now && next.is_none_or(|n| start < n) {
                next = Some(start);
            }
        }
        WindowState::Closed {
            opens_in: next.map_or(Duration::from_secs(3600), |n| to_std(n.duration_since(now))),
        }
    }
}

/// Backends remembered for the prediction.
pub const HISTORY: usize = 5;

/// Time one more backend is expected to take: the longest recent one, or, before any finished,
/// the drain ceiling plus 5 minutes for the stop, replace and verify.
pub fn predict(recent_seconds: &[u32], drain_timeout: Duration) -> Duration {
    match recent_seconds.iter().max() {
        Some(&s) => Duration::from_secs(u64::from(s)),
        None => drain_timeout + Duration::from_secs(300),
    }
}

/// Appends a finished backend's duration, keeping the newest `HISTORY`.
pub fn remember(recent_seconds: &mut Vec<u32>, took: Duration) {
    recent_seconds.push(u32::try_from(took.as_secs()).unwrap_or(u32::MAX));
    let extra = recent_seconds.len().saturating_sub(HISTORY);
    recent_seconds.drain(..extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(tz: &str, start: &str, hours: u64, days: Vec<Weekday>) -> Window {
        Window {
            tz: parse_tz(tz).unwrap(),
            start: parse_start(start).unwrap(),
            length: Duration::from_secs(hours * 3600),
            days,
        }
    }

    #[test]
    fn open_and_closed_in_the_window_time_zone() {
        let berlin = window("Europe/Berlin", "22:00", 4, vec![]);
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        // (now UTC, expected). Berlin is UTC+1 in January, UTC+2 in July.
        let t = [
            (
                "2026-01-10T20:59:00Z",
                WindowState::Closed { opens_in: m(1) },
            ),
            (
                "2026-01-10T21:00:00Z",
                WindowState::Open { remaining: h(4) },
            ),
            // past midnight local: the window that opened yesterday is still open
            (
                "2026-01-11T00:30:00Z",
                WindowState::Open { remaining: m(30) },
            ),
            (
                "2026-01-11T01:00:00Z",
                WindowState::Closed { opens_in: h(20) },
            ),
            (
                "2026-07-10T20:00:00Z",
                WindowState::Open { remaining: h(4) },
            ),
            (
                "2026-07-10T19:00:00Z",
                WindowState::Closed { opens_in: h(1) },
            ),
        ];
        for (now, want) in t {
            assert_eq!(berlin.at(at(now)), want, "{now}");
        }
    }

    #[test]
    fn days_restrict_the_start_but_not_the_end() {
        // Saturday 2026-01-10; the window opens Saturdays at 23:00 UTC for 2h
        let sat = window("UTC", "23:00", 2, vec![Weekday::Sat]);
        assert_eq!(
            sat.at(at("2026-01-11T00:30:00Z")),
            WindowState::Open {
                remaining: Duration::from_secs(1800)
            },
            "Sunday 00:30 is still inside Saturday's window"
        );
        assert_eq!(
            sat.at(at("2026-01-11T23:30:00Z")),
            WindowState::Closed {
                opens_in: Duration::from_secs(5 * 24 * 3600 + 23 * 3600 + 1800)
            },
            "Sunday 23:30: next Saturday"
        );
    }

    #[test]
    fn dst_change_days_keep_local_start() {
        // Berlin springs forward on 2026-03-29 at 02:00 local
        let w = window("Europe/Berlin", "01:00", 3, vec![]);
        // 01:00 CET = 00:00Z; the length is elapsed time, so it ends at 03:00Z (05:00 CEST)
        assert_eq!(
            w.at(at("2026-03-29T02:59:00Z")),
            WindowState::Open {
                remaining: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn predictions_and_history() {
        let drain = Duration::from_secs(900);
        assert_eq!(predict(&[], drain), Duration::from_secs(1200));
        assert_eq!(predict(&[40, 95, 60], drain), Duration::from_secs(95));
        let mut h = vec![];
        for s in 1..=7 {
            remember(&mut h, Duration::from_secs(s));
        }
        assert_eq!(h, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(parse_tz("Mars/Olympus").is_err());
        assert!(parse_start("24:00").is_err());
        assert!(parse_start("7").is_err());
        assert_eq!(
            parse_start("07:05").unwrap(),
            CivilTime::new(7, 5, 0, 0).unwrap()
        );
    }
}
