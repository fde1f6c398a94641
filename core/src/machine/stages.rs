//! One reconcile as typed stages, each owning the status it hands on: prepare, decide, act (the
//! engine), record. The engine never holds the status mutably; the stages below do.
//!
//! ```text
//!   status as read ─┐
//!   observed world ─┼─ prepare ──► Prepared ─── decide ──► Decision ── act (engine) ──► Acted
//!   settings, now ──┘                 │                        │                          │
//!                                     └──────────────── record ◄────────────────────────┘
//!                                                  ▼
//!                                    Recorded { status, notes, requeue, finished }
//! ```

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{DovecotBackendUpgradeStatus, Step};
use crate::reason::WaitReason;
use crate::settings::Settings;

use super::decide::decide;
use super::decision::{Acted, Decision, StepResult};
use super::fold;
use super::note::Note;
use super::observed::Observed;

/// The status with what the world says before deciding folded in: a new target (finished
/// records dropped), a retry asked for, backends removed by a scale-down, pause clocks.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub status: DovecotBackendUpgradeStatus,
    pub notes: Vec<Note>,
}

/// A reconcile's result: the status to write, the Events, when to look again, and a step that
/// succeeded (with how long it took).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub status: DovecotBackendUpgradeStatus,
    pub notes: Vec<Note>,
    pub requeue: Option<Duration>,
    pub finished: Option<(Step, Duration)>,
}

pub fn prepare(
    s: &Settings,
    read: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    now: Timestamp,
) -> Prepared {
    let mut status = read.clone();
    if let Some(target) = obs.sts.as_ref().and_then(|x| x.update_revision.as_deref()) {
        fold::retarget(&mut status, target);
    }
    let mut notes = fold::apply_retry(&mut status, s.retry_token.as_deref(), obs, now);
    notes.extend(fold::close_removed(s, &mut status, obs, now));
    fold::pause_clocks(&mut status, s.paused, now);
    Prepared { status, notes }
}

/// Folds into a prepared status what the director ring, read while deciding, says a human
/// did to counts, and returns what to act on: `decision`, or, when a count was folded, a
/// short wait that writes the record first. The count must be on record before any command
/// (the drain's `update 0`, a re-assert) zeroes it: acting in the same pass would lose it
/// with a status write that conflicts (found by the model).
pub fn fold_ring_read(p: &mut Prepared, obs: &Observed, decision: Decision) -> Decision {
    let notes = fold::human_counts(&mut p.status, obs);
    if notes.is_empty() {
        return decision;
    }
    let pods: Vec<&str> = notes.iter().filter_map(|n| n.pod.as_deref()).collect();
    let message = format!(
        "{}: a vhost count set by hand is recorded before the operator acts again",
        pods.join(", ")
    );
    p.notes.extend(notes);
    Decision::wait(WaitReason::StepInProgress, message, Duration::from_secs(1))
}

/// The decision for a prepared status.
pub fn decide_prepared(s: &Settings, p: &Prepared, obs: &Observed, now: Timestamp) -> Decision {
    decide(s, &p.status, obs, now)
}

/// Folds what the action did into the status, then progress and conditions (which describe
/// the state after the action).
pub fn record(
    s: &Settings,
    p: Prepared,
    decision: &Decision,
    acted: Acted,
    obs: &Observed,
    generation: Option<i64>,
    acted_at: Timestamp,
) -> Recorded {
    let Prepared {
        mut status,
        mut notes,
    } = p;
    // judged on the steps the ring was read at, before the action moves any of them on
    notes.extend(fold::human_downs(&mut status, obs));
    let r = fold::record(&mut status, decision, acted, acted_at);
    notes.extend(r.notes);
    fold::intend_probe(s, &mut status, acted_at);
    fold::mark_downed(&mut status);
    fold::conclude(s, decision, &mut status, obs, generation, acted_at);
    Recorded {
        status,
        notes,
        requeue: r.requeue,
        finished: r.finished,
    }
}

/// The most decisions one reconcile takes: a release, the next Begin and its Claim.
pub const CHAIN_ROUNDS: usize = 3;

/// Whether the reconcile decides again in the same pass after `done`, which `acted` carried
/// out: after the bookkeeping of a backend's start (a Begin, checked against the API server;
/// a rejoin's own Begin is not: its pod serves where it is and its room is weighed first),
/// after a write of the ring's record (a claim, or a release once a backend is back), and
/// after a backend's last step (the soak) ended it. What those decide next is folded into the
/// same status write (`chain_into` says which), so that a step transition costs one write:
/// their state is in the status (a Begin) or in the ring's record (a claim), and a pass cut
/// short between them is resumed from either (a claim status does not know of is let go). A
/// step that leads to another step does not chain: deciding again would read the directors
/// for a decision the next reconcile takes anyway.
pub fn chain_from(done: &Decision, acted: &Acted) -> bool {
    match (done, acted) {
        (Decision::Begin(rec), Acted::Checked(Ok(()))) => !rec.rejoin,
        (Decision::Claim { .. }, Acted::Claimed(Ok(()))) => true,
        (
            Decision::Run {
                step: Step::Soak, ..
            },
            Acted::Ran(StepResult::Advanced { .. }),
        ) => true,
        _ => false,
    }
}

/// Whether a decision taken in a chained round, after `done`, is carried out in it: more
/// bookkeeping (a Begin, a claim), a wait, or the completion. Anything that acts on a backend
/// or the ring's hosts (a step, a re-assert, an undo, an adoption) or stalls waits for the next
/// reconcile, which starts from the status written with its intent. After a backend's soak
/// only a wait is (the slot kept for the ring's pass to know its new entry): a release or a
/// Begin would write the ring's record before the status says the backend is done, and a
/// restart in between would find it at Soak with its slot let go (another DBU may drain
/// meanwhile, and a soak that fails on its run again takes it out beside that one).
pub fn chain_into(done: &Decision, next: &Decision) -> bool {
    let soaked = matches!(
        done,
        Decision::Run {
            step: Step::Soak,
            ..
        }
    );
    match next {
        Decision::Wait { .. } => true,
        _ if soaked => false,
        Decision::Begin(rec) => !rec.rejoin,
        Decision::Claim { .. } | Decision::Complete => true,
        _ => false,
    }
}
