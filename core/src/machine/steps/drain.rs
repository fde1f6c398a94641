//! Drain: the backend's vhost count to 0, so that the director maps no new user to it.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use std::time::Duration;

use crate::reason::WaitReason;

use super::{
    Cleanup, Cx, Decision, GateInput, Gated, On, Reads, RingState, Run, StepResult, StepSpec,
    active, gates, judge, lock,
};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    if let Some(back) = super::moved_before_stop(cx)? {
        return Ok(back);
    }
    let ip = judge::record_ip(&cx.rec.ip, cx.rec.step)?;
    let argv = cx.s.director.director_update(ip, 0);
    cx.run(On::Director, &argv, CommandKind::Plain)?;
    Ok(StepResult::advanced(None))
}

/// Nothing stopped yet: the recorded vhost count goes back.
fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::Restore
}

/// Before a backend is drained: the ring's record must hold it for this DBU (claimed here when
/// there is room). Room, capacity and sync are judged at the claim itself, from the record
/// read for it and a fresh `director ring status` (`missing` reads it for a Claim), not from
/// what Begin saw, which may be hours old after a wait.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    if lock::holds(g.status, &g.rec.pod) {
        // a human may have taken hosts out since the claim: capacity is judged again from the
        // ring as read now, right before the drain (found by the model: a human's `down` of
        // the last other host between the claim and the drain left no host serving), with the
        // hosts other DBUs hold out as the ring's record says now (found by the model: a
        // rejoin's new host, added by a restore cut short while its pod moved again, was
        // counted as serving and the only host that served was drained)
        if let Err(wait) = lock::read(g.obs) {
            return Some(Ok(wait));
        }
        let held = lock::held_ips(g.obs);
        let mine: Vec<&str> = g
            .status
            .backends
            .iter()
            .filter(|r| active(r) && r.pod != g.rec.pod)
            .map(|r| r.ip.as_str())
            .chain(held.iter().map(String::as_str))
            .collect();
        let ip = crate::dovecot::validate_ip(&g.rec.ip).ok()?;
        return gates::ring_gate(g.s, g.status, g.obs, g.ring, &g.rec.pod, ip, &mine).map(Ok);
    }
    let lk = match lock::read(g.obs) {
        Ok(lk) => lk,
        Err(wait) => return Some(Ok(wait)),
    };
    if let Some(m) = lock::busy(g.s, g.status, g.obs, lk, &g.rec.pod) {
        return Some(Ok(Decision::wait(
            WaitReason::RingBusy,
            m,
            Duration::from_secs(10),
        )));
    }
    // the other backends out: this DBU's in flight and those the ring's record holds
    let held = lock::held_ips(g.obs);
    let busy: Vec<&str> = g
        .status
        .backends
        .iter()
        .filter(|r| active(r) && r.pod != g.rec.pod)
        .map(|r| r.ip.as_str())
        .chain(held.iter().map(String::as_str))
        .collect();
    if let Ok(ip) = crate::dovecot::validate_ip(&g.rec.ip)
        && let Some(wait) = gates::ring_gate(g.s, g.status, g.obs, g.ring, &g.rec.pod, ip, &busy)
    {
        return Some(Ok(wait));
    }
    if let Some(wait) = super::directors_agree(g, &format!("{} is not taken out", g.rec.pod)) {
        return Some(wait);
    }
    let mut pods = lock::kept(g.status, g.obs);
    pods.push(g.rec.pod.clone());
    Some(Ok(Decision::Claim { pods }))
}

/// Not yet drained: it serves as before.
const RING: RingState = RingState::SERVING;

/// The pod its commands run in, for the plan.
const TARGET: &str = "director";

/// What the step does besides its commands, for the plan.
fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    None
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate,
    reads: Reads::NONE,
    ring: |_| RING,
    undo,
    target: TARGET,
    note,
};
