//! What undoing a backend means at each step, for `spec.abort` and for deleting the DBU.

use crate::api::{BackendStatus, DovecotBackendUpgradeStatus, FORCE_DELETE_ANNOTATION};
use crate::reason::EventReason;

use super::decision::{Cleanup, Undone, active};
use super::note::Note;
use super::observed::Observed;

/// What undoing a backend means at its recorded step: each step's file says (`steps::undo`).
pub fn cleanup_for(rec: &BackendStatus) -> Cleanup {
    super::steps::undo(rec)
}

/// The Event an undo implies.
pub fn undone_note(rec: &BackendStatus, undone: &Undone) -> Option<Note> {
    let n = match undone {
        Undone::Restored { human_down } => Note::new(
            EventReason::BackendRestored,
            format!(
                "{}: put back into the ring with {} vhosts{}",
                rec.pod,
                rec.original_vhosts,
                if *human_down {
                    ", left down: a human took it down during the rollout"
                } else if rec.restores_up() {
                    ""
                } else {
                    ", left down as it was before the rollout"
                }
            ),
        ),
        Undone::LeftOut(m) => Note::new(EventReason::BackendLeftOut, m.clone()),
        Undone::Failed(m) => Note::new(EventReason::BackendRestoreFailed, m.clone()),
        Undone::Nothing => return None,
    };
    Some(n.about(&rec.pod, rec.step))
}

/// An undo of `folded` (the record with a human's ring state seen at deletion folded in, as
/// `fold::human_downs` does) says the down it keeps is a human's, where the record before the
/// fold (`before`) would have put the backend up.
pub fn kept_by_hand(before: &BackendStatus, folded: &BackendStatus, undone: Undone) -> Undone {
    match undone {
        Undone::Restored { human_down: false } if before.restores_up() && !folded.restores_up() => {
            Undone::Restored { human_down: true }
        }
        u => u,
    }
}

/// Whether a deleted DBU did nothing to the ring for `rec`: it never held the backend (its
/// status says so, and the ring's record, read now, has no holder for the pod, not even one
/// whose status write was lost). A claim comes before anything a step or a rejoin does to the
/// ring, so the record just goes: leaving it out would add a holder beyond the ring's room
/// (found by the model: a rejoin begun while another DBU held the ring's only slot was left out
/// at deletion, its pod came back to its old entry, and the ring's pass took that out beside
/// the other backend). Unread record: never assumed.
pub fn never_held(
    status: &crate::api::DovecotBackendUpgradeStatus,
    rec: &BackendStatus,
    lock: Option<&super::observed::RingLock>,
) -> bool {
    !status.ring_held.contains(&rec.pod)
        && lock.is_some_and(|l| !l.holders.iter().any(|h| h.pod == rec.pod))
}

/// How deleting a DBU ends for its in-flight backends, once each was undone (or could not be).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deletion {
    pub notes: Vec<Note>,
    /// Backends that stay out of the ring, with their records: the ring's lock keeps them for
    /// the next DBU of the StatefulSet.
    pub left: Vec<BackendStatus>,
    /// Why the finalizer must stay: backends that should go back and could not yet.
    pub pending: Vec<String>,
}

impl Deletion {
    /// Adds how one backend's undo ended.
    pub fn undone(&mut self, rec: &BackendStatus, undone: Undone) {
        self.notes.extend(undone_note(rec, &undone));
        match undone {
            Undone::Restored { .. } | Undone::Nothing => {}
            Undone::LeftOut(m) => self.left.push(BackendStatus {
                message: Some(m),
                ..rec.clone()
            }),
            Undone::Failed(m) => self.pending.push(m),
        }
    }

    /// As `undone`, for an undo run against the world `obs` read before it: a backend it put
    /// back at a new IP keeps the deletion pending until the ring's pass knows that entry as
    /// its pod's (`lock::restored_awaits_ring_pass`).
    pub fn undone_in(&mut self, rec: &BackendStatus, undone: Undone, obs: &Observed) {
        if matches!(undone, Undone::Restored { .. })
            && super::lock::restored_awaits_ring_pass(rec, obs)
        {
            self.pending.push(super::lock::awaiting_message(rec));
        }
        self.undone(rec, undone);
    }

    /// A backend whose StatefulSet is gone, and its pod with it: nothing serves at its ring
    /// entry and nothing will adopt it, so it is neither put back (users would be sent to a
    /// dead IP) nor kept out; its entry stays as the step left it, and the Event says so.
    pub fn gone(&mut self, rec: &BackendStatus, stateful_set: &str) {
        let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
        self.notes.push(
            Note::new(
                EventReason::BackendLeftOut,
                format!(
                    "{}: StatefulSet {stateful_set} is gone, and the pod with it; its ring entry {ip} stays as step {} left it (remove it with doveadm director remove {ip})",
                    rec.pod, rec.step
                ),
            )
            .about(&rec.pod, rec.step),
        );
    }

    /// A backend whose pod the StatefulSet no longer keeps (scaled away): nothing serves at
    /// its ring entry and nothing will come back to finish it, so it is neither put back nor
    /// kept out (found by the model: the deletion waited for it for ever).
    pub fn scaled_away(&mut self, rec: &BackendStatus, stateful_set: &str) {
        let ip = rec.new_ip.as_deref().unwrap_or(&rec.ip);
        self.notes.push(
            Note::new(
                EventReason::BackendLeftOut,
                format!(
                    "{}: StatefulSet {stateful_set} no longer keeps this pod (scaled down); its ring entry {ip} stays as step {} left it (remove it with doveadm director remove {ip})",
                    rec.pod, rec.step
                ),
            )
            .about(&rec.pod, rec.step),
        );
    }

    /// A backend that should go back but no Ready director can take it.
    pub fn no_director(&mut self, rec: &BackendStatus) {
        match cleanup_for(rec) {
            Cleanup::LeaveOut(m) => self.undone(rec, Undone::LeftOut(m)),
            Cleanup::Nothing => {}
            Cleanup::Restore | Cleanup::RestoreIfRunning => self.pending.push(format!(
                "{}: at {} and no Ready director to put it back",
                rec.pod, rec.step
            )),
        }
    }

    /// `mailops.io/force-delete`: nothing is undone; every in-flight backend stays as it is.
    pub fn forced(status: &DovecotBackendUpgradeStatus) -> Self {
        let left: Vec<BackendStatus> = status
            .backends
            .iter()
            .filter(|r| active(r))
            .cloned()
            .collect();
        let mut d = Deletion::default();
        if !left.is_empty() {
            d.notes.push(Note::new(
                EventReason::CleanupForced,
                format!(
                    "deleted with {FORCE_DELETE_ANNOTATION}: left as they are, out of the ring: {}; the next DovecotBackendUpgrade of the StatefulSet takes them over",
                    names(&left)
                ),
            ));
        }
        d.left = left;
        d
    }

    /// The finalizer may go: nothing that should go back is still out.
    pub fn finished(&self) -> bool {
        self.pending.is_empty()
    }

    /// Why deleting waits, for the condition and the Event.
    pub fn pending_message(&self) -> String {
        format!(
            "deleting waits until the backends it took out are back: {}; retrying with backoff (annotate {FORCE_DELETE_ANNOTATION}=true to delete anyway and leave them as they are)",
            self.pending.join("; ")
        )
    }
}

fn names(recs: &[BackendStatus]) -> String {
    recs.iter()
        .map(|r| format!("{} (at {})", r.pod, r.step))
        .collect::<Vec<_>>()
        .join(", ")
}
