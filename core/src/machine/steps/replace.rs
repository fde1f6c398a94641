//! Replace: delete the stopped pod (by the UID StopDovecot saw; on a node under maintenance, let
//! the node's drain evict it first) and wait for its successor, Ready at the target revision
//! (and, for a relocation, off every node under maintenance).

use std::time::Duration;

use crate::api::BackendStatus;
use crate::time::elapsed;

use super::super::judge::ReplaceMove;
use super::super::observed::Observed;
use super::{
    Cleanup, Cx, GateInput, Gated, Held, PodView, Reads, RingState, Run, StepResult, StepSpec,
    judge,
};
use crate::reason::WaitReason;

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let rec = cx.rec;
    let target = cx
        .obs
        .sts
        .as_ref()
        .and_then(|x| x.update_revision.as_deref())
        .unwrap_or("");
    // the wait for the successor stands on the pod cache: the pod's changes wake the DBU, and
    // a wait acts on nothing (the poll read the pod from the API server each time: 13 GETs a
    // backend on the real node). Whatever acts or ends the step (a delete, a release, the pod
    // Ready, the timeout) is taken again from the API server: a pod cache lagging after an
    // outage still shows the stopped pod, and Replace would delete its successor
    let cached = cx.obs.pods.iter().find(|p| p.name == rec.pod).cloned();
    let mv = move_for(cx, cached.as_ref(), target);
    if matches!(mv, ReplaceMove::Wait(_)) {
        return Ok(judge::replace_result(mv, &rec.pod, target));
    }
    let pod = cx.pod_now()?;
    let mv = move_for(cx, pod.as_ref(), target);
    if let ReplaceMove::Delete(uid) | ReplaceMove::Release(uid) = &mv {
        if let Some(wait) = pod.as_ref().and_then(|p| last_serving(cx, p)) {
            return Ok(wait);
        }
        let fresh = cx.revision_now()?;
        if let Some(wait) = judge::target_still(target, fresh.as_deref(), &rec.pod) {
            return Ok(wait);
        }
        match mv {
            ReplaceMove::Release(_) => cx.release_pod(uid)?,
            _ => cx.delete_pod(uid)?,
        }
    }
    Ok(judge::replace_result(mv, &rec.pod, target))
}

/// A pod to delete that is not the one StopDovecot stopped (recreated since: its Dovecot runs)
/// at a host a director sends users to while no other host there takes any: deleting it would
/// leave that director serving nobody (found by the model with seed 2026: the pod, recreated
/// at the old entry of a pod that had moved, was the only host serving once a human took the
/// last other one down, and Replace deleted it for its revision). It waits for another host.
fn last_serving(cx: &Cx<'_>, pod: &PodView) -> Option<StepResult> {
    only_host_serving(cx.obs, cx.rec, pod).map(|message| StepResult::Waiting {
        requeue: Duration::from_secs(30),
        message,
    })
}

/// Why `pod` must not be deleted now: it is not the pod StopDovecot stopped, and it is the only
/// host a director sends users to.
fn only_host_serving(obs: &Observed, rec: &BackendStatus, pod: &PodView) -> Option<String> {
    if pod.uid.is_some() && pod.uid == rec.stopped_pod_uid {
        return None;
    }
    let ip = pod.ip.as_deref()?;
    obs.ring_views()
        .into_iter()
        .any(|view| {
            let serving: Vec<&str> = view
                .iter()
                .filter(|h| obs.takes_users(h))
                .map(|h| h.ip.as_str())
                .collect();
            serving == [ip]
        })
        .then(|| {
            format!(
                "{}: recreated at {ip}, the only host that takes users; deleted for its revision only once another host serves",
                pod.name
            )
        })
}

/// Before the script: a recreated pod that the cache shows at another revision (Replace would
/// delete it) while it is the only host a director sends users to waits for another host, and
/// says so as `InsufficientRingCapacity` (found by the model with seed 7777: a human kept the
/// other host down, and the wait said only that a step was in progress). The script checks
/// again on the pod read fresh before it deletes.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    let target = g.obs.sts.as_ref()?.update_revision.as_deref()?;
    let pod = g.obs.pods.iter().find(|p| p.name == g.rec.pod)?;
    if pod.revision.as_deref() == Some(target) {
        return None;
    }
    let message = only_host_serving(g.obs, g.rec, pod)?;
    Some(Err(Held {
        requeue: Duration::from_secs(30),
        reason: WaitReason::InsufficientRingCapacity,
        message,
    }))
}

/// What Replace does with `pod` as seen (None: there is none).
fn move_for(cx: &Cx<'_>, pod: Option<&PodView>, target: &str) -> ReplaceMove {
    let rec = cx.rec;
    let waited = elapsed(&rec.step_started, cx.now);
    // the clock runs from the step's start, so the old pod's termination is in it
    let template = cx.obs.sts.as_ref().and_then(|s| s.termination_grace);
    let grace = judge::replace_grace(template, pod);
    let budget = cx.s.replace_timeout + grace;
    let mv = judge::replace_move(pod, target, rec.stopped_pod_uid.as_deref(), waited, budget);
    let mv = judge::relocated_off(mv, pod, rec.relocation.is_some(), waited, budget);
    let mv = match mv {
        ReplaceMove::TimedOut(m) if !grace.is_zero() => ReplaceMove::TimedOut(format!(
            "{m} (timeouts.replace {:?} and the old pod's termination grace period {grace:?})",
            cx.s.replace_timeout
        )),
        mv => mv,
    };
    judge::evict_first(mv, pod, cx.now)
}

fn undo(rec: &BackendStatus) -> Cleanup {
    super::left_out_stopped(rec)
}

const RING: RingState = RingState::DOWN;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, pod: &str, _ip: &str) -> Option<String> {
    Some(format!(
        "delete pod {pod} (on a node under maintenance: first leave it to the node's drain to evict, up to {:?}); wait up to {:?} beyond its termination grace period for it to be Ready at the target revision",
        crate::maintenance::EVICTION_GRACE,
        s.replace_timeout
    ))
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
