//! What a decision still needs read before it stands: the engine reads it and decides again.

use super::decision::Decision;
use super::observed::{Missing, Observed};
use super::steps;
use crate::reason::{StallReason, WaitReason};

/// What `decision` still needs read; None when it stands as it is. Reads are lazy so that a
/// finished or stalled rollout, woken by every pod event, costs no exec. A step's own reads
/// come from its file (`steps::reads`).
pub fn missing(decision: &Decision, obs: &Observed) -> Option<Missing> {
    let step_reads = match decision {
        Decision::Run { step, .. } => steps::reads(*step),
        _ => steps::Reads::NONE,
    };
    match decision {
        Decision::Wait {
            reason: WaitReason::RingUnreadable,
            ..
        } if obs.ring.is_none() => Some(Missing::Ring),
        // a slot is granted only on a ring every director says is synced, read for the grant
        Decision::Begin(_) | Decision::DryRun(_) | Decision::Claim { .. }
            if obs.ring_synced.is_none() =>
        {
            Some(Missing::RingSync)
        }
        Decision::Run { .. } if step_reads.ring_sync && obs.ring_synced.is_none() => {
            Some(Missing::RingSync)
        }
        // a stall over what the ring says of a backend stands only on a synced ring
        Decision::Stall {
            reason: StallReason::BackendNotInRing | StallReason::BackendAlreadyDrained,
            ..
        } if obs.ring_synced.is_none() => Some(Missing::RingSync),
        Decision::Run { .. }
            if step_reads.other_rings && obs.other_rings.is_none() && obs.directors.len() > 1 =>
        {
            Some(Missing::OtherRings)
        }
        // ... and every director's host list, compared before a slot is granted
        Decision::Claim { .. } if obs.other_rings.is_none() && obs.directors.len() > 1 => {
            Some(Missing::OtherRings)
        }
        // every decision about new work first looks for backends a deleted DBU left out
        // (adopted first): a left-out backend is not Ready, or drained, or its revision not yet
        // the template's, and would otherwise hold every DBU of the ring at the very wait or
        // stall it explains
        Decision::Begin(_)
        | Decision::Complete
        | Decision::Wait {
            reason:
                WaitReason::RingLockUnreadable
                | WaitReason::BackendNotReady
                | WaitReason::WaitingForRevision
                // a left-out backend at the target revision, its Dovecot stopped (found by the
                // model: the next DBU waited for it to be Ready for ever)
                | WaitReason::WaitingForPods,
            ..
        }
        | Decision::Stall {
            reason: StallReason::BackendNotInRing | StallReason::BackendAlreadyDrained,
            ..
        } if obs.ring_lock.is_none() => Some(Missing::RingLock),
        Decision::Begin(_) if obs.probe_credentials.is_none() => Some(Missing::ProbeCredentials),
        _ => None,
    }
}

/// Whether a decision taken on the watch cache's copy of the ring's record stands: only a wait,
/// and only while none of the DBU's backends is in flight. A DBU waiting for its pods polls,
/// and each poll asked the API server for the record to look for backends a deleted DBU left
/// out (111 requests a minute from 100 waiting DBUs); the copy can lag, but a record that
/// changes wakes every DBU of the ring through the ring's watch, which then decides on the
/// change. Everything that acts (an adoption, a claim, a begin) or folds the record into a
/// backend's status reads it from the source.
pub fn cached_lock_stands(
    status: &crate::api::DovecotBackendUpgradeStatus,
    decision: &Decision,
) -> bool {
    matches!(decision, Decision::Wait { .. })
        && !status.backends.iter().any(super::decision::active)
}

/// Whether the ring's record of who is out is read with the director ring: while a record is in
/// flight, an entry another backend's rejoin put back and still holds (its pod maybe moved on
/// since, so no pod has the IP) is that backend's, and its count or `down` is never taken for
/// this record's (found by the model: a rejoin's count at another pod's old entry was taken for
/// a human's on that pod's backend, which went back at it).
pub fn lock_with_ring(status: &crate::api::DovecotBackendUpgradeStatus, obs: &Observed) -> bool {
    obs.ring_lock.is_none() && status.backends.iter().any(super::decision::active)
}
