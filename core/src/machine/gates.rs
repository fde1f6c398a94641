//! The gates a new backend passes before it starts: canary approval, the maintenance window,
//! ring capacity and ring sync. Each closed gate is a Wait with its own reason.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::decision::{Decision, active};
use super::observed::Observed;
use crate::api::{APPROVE_ANNOTATION, DovecotBackendUpgradeStatus};
use crate::dovecot::RingHost;
use crate::reason::{StallReason, WaitReason};
use crate::settings::Settings;
use crate::time::human;
use crate::window;

/// Whether a backend already runs the target revision outside any record: the canary is done.
fn canary_done(status: &DovecotBackendUpgradeStatus, obs: &Observed, target: &str) -> bool {
    obs.pods.iter().any(|p| {
        p.revision.as_deref() == Some(target)
            && p.ready
            && !status.backends.iter().any(|r| r.pod == p.name && active(r))
    })
}

/// Gates on starting any backend now: approval, window, time left. None: go.
pub(super) fn start_gate(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    target: &str,
    now: Timestamp,
) -> Option<Decision> {
    // approval names the StatefulSet's revision hash, or spec.revision (known before the commit)
    let approves = |r: &String| r == target || s.revision.as_ref() == Some(r);
    if s.supervised
        && !s.approved_revisions.iter().any(approves)
        && canary_done(status, obs, target)
    {
        let name = s.revision.as_deref().unwrap_or(target);
        return Some(Decision::wait(
            WaitReason::AwaitingApproval,
            format!(
                "canary upgraded to revision {target}; check it, then approve: set spec.canary.approvedRevision={name} or annotate {APPROVE_ANNOTATION}={name}"
            ),
            Duration::from_secs(300),
        ));
    }
    if let Some(w) = &s.window {
        let predicted = window::predict(&status.recent_backend_seconds, s.drain_timeout);
        if predicted > w.length {
            // no window will ever fit: say so instead of waiting for one
            return Some(Decision::stall(
                StallReason::MaintenanceWindowTooShort,
                format!(
                    "a backend is predicted to take {} ({}), longer than the whole maintenance window ({}); lengthen spec.maintenanceWindow.duration{}",
                    human(predicted),
                    if status.recent_backend_seconds.is_empty() {
                        "the drain ceiling plus 5 minutes, before any backend finished".to_string()
                    } else {
                        format!(
                            "the longest of the last {} backends' active time",
                            status.recent_backend_seconds.len()
                        )
                    },
                    human(w.length),
                    if status.recent_backend_seconds.is_empty() {
                        " or shorten spec.drain.timeout"
                    } else {
                        ""
                    }
                ),
            ));
        }
        match w.at(now) {
            window::WindowState::Closed { opens_in } => {
                return Some(Decision::wait(
                    WaitReason::OutsideMaintenanceWindow,
                    format!(
                        "outside the maintenance window; it opens in {}",
                        human(opens_in)
                    ),
                    opens_in.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                ));
            }
            window::WindowState::Open { remaining } if predicted > remaining => {
                return Some(Decision::wait(
                    WaitReason::WindowTooShort,
                    format!(
                        "a backend is predicted to take {}, but the maintenance window closes in {}; waiting for the next one",
                        human(predicted),
                        human(remaining)
                    ),
                    remaining.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                ));
            }
            window::WindowState::Open { .. } => {}
        }
    }
    None
}

/// Gates on the ring before draining `candidate` at `ip`: enough other backends must stay up
/// with vhosts to take its users, and the directors must agree on the ring. None: go.
pub(super) fn ring_gate(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    ring: &[RingHost],
    candidate: &str,
    ip: IpAddr,
    busy_ips: &[&str],
) -> Option<Decision> {
    let ip = ip.to_string();
    // an IP this DBU's records put a pod at, which no pod of the ring holds now, serves nobody:
    // its pod went (scaled down) before the ring's pass saw it there, so the ring's record has
    // no pod for that host (found by the model: the only backend serving was drained beside a
    // host put back for a pod deleted since)
    let vacated = |h: &RingHost| {
        status
            .backends
            .iter()
            .any(|r| r.ip == h.ip || r.new_ip.as_deref() == Some(h.ip.as_str()))
            && obs.ip_held_by_other(&h.ip, "").is_none()
    };
    // counted up to what is needed: whether a host serves reads the ring's record of it, and
    // a count of every host made each pass over a large ring O(N^2)
    let others = ring
        .iter()
        .filter(|h| {
            h.ip != ip && !busy_ips.contains(&h.ip.as_str()) && obs.takes_users(h) && !vacated(h)
        })
        .take(s.min_available)
        .count();
    if others < s.min_available {
        return Some(Decision::wait(
            WaitReason::InsufficientRingCapacity,
            format!(
                "draining {candidate} would leave {others} other up backends with vhosts > 0 in the ring; spec.minAvailableBackends is {}",
                s.min_available
            ),
            Duration::from_secs(30),
        ));
    }
    if obs.ring_synced == Some(false) {
        let on = obs.unsynced_on();
        return Some(Decision::wait(
            WaitReason::RingNotSynced,
            format!(
                "the director ring is not synced{on} (doveadm director ring status); no backend is drained until every director says it is"
            ),
            Duration::from_secs(10),
        ));
    }
    None
}
