//! RingRestore: the backend back in the ring at its recorded vhost count (and `up` only if it
//! was up before), at the pod's IP now; with a new IP the new host is added, the old removed.

use crate::api::BackendStatus;

use super::{Cleanup, Cx, GateInput, Gated, Reads, RingState, Run, StepResult, StepSpec, judge};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    // the pod's IP as the API server has it (a lagging cache may show its predecessor's), and
    // only the pod Verify verified
    let pod = cx.bound_pod()?;
    let (old, new, now_ip) = judge::restore_ips(cx.rec, pod.as_ref())?;
    let old_reused = cx
        .obs
        .entry_of_other(&old.to_string(), &cx.rec.pod)
        .is_some();
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
