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
use super::decision::{Acted, Decision};
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
    fold::mark_downed(&mut status);
    fold::conclude(s, decision, &mut status, obs, generation, acted_at);
    Recorded {
        status,
        notes,
        requeue: r.requeue,
        finished: r.finished,
    }
}
