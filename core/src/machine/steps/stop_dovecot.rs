//! StopDovecot: `doveadm stop`, then look until the master has exited; a poll is a requeue.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use super::{Cleanup, Cx, On, Reads, RingState, Run, StepResult, StepSpec, judge};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    if let Some(back) = super::moved_before_stop(cx)? {
        return Ok(back);
    }
    // users came since StopLmtp (a human gave it vhosts again): they are drained first (found
    // by the model: a user's next login failed on the backend stopped under them)
    if let Some(back) = super::mapped_while_running(cx)? {
        return Ok(back);
    }
    let stop = cx.s.backend.stop();
    // again on every poll: "not running" is done, and a master already stopping ignores it
    cx.run(On::Backend, &stop, CommandKind::Stop)?;
    if cx.dovecot_running()? {
        return Ok(judge::stop_wait(
            &cx.rec.pod,
            cx.now,
            &cx.rec.step_started,
            cx.s.stop_timeout,
            &stop,
        ));
    }
    // the UID of the pod just stopped, as the API server has it (a lagging cache may still
    // show its predecessor): Replace deletes exactly that one
    let pod = cx.pod_now()?;
    Ok(judge::stopped(pod.as_ref()))
}

fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::RestoreIfRunning
}

const RING: RingState = RingState::DRAINED;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some(format!(
        "then, while master.pid remains, test -e /proc/<its pid> tells a live master from a stale file, again every {:?} (a requeue) until the master has exited; at most {:?}",
        judge::STOP_POLL,
        s.stop_timeout
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
