//! Dry-run rendering: the order of outdated backends and the argv of every step (the step
//! scripts run against a simulated world), for `status.plan` and the `plan` command.

use k8s_openapi::jiff::Timestamp;

use super::decision::{Decision, active};
use super::observed::Observed;
use super::start::{begin_next, outdated};
use super::steps::steps_for;
use crate::api::{DovecotBackendUpgradeStatus, PlannedBackend, RolloutPlan};
use crate::dovecot::{self, RingHost};
use crate::settings::Settings;

/// Most backends listed in a status plan.
pub const PLAN_LIMIT: usize = 100;

/// What the rollout would do from here, without doing it.
pub fn dry_run(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    ring: &[RingHost],
    target: &str,
    now: Timestamp,
) -> RolloutPlan {
    let todo = outdated(s, &obs.pods, target, Some(ring));
    let order: Vec<PlannedBackend> = todo
        .iter()
        .filter(|p| !s.hold.contains(&p.name))
        .map(|p| {
            let host = ring.iter().find(|h| Some(h.ip.as_str()) == p.ip.as_deref());
            // an in-flight backend is drained already: its count to restore is the recorded one
            let recorded = status
                .backends
                .iter()
                .find(|r| r.pod == p.name && active(r));
            PlannedBackend {
                pod: p.name.clone(),
                ip: p.ip.clone(),
                users: host.map_or(0, |h| h.users as i64),
                vhosts: recorded.map_or_else(
                    || host.map_or(0, |h| i64::from(h.vhosts)),
                    |r| i64::from(r.original_vhosts),
                ),
            }
        })
        .collect();
    let steps = order
        .first()
        .and_then(|p| {
            let ip = dovecot::validate_ip(p.ip.as_deref()?).ok()?;
            Some(steps_for(
                s,
                obs,
                ring,
                target,
                &p.pod,
                ip,
                p.vhosts as u32,
                now,
            ))
        })
        .unwrap_or_default();
    let blocked = match begin_next(s, status, obs, &todo, ring, target, now) {
        Some(Decision::Wait { message, .. }) | Some(Decision::Stall { message, .. }) => {
            Some(message)
        }
        _ => None,
    };
    let more = order.len().saturating_sub(PLAN_LIMIT) as i64;
    RolloutPlan {
        order: order.into_iter().take(PLAN_LIMIT).collect(),
        more,
        steps,
        blocked,
    }
}
