//! Reset: with Dovecot stopped, the configured cache resets, each checked first by the guard
//! (never a path holding the verify user's mail, never anything beyond the cache).

use crate::api::BackendStatus;
use crate::dovecot::{self, CommandKind};
use crate::reset_guard;

use super::{Cleanup, Cx, On, Reads, RingState, Run, StepResult, StepSpec, judge};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let s = cx.s;
    let b = &s.backend;
    if cx.dovecot_running()? {
        return Ok(judge::reset_found_running());
    }
    if s.reset.is_empty() {
        return Ok(StepResult::advanced("reset disabled".to_string()));
    }
    // nothing is deleted before every command passed both checks
    let layout = match &cx.rec.mail_layout {
        Some(l) => l.clone(),
        None => {
            let (_, out) = cx.run(On::Backend, &b.doveconf_mail(), CommandKind::Plain)?;
            dovecot::parse_doveconf_mail(&s.user, &out.stdout)
        }
    };
    if let Some(refused) = judge::reset_refused(s, &layout) {
        return Ok(refused);
    }
    for argv in &s.reset {
        if let Some(probe) = reset_guard::probe(argv) {
            let out = cx.raw(On::Backend, &probe)?;
            judge::reset_probed(argv, &probe, out.exit_code, &out.stdout, &out.stderr)?;
        }
    }
    for argv in &s.reset {
        cx.run(On::Backend, argv, CommandKind::Reset)?;
    }
    Ok(StepResult::advanced(None))
}

fn undo(rec: &BackendStatus) -> Cleanup {
    super::left_out_stopped(rec)
}

/// Stopped and out of the ring.
const RING: RingState = RingState::DOWN;

/// The pod its commands run in, for the plan.
const TARGET: &str = "backend";

/// What the step does besides its commands, for the plan.
fn note(_s: &crate::settings::Settings, _pod: &str, _ip: &str) -> Option<String> {
    Some("only after master.pid shows Dovecot stopped; each command's read-only twin (find ... -print -quit) must find no mail data first".into())
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
