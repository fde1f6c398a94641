//! Replace: delete the stopped pod (by the UID StopDovecot saw; on a node under maintenance, let
//! the node's drain evict it first) and wait for its successor, Ready at the target revision
//! (and, for a relocation, off every node under maintenance).

use crate::api::BackendStatus;
use crate::time::elapsed;

use super::super::judge::ReplaceMove;
use super::{Cleanup, Cx, Reads, RingState, Run, StepResult, StepSpec, judge};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let rec = cx.rec;
    let target = cx
        .obs
        .sts
        .as_ref()
        .and_then(|x| x.update_revision.as_deref())
        .unwrap_or("");
    // the pod as the API server has it now: a pod cache lagging after an outage still shows
    // the stopped pod, and Replace would delete its successor
    let pod = cx.pod_now()?;
    let waited = elapsed(&rec.step_started, cx.now);
    let mv = judge::replace_move(
        pod.as_ref(),
        target,
        rec.stopped_pod_uid.as_deref(),
        waited,
        cx.s.replace_timeout,
    );
    let mv = judge::relocated_off(
        mv,
        pod.as_ref(),
        rec.relocation.is_some(),
        waited,
        cx.s.replace_timeout,
    );
    let mv = judge::evict_first(mv, pod.as_ref(), cx.now);
    if let ReplaceMove::Delete(uid) | ReplaceMove::Release(uid) = &mv {
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

fn undo(rec: &BackendStatus) -> Cleanup {
    super::left_out_stopped(rec)
}

const RING: RingState = RingState::DOWN;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, pod: &str, _ip: &str) -> Option<String> {
    Some(format!(
        "delete pod {pod} (on a node under maintenance: first leave it to the node's drain to evict, up to {:?}); wait up to {:?} for it to be Ready at the target revision",
        crate::maintenance::EVICTION_GRACE,
        s.replace_timeout
    ))
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate: super::no_gate,
    reads: Reads::NONE,
    ring: |_| RING,
    undo,
    target: TARGET,
    note,
};
