//! RingRestore: the backend back in the ring at its recorded vhost count (and `up` only if it
//! was up before), at the pod's IP now; with a new IP the new host is added, the old removed.

use std::net::IpAddr;

use crate::api::BackendStatus;

use super::{
    Cleanup, Cx, GateInput, Gated, Intent, Reads, RingState, Run, StepResult, StepSpec, judge,
};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    // the pod's IP as the API server has it (a lagging cache may show its predecessor's), and
    // only the pod Verify verified
    let pod = cx.bound_pod()?;
    let (old, new, now_ip) = judge::restore_ips(cx.rec, pod.as_ref())?;
    // written before the first command: a count there later that differs is a human's
    if let Some(view) = &cx.obs.ring
        && judge::restore_must_see(&cx.obs.ring_former, cx.rec, &now_ip)
    {
        let seen = view.iter().find(|h| h.ip == now_ip).map_or(0, |h| h.vhosts);
        return Ok(StepResult::Intend(Intent::RestoreSeen(seen)));
    }
    put_back(cx, old, new, now_ip)
}

/// The restore's commands, and the step's result. An undo at RingRestore (abort, deletion)
/// runs them without writing what it saw first (an undo has no intent to write; a human's count
/// set between an undo cut short and its next run is a limit docs/design.md names).
pub fn put_back(cx: &mut Cx<'_>, old: IpAddr, new: IpAddr, now_ip: String) -> Run<StepResult> {
    // whose the old entry is: the pod at it, one the ring's record holds at it, the one it stood
    // for; or the one the ring's pass counts it for (a rejoin put that pod back there and it
    // moved on: its own rejoin moves the count; found by the model, docs/design.md item 80)
    let old_ip = old.to_string();
    let old_reused = cx.obs.entry_of_other(&old_ip, &cx.rec.pod).is_some()
        || cx.obs.count_of_other(&old_ip, &cx.rec.pod).is_some();
    for c in judge::ring_restore_commands(cx.s, cx.rec, old, new, old_reused) {
        cx.run(c.on, &c.argv, c.kind)?;
    }
    Ok(judge::restored(cx.rec, new, now_ip))
}

/// Verified already: finishing the restore is the safe thing.
fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::Restore
}

/// It puts the replaced pod's IP into the ring: that pod must be Ready.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    super::pod_ready(g)
}

/// Verified: its own commands put it back; nothing is asserted.
const RING: RingState = RingState::SERVING;

/// The pod its commands run in, for the plan.
const TARGET: &str = "director";

/// What the step does besides its commands, for the plan.
fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some("with director add <new ip> / remove <old ip> first if the pod IP changed".into())
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
