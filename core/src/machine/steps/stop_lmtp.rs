//! StopLmtp: read where the verify user's mail lives (the Reset guard's map), then stop LMTP.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use std::time::Duration;

use crate::reason::WaitReason;

use super::{
    Cleanup, Cx, Decision, GateInput, Gated, On, Reads, RingState, Run, StepResult, StepSpec, judge,
};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    if let Some(back) = super::moved_before_stop(cx)? {
        return Ok(back);
    }
    if let Some(back) = super::mapped_while_running(cx)? {
        return Ok(back);
    }
    let b = &cx.s.backend;
    // once, before anything on the backend stops: the master.pid checks of StopDovecot and
    // Reset look under spec.baseDir, so it must be Dovecot's own base_dir
    let conf = b.doveconf_base_dir();
    let (_, out) = cx.run(On::Backend, &conf, CommandKind::Plain)?;
    if let Err(why) = judge::base_dir(&cx.s.base_dir, &out.stdout) {
        let mut e = cx.error(&conf, Some(0), &why);
        e.reason = Some(
            crate::reason::StallReason::BaseDirMismatch
                .as_str()
                .to_string(),
        );
        return Err(StepResult::Failed(e).into());
    }
    // the last moment the auth service can say where mail lives (Reset's guard)
    let lookup = cx.raw(On::Backend, &b.user_lookup(&cx.s.user))?;
    let layout = judge::layout_read(&cx.s.user, lookup.exit_code, &lookup.stdout);
    let (v, _) = cx.run(
        On::Backend,
        &b.service_stop_lmtp(),
        CommandKind::ServiceStop,
    )?;
    Ok(judge::lmtp_stopped(v, layout))
}

/// The restore reloads Dovecot to re-open LMTP: only a running one can be put back.
fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::RestoreIfRunning
}

/// What its gate reads first.
const READS: Reads = Reads {
    ring_sync: true,
    other_rings: true,
};

/// Nothing on the backend is stopped while the directors disagree (a split ring: one of them
/// may still send users to it), nor before every other director shows it drained.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    if g.obs.ring_synced == Some(false) {
        let on = g.obs.unsynced_on();
        return Some(Ok(Decision::wait(
            WaitReason::RingNotSynced,
            format!(
                "{}: the director ring is not synced{on}; Dovecot is not stopped until every director says it is",
                g.rec.pod
            ),
            Duration::from_secs(5),
        )));
    }
    if let Some(wait) = super::directors_agree(g, &format!("nothing on {} is stopped", g.rec.pod)) {
        return Some(wait);
    }
    super::others_drained(g, true)
}

const RING: RingState = RingState::DRAINED;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some(
        "first records where the verify user's mail lives (doveadm user), for Reset's guard".into(),
    )
}

/// The step as the machine sees it.
pub const STEP: StepSpec = StepSpec {
    run,
    gate,
    reads: READS,
    ring: |_| RING,
    undo,
    target: TARGET,
    note,
};
