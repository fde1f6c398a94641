//! Drain: the backend's vhost count to 0, so that the director maps no new user to it.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use super::{Cleanup, Cx, On, Run, StepResult, judge};

pub fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let ip = judge::record_ip(&cx.rec.ip, cx.rec.step)?;
    let argv = cx.s.director.director_update(ip, 0);
    cx.run(On::Director, &argv, CommandKind::Plain)?;
    Ok(StepResult::advanced(None))
}

/// Nothing stopped yet: the recorded vhost count goes back.
pub fn undo(_: &BackendStatus) -> Cleanup {
    Cleanup::Restore
}

/// The pod its commands run in, for the plan.
pub const TARGET: &str = "director";

/// What the step does besides its commands, for the plan.
pub fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    None
}
