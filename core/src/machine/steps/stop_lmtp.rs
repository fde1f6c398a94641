//! StopLmtp: read where the verify user's mail lives (the Reset guard's map), then stop LMTP.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use super::{Cleanup, Cx, On, Run, StepResult, judge};

pub fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let b = &cx.s.backend;
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
pub fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::RestoreIfRunning
}

/// The pod its commands run in, for the plan.
pub const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
pub fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some(
        "first records where the verify user's mail lives (doveadm user), for Reset's guard".into(),
    )
}
