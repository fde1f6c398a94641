//! The Ready / Reconciling / Stalled conditions and the phase, in kstatus style.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::decision::{Decision, active};
use super::note::Note;
use crate::api::{DovecotBackendUpgradeStatus, Phase, Step};
use crate::reason::{EventReason, WaitReason};
use crate::text::{MESSAGE_LIMIT, bounded};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Sets one condition; `lastTransitionTime` moves only when the status flips.
pub fn set(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_s = if status { "True" } else { "False" };
    let message = bounded(message, MESSAGE_LIMIT);
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_s {
                c.last_transition_time = Time(now);
            }
            c.status = status_s.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.into(),
            status: status_s.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// status, reason, message of one condition.
type Cond<'a> = (bool, &'a str, String);

/// Writes phase and conditions for a decision.
pub fn summarize(
    status: &mut DovecotBackendUpgradeStatus,
    decision: &Decision,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    // a place in the ring's queue is kept while the DBU waits for the ring (or reads it)
    let queued = matches!(
        decision,
        Decision::Wait {
            reason: WaitReason::RingBusy | WaitReason::RingLockUnreadable,
            ..
        }
    );
    // ... and through a Begin, whose claim may still find the ring busy: the Begin and the wait
    // chained after it in one pass must not put the DBU at the back (found on a loaded machine:
    // each of two DBUs lost its place at its Begin, and one took two slots in a row while the
    // other waited)
    let begins = matches!(decision, Decision::Begin(_));
    status.ring_waiting_since = match (queued, begins, status.ring_waiting_since.take()) {
        (true, _, Some(t)) => Some(t),
        (true, _, None) => Some(Time(now)),
        (false, true, kept) => kept,
        (false, false, _) => None,
    };
    // a claim is bookkeeping of the ring's record (a backend registered at the IP Replace found,
    // a slot let go): while work is in progress the conditions stay as the step, Begin or wait
    // before it set them, so it costs no status write of its own (on the real node one at every
    // Verify, one before the completion); what the DBU holds is in `ringHeld`. After a stall
    // or the completion it says the DBU works again (a retry's first pass may be a claim)
    let is = |t: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if matches!(decision, Decision::Claim { .. }) && is(RECONCILING) && !is(STALLED) {
        return;
    }
    let target = status.target_revision.clone().unwrap_or_default();
    let progress = status.progress.clone().unwrap_or_default();
    let c = &mut status.conditions;
    let (phase, ready, reconciling, stalled): (Phase, Cond, Cond, Cond) = match decision {
        Decision::Stall { reason, message } => (
            Phase::Failed,
            (false, reason.as_str(), message.clone()),
            (false, reason.as_str(), message.clone()),
            (true, reason.as_str(), message.clone()),
        ),
        Decision::Complete => {
            let m = format!("all backends ({progress}) run revision {target}");
            (
                Phase::Completed,
                (true, "UpgradeComplete", m.clone()),
                (false, "UpgradeComplete", m),
                (false, "UpgradeComplete", String::new()),
            )
        }
        // held by a human or the calendar, not by work in progress
        Decision::Wait {
            reason, message, ..
        } if reason.is_hold() => (
            Phase::Paused,
            (false, reason.as_str(), message.clone()),
            (false, reason.as_str(), message.clone()),
            (false, reason.as_str(), String::new()),
        ),
        Decision::Aborted { message, .. } => (
            Phase::Aborted,
            (false, "Aborted", message.clone()),
            (false, "Aborted", message.clone()),
            (true, "Aborted", message.clone()),
        ),
        Decision::DryRun(plan) => {
            let m = format!(
                "dry run: {} backends would be upgraded; see status.plan",
                plan.order.len() as i64 + plan.more
            );
            (
                Phase::Planned,
                (false, "DryRun", m.clone()),
                (false, "DryRun", m),
                (false, "DryRun", String::new()),
            )
        }
        Decision::Undo { pod, .. } => (
            Phase::Progressing,
            (false, "Undoing", format!("putting {pod} back as it was")),
            (true, "Undoing", format!("putting {pod} back as it was")),
            (false, "Undoing", String::new()),
        ),
        Decision::Wait {
            reason, message, ..
        } => {
            let phase = if reason.is_pending() {
                Phase::Pending
            } else {
                Phase::Progressing
            };
            (
                phase,
                (
                    false,
                    "Progressing",
                    if progress.is_empty() {
                        message.clone()
                    } else {
                        format!("{progress} backends upgraded")
                    },
                ),
                (true, reason.as_str(), message.clone()),
                (false, "Progressing", String::new()),
            )
        }
        Decision::Begin(rec) => {
            let m = format!("starting backend {}", rec.pod);
            (
                Phase::Progressing,
                (
                    false,
                    "Progressing",
                    format!("{progress} backends upgraded"),
                ),
                (true, "StepInProgress", m),
                (false, "Progressing", String::new()),
            )
        }
        Decision::Run { pod, step, .. } => (
            Phase::Progressing,
            (
                false,
                "Progressing",
                format!("{progress} backends upgraded"),
            ),
            (true, "StepInProgress", format!("{pod}: {step}")),
            (false, "Progressing", String::new()),
        ),
        Decision::Adopt { records } => (
            Phase::Progressing,
            (
                false,
                "Progressing",
                format!("{progress} backends upgraded"),
            ),
            (
                true,
                "BackendAdopted",
                format!(
                    "taking over [{}], left out of the director ring by a deleted DovecotBackendUpgrade",
                    records
                        .iter()
                        .map(|r| r.pod.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (false, "Progressing", String::new()),
        ),
        Decision::Claim { pods } => (
            Phase::Progressing,
            (
                false,
                "Progressing",
                format!("{progress} backends upgraded"),
            ),
            (
                true,
                "RingLock",
                format!(
                    "registering [{}] in the director ring's lock",
                    pods.join(", ")
                ),
            ),
            (false, "Progressing", String::new()),
        ),
        Decision::Reassert { pod, .. } => (
            Phase::Progressing,
            (
                false,
                "Progressing",
                format!("{progress} backends upgraded"),
            ),
            (
                true,
                "RingReasserted",
                format!("director lost the ring state of {pod}; re-applying it"),
            ),
            (false, "Progressing", String::new()),
        ),
    };
    set(c, READY, ready.0, ready.1, &ready.2, generation, now);
    set(
        c,
        RECONCILING,
        reconciling.0,
        reconciling.1,
        &reconciling.2,
        generation,
        now,
    );
    set(
        c, STALLED, stalled.0, stalled.1, &stalled.2, generation, now,
    );
    status.phase = Some(phase);
    let cur = status.backends.iter().find(|r| active(r));
    status.current = cur.map(|r| r.pod.clone());
    status.step = cur.map(|r| r.step);
    status.drain_users = cur
        .filter(|r| r.step == Step::WaitSessions)
        .and_then(|r| r.drain.as_ref())
        .map(|d| d.users_left);
}

/// Drain progress changes on every poll; it is written at most this often (and with any real
/// change), so a long drain costs a patch per interval, not one per poll.
pub const DRAIN_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether drain progress moved on enough to be written by itself: a backend's first look, a
/// move (the counts add up across polls, and status is the only memory: an unwritten count is
/// lost at the next reconcile), or a new users-left count seen at least DRAIN_WRITE_EVERY after
/// the one last written (it is read afresh on every poll).
fn drain_due(old: &DovecotBackendUpgradeStatus, new: &DovecotBackendUpgradeStatus) -> bool {
    new.backends.iter().any(|n| {
        let Some(nd) = &n.drain else { return false };
        let od = old
            .backends
            .iter()
            .find(|o| o.pod == n.pod)
            .and_then(|o| o.drain.as_ref());
        match od {
            None => true,
            Some(od) => {
                (od.sessions_moved, od.users_moved) != (nd.sessions_moved, nd.users_moved)
                    || (od.users_left != nd.users_left
                        && crate::time::elapsed(&od.observed, nd.observed.0) >= DRAIN_WRITE_EVERY)
            }
        }
    })
}

/// Whether a new status is worth a patch. Progress messages alone ("3 users still mapped",
/// "waiting for Ready") change on every poll; writing each would cost a patch per poll and wake
/// every watcher, so they ride along with the next real change (a step, a condition's status or
/// reason, a count, an error). At most one patch per step transition, then.
pub fn worth_writing(
    old: Option<&DovecotBackendUpgradeStatus>,
    new: &DovecotBackendUpgradeStatus,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    if drain_due(old, new) {
        return true;
    }
    !quiet_eq(old, new)
}

/// Whether `a` and `b` are equal but for what changes on every poll (the write sequence, the
/// drain's counts, records' and conditions' messages). Field by field, cloning only a record
/// that differs: a pass compared clones of two whole statuses, O(N) allocations per pass.
fn quiet_eq(a: &DovecotBackendUpgradeStatus, b: &DovecotBackendUpgradeStatus) -> bool {
    // every field named (no `..`): a new one must be placed on one side or the other
    let DovecotBackendUpgradeStatus {
        observed_generation,
        conditions,
        phase,
        progress,
        target_revision,
        current,
        step,
        drain_users: _,
        backends,
        retry_token,
        recent_backend_seconds,
        paused_since,
        plan,
        ring_held,
        ring_waiting_since,
        write_seq: _,
    } = a;
    fn same_but<T: PartialEq + Clone>(a: &[T], b: &[T], quiet: impl Fn(&mut T)) -> bool {
        let q = |x: &T| {
            let mut x = x.clone();
            quiet(&mut x);
            x
        };
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || q(x) == q(y))
    }
    *observed_generation == b.observed_generation
        && *phase == b.phase
        && *progress == b.progress
        && *target_revision == b.target_revision
        && *current == b.current
        && *step == b.step
        && *retry_token == b.retry_token
        && *recent_backend_seconds == b.recent_backend_seconds
        && *paused_since == b.paused_since
        && *plan == b.plan
        && *ring_held == b.ring_held
        && *ring_waiting_since == b.ring_waiting_since
        && same_but(conditions, &b.conditions, |c| c.message.clear())
        && same_but(backends, &b.backends, |r| {
            r.message = None;
            r.drain = None;
        })
}

/// A Warning worth an Event when a DBU becomes Stalled, or stalls for another reason.
pub fn stall_note(
    old: Option<&DovecotBackendUpgradeStatus>,
    new: &DovecotBackendUpgradeStatus,
) -> Option<Note> {
    let stalled = |s: &DovecotBackendUpgradeStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == STALLED && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (reason, message) = stalled(new)?;
    if old.and_then(stalled).is_some_and(|(r, _)| r == reason) {
        return None;
    }
    Some(Note::new(
        EventReason::Stalled,
        format!("{reason}: {message}"),
    ))
}

/// The condition of this type when it is True.
fn true_condition<'a>(
    status: &'a DovecotBackendUpgradeStatus,
    type_: &str,
) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// True when the status says a human is needed.
pub fn stalled(status: &DovecotBackendUpgradeStatus) -> bool {
    true_condition(status, STALLED).is_some()
}

/// True when the status says Stalled=True for this reason.
pub fn stalled_for(status: &DovecotBackendUpgradeStatus, reason: &str) -> bool {
    true_condition(status, STALLED).is_some_and(|c| c.reason == reason)
}

/// True when the status says Reconciling=True for this wait.
pub fn waits_for(status: &DovecotBackendUpgradeStatus, reason: crate::reason::WaitReason) -> bool {
    let reason: &str = reason.into();
    true_condition(status, RECONCILING).is_some_and(|c| c.reason == reason)
}

/// True when the status says the rollout is complete (Ready=True).
pub fn ready(status: &DovecotBackendUpgradeStatus) -> bool {
    true_condition(status, READY).is_some()
}

/// What a new status means for the API server: whether to patch it, and the Warning to publish
/// when it turns Stalled (or stalls for another reason).
pub fn publish_plan(
    old: Option<&DovecotBackendUpgradeStatus>,
    new: &DovecotBackendUpgradeStatus,
) -> (bool, Option<Note>) {
    (worth_writing(old, new), stall_note(old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::{StallReason, WaitReason};
    use std::time::Duration;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn get<'a>(st: &'a DovecotBackendUpgradeStatus, t: &str) -> &'a Condition {
        st.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn transition_time_is_stable_unless_status_flips() {
        let mut c = Vec::new();
        set(&mut c, READY, false, "A", "m1", Some(1), ts(0));
        set(&mut c, READY, false, "B", "m2", Some(2), ts(10));
        assert_eq!(c[0].last_transition_time, Time(ts(0)));
        assert_eq!(
            (c[0].reason.as_str(), c[0].observed_generation),
            ("B", Some(2))
        );
        set(&mut c, READY, true, "C", "", Some(2), ts(20));
        assert_eq!(c[0].last_transition_time, Time(ts(20)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn only_real_changes_are_worth_a_patch() {
        let wait = |m: &str| Decision::Wait {
            reason: WaitReason::StepInProgress,
            message: m.into(),
            requeue: Duration::from_secs(1),
        };
        let mut a = DovecotBackendUpgradeStatus::default();
        summarize(
            &mut a,
            &wait("backend-2: 3 users still mapped"),
            Some(1),
            ts(0),
        );
        assert!(worth_writing(None, &a), "the first status");
        let mut b = a.clone();
        summarize(
            &mut b,
            &wait("backend-2: 2 users still mapped"),
            Some(1),
            ts(5),
        );
        assert!(!worth_writing(Some(&a), &b), "a poll's new count alone");
        let mut c = b.clone();
        c.progress = Some("1/3".into());
        assert!(worth_writing(Some(&a), &c), "progress");
        let mut d = b.clone();
        summarize(&mut d, &wait("x"), Some(2), ts(6));
        assert!(worth_writing(Some(&a), &d), "a new generation observed");
        let mut e = b.clone();
        summarize(&mut e, &Decision::Complete, Some(1), ts(7));
        assert!(worth_writing(Some(&a), &e), "a condition flips");
    }

    /// A claim (a registration at the IP Replace found, a slot let go) is bookkeeping: the
    /// conditions stay as the step before it set them, and the claim alone is no write; what
    /// it holds changes `ringHeld`, which is.
    #[test]
    fn a_claim_leaves_the_conditions_as_they_were() {
        let step = Decision::Wait {
            reason: WaitReason::StepInProgress,
            message: "backend-2: Replace".into(),
            requeue: Duration::from_secs(1),
        };
        let mut a = DovecotBackendUpgradeStatus {
            ring_held: vec!["backend-2".into()],
            ..Default::default()
        };
        summarize(&mut a, &step, Some(1), ts(0));
        let claim = Decision::Claim {
            pods: vec!["backend-2".into()],
        };
        let mut b = a.clone();
        summarize(&mut b, &claim, Some(1), ts(1));
        assert_eq!(b.conditions, a.conditions);
        assert!(
            !worth_writing(Some(&a), &b),
            "a registration at a new IP alone"
        );
        let mut c = b.clone();
        c.ring_held.clear();
        assert!(worth_writing(Some(&a), &c), "a slot let go");
        // the very first status still says what the DBU does
        let mut first = DovecotBackendUpgradeStatus::default();
        summarize(&mut first, &claim, Some(1), ts(0));
        assert!(!first.conditions.is_empty());
        // ... and so does a claim after a stall (a retry's first pass): it works again
        let mut stalled = a.clone();
        summarize(
            &mut stalled,
            &Decision::Stall {
                reason: StallReason::BackendFailed,
                message: "m".into(),
            },
            Some(1),
            ts(2),
        );
        summarize(&mut stalled, &claim, Some(1), ts(3));
        assert!(
            !stalled
                .conditions
                .iter()
                .any(|c| c.type_ == STALLED && c.status == "True"),
            "{:?}",
            stalled.conditions
        );
    }

    #[test]
    fn a_stall_is_announced_once_per_reason() {
        let stall = |reason: StallReason| Decision::Stall {
            reason,
            message: "m".into(),
        };
        let mut a = DovecotBackendUpgradeStatus::default();
        summarize(
            &mut a,
            &stall(StallReason::UpdateStrategyNotOnDelete),
            Some(1),
            ts(0),
        );
        let n = stall_note(None, &a).unwrap();
        assert!(n.warning && n.message.starts_with("UpdateStrategyNotOnDelete"));
        assert_eq!(stall_note(Some(&a), &a), None, "same stall again: quiet");
        let mut b = a.clone();
        summarize(&mut b, &stall(StallReason::BackendFailed), Some(1), ts(1));
        assert!(stall_note(Some(&a), &b).is_some(), "a new reason is news");
        let mut c = a.clone();
        summarize(&mut c, &Decision::Complete, Some(1), ts(2));
        assert_eq!(stall_note(Some(&a), &c), None);
    }

    #[test]
    fn decisions_map_to_kstatus() {
        let wait = Decision::Wait {
            reason: WaitReason::StepInProgress,
            message: "x".into(),
            requeue: Duration::from_secs(1),
        };
        let paused = Decision::Wait {
            reason: WaitReason::Paused,
            message: "p".into(),
            requeue: Duration::from_secs(1),
        };
        let stall = Decision::Stall {
            reason: StallReason::BackendFailed,
            message: "backend-2 failed at Verify".into(),
        };
        let window = Decision::Wait {
            reason: WaitReason::OutsideMaintenanceWindow,
            message: "opens in 2h".into(),
            requeue: Duration::from_secs(1),
        };
        let aborted = Decision::Aborted {
            message: "aborted".into(),
            left_out: false,
        };
        let dry = Decision::DryRun(Box::default());
        // (decision, phase, Ready, Reconciling, Stalled)
        let t = [
            (&wait, Phase::Progressing, "False", "True", "False"),
            (&paused, Phase::Paused, "False", "False", "False"),
            (&window, Phase::Paused, "False", "False", "False"),
            (&aborted, Phase::Aborted, "False", "False", "True"),
            (&dry, Phase::Planned, "False", "False", "False"),
            (&stall, Phase::Failed, "False", "False", "True"),
            (
                &Decision::Complete,
                Phase::Completed,
                "True",
                "False",
                "False",
            ),
        ];
        for (d, phase, r, rec, st) in t {
            let mut s = DovecotBackendUpgradeStatus::default();
            summarize(&mut s, d, Some(3), ts(0));
            assert_eq!(s.phase, Some(phase), "{d:?}");
            assert_eq!(get(&s, READY).status, r, "{d:?}");
            assert_eq!(get(&s, RECONCILING).status, rec, "{d:?}");
            assert_eq!(get(&s, STALLED).status, st, "{d:?}");
            assert_eq!(s.observed_generation, Some(3));
        }
        let mut s = DovecotBackendUpgradeStatus::default();
        summarize(&mut s, &stall, Some(1), ts(0));
        assert_eq!(get(&s, STALLED).message, "backend-2 failed at Verify");
        assert_eq!(get(&s, STALLED).reason, "BackendFailed");
    }
}
