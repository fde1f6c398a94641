//! RingRemove: `director down` and `flush`, so that the director forgets the users it mapped here.

use crate::api::BackendStatus;
use crate::dovecot::CommandKind;

use super::{
    Cleanup, Cx, GateInput, Gated, On, Reads, RingState, Run, StepResult, StepSpec, judge,
};

fn run(cx: &mut Cx<'_>) -> Run<StepResult> {
    let ip = judge::record_ip(&cx.rec.ip, cx.rec.step)?;
    let d = &cx.s.director;
    cx.run(On::Director, &d.director_down(ip), CommandKind::Plain)?;
    cx.run(On::Director, &d.director_flush(ip), CommandKind::Plain)?;
    Ok(StepResult::advanced(None))
}

fn undo(rec: &BackendStatus) -> Cleanup {
    super::left_out_stopped(rec)
}

/// What its gate reads first.
const READS: Reads = Reads {
    ring_sync: false,
    other_rings: true,
};

/// Not taken down before every other director shows it drained.
fn gate(g: &GateInput<'_>) -> Option<Gated> {
    super::others_drained(g, false)
}

/// Drained; down too once it failed here (it is never put back).
fn ring(rec: &BackendStatus) -> RingState {
    if rec.failed {
        RingState::DOWN
    } else {
        RingState::DRAINED
    }
}

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
    reads: READS,
    ring,
    undo,
    target: TARGET,
    note,
};
