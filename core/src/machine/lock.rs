//! The director ring's lock: which backends each DBU of a ring holds out of it, and whether one more fits.
//!
//! The lock is the DovecotRing's record of who is out (`status.out`, changed by compare-and-swap
//! on the ring's resourceVersion), so it holds across DBUs, operator restarts and leader
//! changes; the Lease names below are only read to import an earlier release's record. A DBU
//! registers a backend before draining it and releases it once it is back and the ring's pass
//! knows its entry; `status.ringHeld` says what it registered.

use std::collections::BTreeSet;

use super::conditions::RECONCILING;
use super::decision::{Decision, active};
use super::observed::{Observed, RingLock, Waiter};
use crate::api::{BackendStatus, DovecotBackendUpgradeStatus};
use crate::api::{LeftOut, RingHolder};
use crate::reason::WaitReason;
use crate::settings::Settings;
use std::time::Duration;

/// The lock's holders that belong to other DBUs, and those a deleted DBU left out (whatever
/// its name was: a DBU deleted and applied again is a new one).
pub fn others<'a>(obs: &Observed, lock: &'a RingLock) -> Vec<&'a RingHolder> {
    lock.holders
        .iter()
        .filter(|h| h.dbu != obs.me || h.left_out.is_some())
        .collect()
}

/// Pods this DBU keeps registered: those it registered whose record is still active, or whose
/// new entry the ring's pass has not yet recorded as theirs (`awaits_ring_pass`).
pub fn kept(status: &DovecotBackendUpgradeStatus, obs: &Observed) -> Vec<String> {
    status
        .ring_held
        .iter()
        .filter(|p| {
            status
                .backends
                .iter()
                .any(|r| &r.pod == *p && keeps(r, obs))
        })
        .cloned()
        .collect()
}

/// Whether a record keeps its pod registered: in flight, or finished at a new IP that the
/// ring's pass has not yet recorded as the pod's.
pub fn keeps(rec: &BackendStatus, obs: &Observed) -> bool {
    active(rec) || awaits_ring_pass(rec, obs)
}

/// A backend put back at a new IP (`new_ip`) is known as that entry's pod only to its record
/// until the ring's pass records it (`Observed::ring_former`), from the pod at the IP or from
/// the ring's record of who is out. Released before that, a pod that moves again leaves an
/// entry nobody stands for, and nothing rejoins it (found by the model: a rejoin ended with no
/// soak and its pod moved at once). So the slot is kept until the pass has seen the entry, or
/// the ring, read now, has no entry there to record (a human removed it).
pub fn awaits_ring_pass(rec: &BackendStatus, obs: &Observed) -> bool {
    rec.step == crate::api::Step::Done
        && restored_awaits_ring_pass(rec, obs)
        && rec.new_ip.as_deref().is_some_and(|new_ip| {
            obs.ring
                .as_deref()
                .is_none_or(|ring| ring.iter().any(|h| h.ip == new_ip))
        })
}

/// Whether a backend an undo has just put back keeps its slot for the ring's pass, as a
/// finished one does (`awaits_ring_pass`, which adds its step and the ring read now): put back
/// at a new IP, not removed or failed, and that entry not yet known to the pass as this pod's
/// (standing for it, or its count this pod's: an entry the pass knows only as another pod's
/// does not do; found by the model: the slot went on the pass's record of the pod that had
/// left the entry, and that pod's rejoin took this one's count there for a human's). A deletion that
/// put a moved pod back at its new IP waits for that (found by the model: a DBU deleted at
/// RingRestore put its moved pod back and let go at once, the pod moved again, and nothing
/// rejoined it). The ring read before the undo is not asked: the undo has just added the entry.
pub fn restored_awaits_ring_pass(rec: &BackendStatus, obs: &Observed) -> bool {
    rec.new_ip
        .as_deref()
        .filter(|n| *n != rec.ip)
        .is_some_and(|n| {
            !rec.removed
                && !rec.failed
                && !obs
                    .ring_former
                    .iter()
                    .any(|f| f.ip == n && (f.pod == rec.pod || f.counts_for(&rec.pod)))
        })
}

/// This DBU's finished records whose slot it keeps for the ring's pass (`awaits_ring_pass`):
/// nothing new begins, the rollout does not complete and a deletion does not let go while any
/// is left.
pub fn awaiting<'a>(
    status: &'a DovecotBackendUpgradeStatus,
    obs: &'a Observed,
) -> impl Iterator<Item = &'a BackendStatus> {
    status
        .backends
        .iter()
        .filter(move |r| holds(status, &r.pod) && awaits_ring_pass(r, obs))
}

/// What a backend kept for the ring's pass waits for, in words.
pub fn awaiting_message(rec: &BackendStatus) -> String {
    format!(
        "{} is back in the ring at {}; its slot is let go once the DovecotRing's status names it at that IP",
        rec.pod,
        rec.new_ip.as_deref().unwrap_or(&rec.ip)
    )
}

/// Whether a pod is registered by this DBU.
pub fn holds(status: &DovecotBackendUpgradeStatus, pod: &str) -> bool {
    status.ring_held.iter().any(|p| p == pod)
}

/// Whether registrations must be released: a registered pod whose record is done or gone.
pub fn release_due(status: &DovecotBackendUpgradeStatus, obs: &Observed) -> bool {
    kept(status, obs).len() != status.ring_held.len()
}

/// A DBU of the ring that waits for a slot, as its status says (`RingBusy`, and since when).
/// A begun backend without a slot does not make its DBU one: a rejoin's Begin is not chained
/// into its claim, and two DBUs whose rejoins each counted the other's as waiting longer never
/// ended (found by the model: `found_two_rejoins_begun_at_once_never_ended`); the place kept
/// through a Begin (`conditions::summarize`) orders only the DBU's own claim.
pub fn waiter(dbu: &str, status: &DovecotBackendUpgradeStatus) -> Option<Waiter> {
    let since = status.ring_waiting_since.as_ref()?.0;
    status
        .conditions
        .iter()
        .any(|c| c.type_ == RECONCILING && c.status == "True" && c.reason == "RingBusy")
        .then(|| Waiter {
            dbu: dbu.to_string(),
            since,
        })
}

/// The other DBUs that have waited for a slot longer than this one (ties by name): each goes
/// first, so a DBU that just released a slot does not take the next one from a waiting DBU.
pub fn ahead<'a>(obs: &'a Observed, status: &DovecotBackendUpgradeStatus) -> Vec<&'a Waiter> {
    let mine = status.ring_waiting_since.as_ref().map(|t| t.0);
    obs.ring_queue
        .iter()
        .filter(|w| w.dbu != obs.me)
        .filter(|w| mine.is_none_or(|m| (w.since, &w.dbu) < (m, &obs.me)))
        .collect()
}

/// Why one more backend (`want`) cannot be held now, or None when it fits: at most the
/// smallest `maxUnavailable` of the ring's DBUs are held at once, counted over every DBU, and
/// DBUs that waited longer go first.
pub fn busy(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    lock: &RingLock,
    want: &str,
) -> Option<String> {
    // the record already holds it for this DBU (a claim whose status write was lost): the
    // slot is taken, and waiting for those queued behind it would wait for ever (found by the
    // model: both DBUs of a ring waited RingBusy for each other)
    if lock
        .holders
        .iter()
        .any(|h| h.dbu == obs.me && h.pod == want && h.left_out.is_none())
    {
        return None;
    }
    // a left-out backend this DBU has taken over is out already: finishing it takes no new
    // slot, and waiting for the queue would hold it out for ever (found by the model)
    let adopted = |h: &RingHolder| {
        h.left_out
            .as_ref()
            .is_some_and(|l| l.stateful_set == s.stateful_set)
            && status.backends.iter().any(|r| r.pod == h.pod && active(r))
    };
    if lock.holders.iter().any(|h| h.pod == want && adopted(h)) {
        return None;
    }
    // ... and is its own, not another's, when another backend is weighed (still counted)
    let others: Vec<&RingHolder> = others(obs, lock)
        .into_iter()
        .filter(|h| !adopted(h))
        .collect();
    let taken_over = lock
        .holders
        .iter()
        .filter(|h| adopted(h))
        .map(|h| h.pod.clone());
    let limit = others
        .iter()
        .map(|h| h.max_unavailable as usize)
        .chain([s.max_unavailable])
        .min()
        .unwrap_or(1);
    let theirs: BTreeSet<(&str, &str)> = others
        .iter()
        .map(|h| (h.dbu.as_str(), h.pod.as_str()))
        .collect();
    let mut mine: BTreeSet<String> = kept(status, obs).into_iter().chain(taken_over).collect();
    mine.insert(want.to_string());
    let ahead = ahead(obs, status);
    if theirs.len() + ahead.len() + mine.len() <= limit {
        return None;
    }
    let named: Vec<String> = others
        .iter()
        .map(|h| format!("{} ({}) of DovecotBackendUpgrade {}", h.pod, h.ip, h.dbu))
        .collect();
    let out = match named.len() {
        0 => String::new(),
        1 => format!("{} is out of it, ", named[0]),
        _ => format!("{} are out of it, ", named.join(", ")),
    };
    let queued: Vec<&str> = ahead.iter().map(|w| w.dbu.as_str()).collect();
    let first = match queued.len() {
        0 => String::new(),
        _ => format!(
            "; DovecotBackendUpgrade {} waited longer and goes first",
            queued.join(", ")
        ),
    };
    Some(format!(
        "the director ring is busy: {out}at most {limit} may be out at once{first}; {want} waits"
    ))
}

/// Backends a deleted DBU of this StatefulSet left out of the ring that this DBU has no
/// active record of: their records, to adopt. One whose pod is gone for good (scaled away) is
/// not: nothing would finish it (found by the model: it was adopted, closed and adopted again
/// for ever); nor one this DBU adopted whose record has ended since (`adoption_ended`). The
/// claim releases both (`released_left_out`).
pub fn adoptable(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    lock: &RingLock,
    obs: &Observed,
) -> Vec<BackendStatus> {
    lock.holders
        .iter()
        .filter_map(|h| h.left_out.as_deref())
        .filter(|l| l.stateful_set == s.stateful_set)
        .filter(|l| !obs.gone_for_good(&s.stateful_set, &l.record.pod))
        .filter(|l| !adoption_ended(status, l))
        .filter(|l| {
            !status
                .backends
                .iter()
                .any(|r| r.pod == l.record.pod && active(r))
        })
        .map(|l| l.record.clone())
        .collect()
}

/// The holders after `dbu` deleted with `left` still out: its other holders go, the left-out
/// ones stay with their records (the next DBU of `sts` adopts them); other DBUs' are kept. A
/// backend it adopted but never claimed stays as the ring's record keeps it: that copy is the
/// backend's record until a claim (the ring's pass folds a human's count into it).
pub fn leave_out(
    lock: &RingLock,
    dbu: &str,
    sts: &str,
    left: &[BackendStatus],
    max_unavailable: u32,
) -> Vec<RingHolder> {
    let unclaimed = |pod: &str| {
        lock.holders
            .iter()
            .any(|h| h.pod == pod && h.left_out.is_some())
    };
    let mut holders: Vec<RingHolder> = lock
        .holders
        .iter()
        .filter(|h| h.dbu != dbu || h.left_out.is_some())
        .filter(|h| h.left_out.is_some() || !left.iter().any(|r| r.pod == h.pod))
        .cloned()
        .collect();
    holders.extend(
        left.iter()
            .filter(|r| !unclaimed(&r.pod))
            .map(|r| RingHolder {
                dbu: dbu.to_string(),
                pod: r.pod.clone(),
                ip: r.new_ip.clone().unwrap_or_else(|| r.ip.clone()),
                max_unavailable,
                left_out: Some(Box::new(LeftOut {
                    stateful_set: sts.to_string(),
                    record: r.clone(),
                })),
                reason: r.out_reason(),
            }),
    );
    holders
}

/// IPs out of the ring right now: this DBU's records in flight (old and new IP) but
/// `except`'s, and those other DBUs hold (for the capacity guard and the split check).
pub fn out_ips(status: &DovecotBackendUpgradeStatus, obs: &Observed, except: &str) -> Vec<String> {
    status
        .backends
        .iter()
        .filter(|r| active(r) && r.pod != except)
        .flat_map(|r| [Some(r.ip.clone()), r.new_ip.clone()])
        .flatten()
        .chain(held_ips(obs))
        .collect()
}

/// IPs other DBUs hold out of the ring (for the capacity guard).
pub fn held_ips(obs: &Observed) -> Vec<String> {
    match &obs.ring_lock {
        Some(Ok(lock)) => others(obs, lock).iter().map(|h| h.ip.clone()).collect(),
        _ => Vec::new(),
    }
}

/// The lock as read, or the Wait that asks for it (read lazily) or says it cannot be read.
pub fn read(obs: &Observed) -> Result<&RingLock, Decision> {
    match &obs.ring_lock {
        Some(Ok(lock)) => Ok(lock),
        None => Err(Decision::wait(
            WaitReason::RingLockUnreadable,
            "reading the director ring's lock",
            Duration::from_secs(5),
        )),
        Some(Err(e)) => Err(Decision::wait(
            WaitReason::RingLockUnreadable,
            format!("could not read the director ring's lock: {e}"),
            Duration::from_secs(10),
        )),
    }
}

/// Annotation of the ring's Lease that holds the holders, as JSON.
pub const HOLDERS_ANNOTATION: &str = "mailops.io/ring-holders";
/// Annotation of the ring's Lease that names the ring in words.
pub const RING_ANNOTATION: &str = "mailops.io/ring";

/// The ring as the operator can see it: the DBU's namespace and its director selector (as a
/// canonical query string). DBUs whose directors are selected alike share one ring.
pub fn ring_key(namespace: &str, s: &Settings) -> String {
    ring_key_of(namespace, &s.director_label_selector)
}

/// The ring key of a director selector.
pub fn ring_key_of(
    namespace: &str,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let sel = crate::settings::selector_string(selector).unwrap_or_default();
    format!("{namespace}/{sel}")
}

/// The name of the ring's Lease: `dbu-ring-` and a hash of the ring key (a valid object name
/// whatever the selector holds).
pub fn lease_name(ring_key: &str) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ring_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("dbu-ring-{h:016x}")
}

/// Whether this DBU adopted a left-out backend and its record of it has ended before a claim
/// made the holder its own: a rejoin dropped for want of room (`Undo` with nothing to do; its
/// pod serves where it is). The finished record is the adopted one (the same start), not one
/// of an earlier rollout of the pod.
pub fn adoption_ended(status: &DovecotBackendUpgradeStatus, left: &LeftOut) -> bool {
    left.record.started.is_some()
        && status
            .backends
            .iter()
            .any(|r| r.pod == left.record.pod && !active(r) && r.started == left.record.started)
}

/// Left-out holders of this DBU's StatefulSet that the ring's record lets go: those whose pods
/// are gone for good (their ring entries stay as they are, for the admin to remove), and those
/// whose adoption by this DBU has ended (`adoption_ended`): kept, the holder was adopted again
/// at every pass and counted as out for ever (found by the model with seed 99: the drained
/// backend behind it never finished).
pub fn released_left_out<'a>(
    s: &Settings,
    status: &DovecotBackendUpgradeStatus,
    obs: &Observed,
    lock: &'a RingLock,
) -> Vec<&'a RingHolder> {
    lock.holders
        .iter()
        .filter(|h| {
            h.left_out.as_ref().is_some_and(|l| {
                l.stateful_set == s.stateful_set
                    && (obs.gone_for_good(&s.stateful_set, &h.pod) || adoption_ended(status, l))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_named_by_namespace_and_selector() {
        let a = crate::fixtures::settings(serde_json::json!({}));
        let b = crate::fixtures::settings(
            serde_json::json!({"director": {"selector": {"matchLabels": {"app": "director", "zone": "b"}}}}),
        );
        assert_eq!(ring_key("mail", &a), "mail/app=director");
        assert_ne!(
            lease_name(&ring_key("mail", &a)),
            lease_name(&ring_key("mail", &b))
        );
        assert_ne!(
            lease_name(&ring_key("mail", &a)),
            lease_name(&ring_key("mx", &a))
        );
        let n = lease_name(&ring_key("mail", &a));
        assert_eq!(n, lease_name("mail/app=director"), "stable");
        assert!(n.len() == 25 && n.starts_with("dbu-ring-"), "{n}");
    }
}
