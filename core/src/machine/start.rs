//! Which outdated backend starts next, in what order, and its record at Begin once every gate is open.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::decision::{Decision, active};
use super::gates::{ring_gate, start_gate};
use super::lock;
use super::observed::{Observed, PodView};
use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, Ordering};
use crate::dovecot::{self, RingHost};
use crate::reason::{StallReason, WaitReason};
use crate::settings::Settings;

/// Outdated pods and pods whose node is under maintenance (to relocate), not skipped by the
/// spec, in order: those to relocate first (a node drain waits for them); then with
/// `FewestUsers`, fewest users mapped in the director first (pods without a ring entry last);
/// ties, and `Ordinal`, highest ordinal first as the StatefulSet controller would roll them.
pub fn outdated<'a>(
    s: &Settings,
    pods: &'a [PodView],
    target: &str,
    ring: Option<&[RingHost]>,
) -> Vec<&'a PodView> {
    let mut v: Vec<&PodView> = pods
        .iter()
        .filter(|p| {
            (p.revision.as_deref() != Some(target) || p.maintenance.is_some())
                && !s.skip.contains(&p.name)
        })
        .collect();
    // one map, not a ring scan per pod: decisions over 1,000 backends stay linear
    let by_ip: std::collections::HashMap<&str, u64> = ring
        .into_iter()
        .flatten()
        .map(|h| (h.ip.as_str(), h.users))
        .collect();
    let users = |p: &PodView| -> u64 {
        if s.ordering == Ordering::Ordinal {
            return 0;
        }
        p.ip.as_deref()
            .and_then(|ip| by_ip.get(ip).copied())
            .unwrap_or(u64::MAX)
    };
    // the key once per pod (a lookup and a parse), not once per comparison
    v.sort_by_cached_key(|p| {
        (
            p.maintenance.is_none(),
            users(p),
            std::cmp::Reverse(ordinal(&p.name)),
        )
    });
    v
}

fn ordinal(name: &str) -> (u64, &str) {
    let n = name
        .rsplit('-')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (n, name)
}

pub(super) fn begin_next(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    todo: &[&PodView],
    ring: &[RingHost],
    target: &str,
    now: Timestamp,
) -> Option<Decision> {
    let busy: Vec<&str> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| r.pod.as_str())
        .collect();
    let busy_ips: Vec<&str> = status
        .backends
        .iter()
        .filter(|r| active(r))
        .map(|r| r.ip.as_str())
        .collect();
    let startable: Vec<&&PodView> = todo
        .iter()
        .filter(|p| !busy.contains(&p.name.as_str()) && !p.terminating)
        .collect();
    let Some(candidate) = startable.iter().find(|p| !s.hold.contains(&p.name)) else {
        let held: Vec<&str> = startable.iter().map(|p| p.name.as_str()).collect();
        if held.is_empty() {
            return None;
        }
        return Some(Decision::wait(
            WaitReason::BackendHeld,
            format!(
                "remaining backends are held by spec.hold: {}",
                held.join(", ")
            ),
            Duration::from_secs(300),
        ));
    };
    // a relocation at the target revision is no upgrade: the node's maintenance is now, and
    // neither a canary's approval nor the maintenance window holds it (a node drain waits)
    let relocation_only =
        candidate.maintenance.is_some() && candidate.revision.as_deref() == Some(target);
    if !relocation_only && let Some(gate) = start_gate(s, status, obs, target, now) {
        return Some(gate);
    }
    if !candidate.ready {
        return Some(Decision::Wait {
            reason: WaitReason::BackendNotReady,
            message: format!(
                "{} backend {} is not Ready; waiting before draining it",
                if relocation_only {
                    "to relocate,"
                } else {
                    "outdated"
                },
                candidate.name
            ),
            requeue: Duration::from_secs(10),
        });
    }
    let Some(ip) = candidate
        .ip
        .as_deref()
        .filter(|ip| dovecot::validate_ip(ip).is_ok())
    else {
        return Some(Decision::Wait {
            reason: WaitReason::BackendWithoutIP,
            message: format!("backend {} has no pod IP yet", candidate.name),
            requeue: Duration::from_secs(5),
        });
    };
    let host = ring.iter().find(|h| h.ip == ip);
    // what the ring says of the candidate stands only when every director agrees (a ring still
    // syncing may not have learnt a host yet): the ring's sync state is read first (`missing`)
    if obs.ring_synced == Some(false) && host.is_none_or(|h| h.vhosts == 0) {
        return Some(Decision::wait(
            WaitReason::RingNotSynced,
            format!(
                "backend {} ({ip}) is not in the ring at a vhost count, and the ring is not synced{} (doveadm director ring status): waiting for every director to agree before anything is concluded",
                candidate.name,
                obs.unsynced_on()
            ),
            Duration::from_secs(10),
        ));
    }
    let Some(host) = host else {
        return Some(Decision::Stall {
            reason: StallReason::BackendNotInRing,
            message: format!(
                "backend {} ({ip}) is not a host of the director ring; add it (doveadm director add) or fix director_mail_servers",
                candidate.name
            ),
        });
    };
    // the ring's lock is read lazily: on the first pass it is None, the Begin asks for it
    // (`missing`), and the decision is taken again with it
    match &obs.ring_lock {
        Some(Ok(lk)) => {
            if let Some(m) = lock::busy(s, status, obs, lk, &candidate.name) {
                return Some(Decision::wait(
                    WaitReason::RingBusy,
                    m,
                    Duration::from_secs(10),
                ));
            }
        }
        Some(Err(_)) => return lock::read(obs).err(),
        None => {}
    }
    let held = lock::held_ips(obs);
    let busy_ips: Vec<&str> = busy_ips
        .into_iter()
        .chain(held.iter().map(String::as_str))
        .collect();
    let addr = dovecot::validate_ip(ip).ok()?;
    if let Some(gate) = ring_gate(s, status, obs, ring, &candidate.name, addr, &busy_ips) {
        return Some(gate);
    }
    // A backend found already drained (vhosts 0) by someone else keeps no count to restore;
    // use the previous record's count when this pod had one, else refuse to guess.
    // The up/down state is taken as found: a host a human took down stays down after it.
    let (original, up) = if host.vhosts > 0 {
        (host.vhosts, host.up)
    } else if let Some(prev) = status.backends.iter().find(|r| r.pod == candidate.name) {
        (prev.original_vhosts, prev.restores_up())
    } else {
        return Some(Decision::Stall {
            reason: StallReason::BackendAlreadyDrained,
            message: format!(
                "backend {} ({ip}) has vhost count 0 in the ring before the rollout touched it; set its intended count with doveadm director update",
                candidate.name
            ),
        });
    };
    if let Some(Err(m)) = &obs.probe_credentials {
        return Some(Decision::stall(
            StallReason::ProbeCredentialsUnreadable,
            format!(
                "Verify's IMAP probe could not log in: {m}; no backend is drained until it can (create the Secret, or grant the operator get on it: chart value probeSecrets)"
            ),
        ));
    }
    Some(Decision::Begin(Box::new(BackendStatus {
        original_up: Some(up),
        relocation: candidate.maintenance.clone(),
        ..BackendStatus::begin(
            &candidate.name,
            ip,
            candidate.revision.clone(),
            original,
            Time(now),
        )
    })))
}
